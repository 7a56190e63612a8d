"""jobs: the one job table of every service (shared.jobs)

Revision ID: platform_0001
Revises: 
Create Date: 2026-11-26 09:00:00.000000
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = 'platform_0001'
down_revision = None
branch_labels = None
depends_on = None
# the single chain's revision that did this work (shared.migrate adopts such a database)
legacy = '0002'

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')


def upgrade() -> None:
    op.create_table('jobs',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('kind', sa.String(length=50), nullable=False),
    sa.Column('service', sa.String(length=50), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('progress_done', sa.Float(precision=53), server_default='0', nullable=False),
    sa.Column('progress_total', sa.Float(precision=53), nullable=True),
    sa.Column('progress_message', sa.Text(), nullable=True),
    sa.Column('request', JSON, nullable=False),
    sa.Column('result', JSON, nullable=True),
    sa.Column('result_url', sa.Text(), nullable=True),
    sa.Column('error', JSON, nullable=True),
    sa.Column('owner_host', sa.String(length=255), nullable=False),
    sa.Column('owner_pid', sa.BigInteger(), nullable=False),
    sa.Column('owner_instance', sa.String(length=32), nullable=False),
    sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('CURRENT_TIMESTAMP'), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("status IN ('queued', 'running', 'succeeded', 'failed')", name='ck_jobs_status'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('idx_jobs_service_status', 'jobs', ['service', 'status'], unique=False)
    op.create_index('idx_jobs_owner_instance', 'jobs', ['owner_instance', 'status'], unique=False)


def downgrade() -> None:
    op.drop_index('idx_jobs_owner_instance', table_name='jobs')
    op.drop_index('idx_jobs_service_status', table_name='jobs')
    op.drop_table('jobs')
