"""backtest runs and their fills (the seed schema's backtest_results and backtest_trades)

Revision ID: backtest_0001
Revises: 
Create Date: 2026-11-24 10:33:10.768477
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = 'backtest_0001'
down_revision = None
branch_labels = None
depends_on = None
# the single chain's revision that did this work (shared.migrate adopts such a database)
legacy = '0001'


def upgrade() -> None:
    op.create_table('backtest_results',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.Uuid(), nullable=False),
    sa.Column('strategy_name', sa.String(length=100), nullable=False),
    sa.Column('symbol', sa.String(length=20), nullable=False),
    sa.Column('start_date', sa.DateTime(timezone=True), nullable=False),
    sa.Column('end_date', sa.DateTime(timezone=True), nullable=False),
    sa.Column('initial_capital', sa.Float(precision=53), nullable=False),
    sa.Column('final_capital', sa.Float(precision=53), nullable=False),
    sa.Column('total_return', sa.Float(precision=53), nullable=True),
    sa.Column('sharpe_ratio', sa.Float(precision=53), nullable=True),
    sa.Column('max_drawdown', sa.Float(precision=53), nullable=True),
    sa.Column('win_rate', sa.Float(precision=53), nullable=True),
    sa.Column('total_trades', sa.Integer(), nullable=True),
    sa.Column('configuration', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('metrics', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('CURRENT_TIMESTAMP'), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('run_id', name='uq_backtest_results_run_id')
    )
    op.create_index('idx_backtest_results_run_id', 'backtest_results', ['run_id'], unique=False)
    op.create_index('idx_backtest_results_strategy', 'backtest_results', ['strategy_name', sa.literal_column('created_at DESC')], unique=False)
    op.create_table('backtest_trades',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.Uuid(), nullable=False),
    sa.Column('symbol', sa.String(length=20), nullable=False),
    sa.Column('timestamp', sa.DateTime(timezone=True), nullable=False),
    sa.Column('direction', sa.String(length=10), nullable=False),
    sa.Column('shares', sa.Float(precision=53), nullable=False),
    sa.Column('price', sa.Float(precision=53), nullable=False),
    sa.Column('commission', sa.Float(precision=53), nullable=False),
    sa.Column('slippage_cost', sa.Float(precision=53), nullable=False),
    sa.Column('total_cost', sa.Float(precision=53), nullable=False),
    sa.Column('pnl', sa.Float(precision=53), nullable=True),
    sa.Column('portfolio_value', sa.Float(precision=53), nullable=True),
    sa.ForeignKeyConstraint(['run_id'], ['backtest_results.run_id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('idx_backtest_trades_run_id', 'backtest_trades', ['run_id', 'timestamp'], unique=False)


def downgrade() -> None:
    op.drop_index('idx_backtest_trades_run_id', table_name='backtest_trades')
    op.drop_table('backtest_trades')
    op.drop_index('idx_backtest_results_strategy', table_name='backtest_results')
    op.drop_index('idx_backtest_results_run_id', table_name='backtest_results')
    op.drop_table('backtest_results')
