"""Alembic chains: one per service and one for the platform, each with its own version table.

A service owns its tables (``services/<name>/tables.py``) and the revisions that build them
(``services/<name>/migrations/versions``); it hands both to :meth:`shared.db.Database.migrate`
as a :class:`Schema`. The platform's tables (``jobs``) are the chain in
``shared/migrations/versions``. Each chain records its revision in ``alembic_version_<name>``,
so a service upgrades its own chain without knowing any other service's revisions, and a
database shared by every service holds one version table per chain.

Every chain runs through the one environment in ``shared/migrations`` (``env.py``, the
revision template); the chain's metadata limits what it compares to its own tables.

Before per-service chains there was one chain of revisions ``0001`` to ``0006`` recorded in
``alembic_version``. A chain that finds no version table of its own on a database that has
the single chain's is adopted, not re-created: it is stamped at its newest revision whose
``legacy`` mark (a module attribute naming the single-chain revision that did the same work)
the database had reached, and upgraded from there. ``alembic_version`` is left as it was, so
a chain that starts later is adopted from it too. A new revision goes in its owner's folder
with ``down_revision`` its chain's head, and no ``legacy`` mark.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, MetaData, inspect, text

log = logging.getLogger(__name__)

ENVIRONMENT_DIR = Path(__file__).resolve().parent / "migrations"
LEGACY_VERSION_TABLE = "alembic_version"
# The single chain's revisions, oldest first (shared/migrations/versions until the split).
LEGACY_REVISIONS = ("0001", "0002", "0003", "0004", "0005", "0006")


@dataclass(frozen=True)
class Schema:
    """The tables one service (or the platform) owns and the Alembic chain that builds them."""

    name: str
    metadata: MetaData
    versions: Path

    @property
    def version_table(self) -> str:
        """Return the table that records this chain's revision."""
        return f"alembic_version_{self.name}"

    def owns(self, name: str, type_: str | None, _parents: Any = None) -> bool:
        """Return whether a reflected object is this schema's (Alembic's `include_name`)."""
        return type_ != "table" or name in self.metadata.tables


def alembic_config(schema: Schema, connection: Connection | None = None) -> Config:
    """Return the Alembic config of schema's chain (on connection, when given)."""
    cfg = Config()
    cfg.set_main_option("script_location", _option(ENVIRONMENT_DIR))
    cfg.set_main_option("version_locations", _option(schema.versions))
    cfg.set_main_option("path_separator", "os")
    cfg.attributes["schema"] = schema
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def _option(path: Path) -> str:
    return str(path).replace("%", "%%")  # ConfigParser interpolates '%'


def current_revision(connection: Connection, schema: Schema) -> str | None:
    """Return the revision schema's chain is at on connection (None: not started)."""
    opts = {"version_table": schema.version_table}
    return MigrationContext.configure(connection, opts=opts).get_current_revision()


def legacy_revision(connection: Connection) -> str | None:
    """Return the single chain's revision recorded on connection (None: it never ran there)."""
    if not inspect(connection).has_table(LEGACY_VERSION_TABLE):
        return None
    found = connection.execute(text(f"SELECT version_num FROM {LEGACY_VERSION_TABLE}"))
    revisions = [str(r) for r in found.scalars()]
    if not revisions:
        return None
    if len(revisions) > 1 or revisions[0] not in LEGACY_REVISIONS:
        raise RuntimeError(
            f"{LEGACY_VERSION_TABLE} holds {revisions}, not one of the single chain's "
            f"revisions {LEGACY_REVISIONS[0]} to {LEGACY_REVISIONS[-1]}"
        )
    return revisions[0]


def adoption_point(script: ScriptDirectory, legacy: str) -> str | None:
    """Return the newest revision of script's chain whose work the single chain at legacy
    had done (None: none of it, the chain starts from its base)."""
    reached = LEGACY_REVISIONS.index(legacy)
    for revision in script.walk_revisions():  # newest first
        mark = getattr(revision.module, "legacy", None)
        if mark is not None and LEGACY_REVISIONS.index(mark) <= reached:
            return revision.revision
    return None


def _adopt(connection: Connection, cfg: Config, schema: Schema) -> None:
    """Stamp schema's chain where a database built by the single chain already is."""
    if inspect(connection).has_table(schema.version_table):
        return
    legacy = legacy_revision(connection)
    if legacy is None:
        return
    point = adoption_point(ScriptDirectory.from_config(cfg), legacy)
    if point is None:
        log.info(
            "%s chain starts at its base: the single chain's %s had none of it", schema.name, legacy
        )
        return
    command.stamp(cfg, point)
    log.info("%s chain adopted at %s from the single chain's %s", schema.name, point, legacy)


def upgrade(
    connection: Connection, schemas: Sequence[Schema]
) -> tuple[dict[str, str | None], dict[str, str | None]]:
    """Bring each schema's chain to its head on connection; return the revisions before and
    after, by schema name (a chain adopted from the single chain counts from its stamp)."""
    before: dict[str, str | None] = {}
    after: dict[str, str | None] = {}
    for schema in schemas:
        cfg = alembic_config(schema, connection)
        _adopt(connection, cfg, schema)
        before[schema.name] = current_revision(connection, schema)
        command.upgrade(cfg, "head")
        after[schema.name] = current_revision(connection, schema)
    return before, after


def drift(connection: Connection, schemas: Iterable[Schema]) -> list[Any]:
    """Return how the database on connection differs from each schema's tables (Alembic's
    autogenerate differences; empty when every chain builds what its tables declare)."""
    found: list[Any] = []
    for schema in schemas:
        opts = {
            "compare_type": True,
            "version_table": schema.version_table,
            "include_name": schema.owns,
        }
        ctx = MigrationContext.configure(connection, opts=opts)
        found.extend(compare_metadata(ctx, schema.metadata))
    return found


def describe(revisions: dict[str, str | None]) -> str:
    """Return revisions by schema as one phrase for a log line ('empty' when none started)."""
    if all(r is None for r in revisions.values()):
        return "empty"
    return ", ".join(f"{name} {rev or 'empty'}" for name, rev in revisions.items())
