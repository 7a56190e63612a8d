"""market data: daily bars, fetch coverage and stored indicator values (the seed schema's)

Revision ID: market_0001
Revises: 
Create Date: 2026-11-24 10:33:10.768477
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = 'market_0001'
down_revision = None
branch_labels = None
depends_on = None
# the single chain's revision that did this work (shared.migrate adopts such a database)
legacy = '0001'


def upgrade() -> None:
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


def downgrade() -> None:
    op.drop_index('idx_indicators_symbol_timestamp', table_name='technical_indicators')
    op.drop_table('technical_indicators')
    op.drop_index('idx_coverage_symbol', table_name='market_data_coverage')
    op.drop_table('market_data_coverage')
    op.drop_index('idx_market_data_timestamp', table_name='market_data')
    op.drop_index('idx_market_data_symbol_timestamp', table_name='market_data')
    op.drop_table('market_data')
