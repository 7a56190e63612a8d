"""strategies: saved strategies written in the backtest's language, one row per version

A version is immutable: saving a name again inserts the next version. Retiring a strategy
sets `retired_at` on its versions (runs that traded one still name it).

Revision ID: backtest_0004
Revises: backtest_0003
Create Date: 2026-12-06 06:30:00.000000
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = 'backtest_0004'
down_revision = 'backtest_0003'
branch_labels = None
depends_on = None
# the single chain's revision that did this work (shared.migrate adopts such a database)
legacy = '0005'

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')


def upgrade() -> None:
    op.create_table('strategies',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=63), nullable=False),
    sa.Column('version', sa.BigInteger(), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('rules', JSON, nullable=False),
    sa.Column('params', JSON, nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('CURRENT_TIMESTAMP'), nullable=False),
    sa.Column('retired_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name', 'version', name='uq_strategies_name_version')
    )
    op.create_index('idx_strategies_name', 'strategies', ['name', 'version'], unique=False)


def downgrade() -> None:
    op.drop_index('idx_strategies_name', table_name='strategies')
    op.drop_table('strategies')
