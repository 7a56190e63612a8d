"""Alembic environment of every chain (shared.migrate): the platform's and each service's.

shared.migrate hands in the connection and the chain's Schema: its metadata (only its own
tables are compared, so a service's chain never sees another service's tables as extra)
and the version table that records where the chain is.
"""

from __future__ import annotations

from alembic import context

schema = context.config.attributes["schema"]
connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=schema.metadata,
    version_table=schema.version_table,
    include_name=schema.owns,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
