"""analysis runs: stored walk-forwards and parameter searches of the backtest service

Every walk-forward (rule or ml_ensemble) and every /optimize search is stored with a run_id,
inline or as a job, so an analysis whose client gave up is still found (`GET /results`).
`result` holds the answer as given; `series` a walk-forward's stitched out-of-sample dates,
equity and buy-and-hold equity (a NumPy .npy array, as `backtest_results.series`) for its
chart and for Monte Carlo; the capital and headline metrics are what `GET /results`
lists (a search's are its winner's).

Revision ID: backtest_0003
Revises: backtest_0002
Create Date: 2026-12-06 06:30:00.000000
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = 'backtest_0003'
down_revision = 'backtest_0002'
branch_labels = None
depends_on = None
# the single chain's revision that did this work (shared.migrate adopts such a database)
legacy = '0004'

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')


def upgrade() -> None:
    op.create_table('analysis_runs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.Uuid(), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('strategy_name', sa.String(length=100), nullable=False),
    sa.Column('symbol', sa.String(length=20), nullable=False),
    sa.Column('start_date', sa.DateTime(timezone=True), nullable=False),
    sa.Column('end_date', sa.DateTime(timezone=True), nullable=False),
    sa.Column('configuration', JSON, nullable=False),
    sa.Column('bars_hash', sa.String(length=64), nullable=False),
    sa.Column('result', JSON, nullable=False),
    sa.Column('series', sa.LargeBinary(), nullable=True),
    sa.Column('initial_capital', sa.Float(precision=53), nullable=False),
    sa.Column('final_capital', sa.Float(precision=53), nullable=True),
    sa.Column('total_return', sa.Float(precision=53), nullable=True),
    sa.Column('sharpe_ratio', sa.Float(precision=53), nullable=True),
    sa.Column('max_drawdown', sa.Float(precision=53), nullable=True),
    sa.Column('win_rate', sa.Float(precision=53), nullable=True),
    sa.Column('total_trades', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('CURRENT_TIMESTAMP'), nullable=False),
    sa.CheckConstraint("kind IN ('walk_forward', 'optimization')", name='ck_analysis_runs_kind'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('run_id', name='uq_analysis_runs_run_id')
    )
    op.create_index('idx_analysis_runs_kind', 'analysis_runs', ['kind', sa.literal_column('created_at DESC')], unique=False)


def downgrade() -> None:
    op.drop_index('idx_analysis_runs_kind', table_name='analysis_runs')
    op.drop_table('analysis_runs')
