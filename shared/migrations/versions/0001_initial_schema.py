"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-24 10:33:10.768477
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


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
    op.create_table('market_data',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('symbol', sa.String(length=20), nullable=False),
    sa.Column('timestamp', sa.DateTime(timezone=True), nullable=False),
    sa.Column('open', sa.Float(precision=53), nullable=False),
    sa.Column('high', sa.Float(precision=53), nullable=False),
    sa.Column('low', sa.Float(precision=53), nullable=False),
    sa.Column('close', sa.Float(precision=53), nullable=False),
    sa.Column('volume', sa.BigInteger(), nullable=False),
    sa.Column('adjusted_close', sa.Float(precision=53), nullable=True),
    sa.Column('source', sa.String(length=20), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('CURRENT_TIMESTAMP'), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('symbol', 'timestamp', name='uq_market_data_symbol_timestamp')
    )
    op.create_index('idx_market_data_symbol_timestamp', 'market_data', ['symbol', sa.literal_column('timestamp DESC')], unique=False)
    op.create_index('idx_market_data_timestamp', 'market_data', [sa.literal_column('timestamp DESC')], unique=False)
    op.create_table('market_data_coverage',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('symbol', sa.String(length=20), nullable=False),
    sa.Column('start_date', sa.DateTime(timezone=True), nullable=False),
    sa.Column('end_date', sa.DateTime(timezone=True), nullable=False),
    sa.Column('source', sa.String(length=20), nullable=False),
    sa.Column('rows', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('CURRENT_TIMESTAMP'), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('idx_coverage_symbol', 'market_data_coverage', ['symbol', 'start_date'], unique=False)
    op.create_table('model_states',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('model_name', sa.String(length=50), nullable=False),
    sa.Column('version', sa.String(length=20), nullable=False),
    sa.Column('model_type', sa.String(length=20), nullable=False),
    sa.Column('model_data', sa.LargeBinary(), nullable=True),
    sa.Column('hyperparameters', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('training_metrics', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('trained_on_data_start', sa.DateTime(timezone=True), nullable=True),
    sa.Column('trained_on_data_end', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('CURRENT_TIMESTAMP'), nullable=False),
    sa.Column('is_active', sa.Boolean(), server_default=sa.text('true'), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('model_name', 'version', name='uq_model_states_name_version')
    )
    op.create_index('idx_model_states_active', 'model_states', ['model_name', 'is_active', sa.literal_column('created_at DESC')], unique=False)
    op.create_table('predictions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('symbol', sa.String(length=20), nullable=False),
    sa.Column('timestamp', sa.DateTime(timezone=True), nullable=False),
    sa.Column('model_name', sa.String(length=50), nullable=False),
    sa.Column('model_version', sa.String(length=20), nullable=False),
    sa.Column('prediction_type', sa.String(length=20), nullable=False),
    sa.Column('predicted_value', sa.Float(precision=53), nullable=True),
    sa.Column('confidence', sa.Float(precision=53), nullable=True),
    sa.Column('features_used', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('CURRENT_TIMESTAMP'), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('idx_predictions_symbol_timestamp', 'predictions', ['symbol', sa.literal_column('timestamp DESC')], unique=False)
    op.create_table('technical_indicators',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('symbol', sa.String(length=20), nullable=False),
    sa.Column('timestamp', sa.DateTime(timezone=True), nullable=False),
    sa.Column('indicator_name', sa.String(length=50), nullable=False),
    sa.Column('indicator_value', sa.Float(precision=53), nullable=True),
    sa.Column('parameters', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('CURRENT_TIMESTAMP'), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('symbol', 'timestamp', 'indicator_name', 'parameters', name='uq_indicator_value')
    )
    op.create_index('idx_indicators_symbol_timestamp', 'technical_indicators', ['symbol', sa.literal_column('timestamp DESC')], unique=False)
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
    op.drop_index('idx_indicators_symbol_timestamp', table_name='technical_indicators')
    op.drop_table('technical_indicators')
    op.drop_index('idx_predictions_symbol_timestamp', table_name='predictions')
    op.drop_table('predictions')
    op.drop_index('idx_model_states_active', table_name='model_states')
    op.drop_table('model_states')
    op.drop_index('idx_coverage_symbol', table_name='market_data_coverage')
    op.drop_table('market_data_coverage')
    op.drop_index('idx_market_data_timestamp', table_name='market_data')
    op.drop_index('idx_market_data_symbol_timestamp', table_name='market_data')
    op.drop_table('market_data')
    op.drop_index('idx_backtest_results_strategy', table_name='backtest_results')
    op.drop_index('idx_backtest_results_run_id', table_name='backtest_results')
    op.drop_table('backtest_results')
