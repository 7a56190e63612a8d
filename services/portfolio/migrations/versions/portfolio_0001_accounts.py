"""portfolio: paper accounts, positions, deployments, orders, fills and equity by session

The portfolio service's tables (services/portfolio/tables.py).

Revision ID: portfolio_0001
Revises: 
Create Date: 2026-12-06 07:00:00.000000
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = 'portfolio_0001'
down_revision = None
branch_labels = None
depends_on = None
# the single chain's revision that did this work (shared.migrate adopts such a database)
legacy = '0006'

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')
F = sa.Float(precision=53)
NOW = sa.text('CURRENT_TIMESTAMP')


def upgrade() -> None:
    op.create_table('portfolio_accounts',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('broker', sa.String(length=20), nullable=False),
    sa.Column('initial_cash', F, nullable=False),
    sa.Column('cash', F, nullable=False),
    sa.Column('realised_pnl', F, nullable=False),
    sa.Column('halted', sa.Boolean(), nullable=False),
    sa.Column('halt_reason', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=NOW, nullable=False),
    sa.PrimaryKeyConstraint('id'),
    )
    op.create_table('portfolio_positions',
    sa.Column('account_id', sa.Uuid(), sa.ForeignKey('portfolio_accounts.id'), nullable=False),
    sa.Column('symbol', sa.String(length=20), nullable=False),
    sa.Column('quantity', F, nullable=False),
    sa.Column('average_price', F, nullable=False),
    sa.Column('entry_commission', F, nullable=False),
    sa.Column('last_price', F, nullable=False),
    sa.PrimaryKeyConstraint('account_id', 'symbol'),
    )
    op.create_table('portfolio_deployments',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('account_id', sa.Uuid(), sa.ForeignKey('portfolio_accounts.id'), nullable=False),
    sa.Column('config', JSON, nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('halt_reason', sa.Text(), nullable=True),
    sa.Column('last_session', sa.Date(), nullable=True),
    sa.Column('pending', JSON, nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=NOW, nullable=False),
    sa.PrimaryKeyConstraint('id'),
    )
    op.create_table('portfolio_orders',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('account_id', sa.Uuid(), sa.ForeignKey('portfolio_accounts.id'), nullable=False),
    sa.Column('deployment_id', sa.Uuid(), nullable=True),
    sa.Column('client_order_id', sa.String(length=64), nullable=False),
    sa.Column('session', sa.Date(), nullable=False),
    sa.Column('symbol', sa.String(length=20), nullable=False),
    sa.Column('side', sa.String(length=4), nullable=False),
    sa.Column('quantity', F, nullable=False),
    sa.Column('requested', F, nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=NOW, nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('client_order_id', name='uq_portfolio_orders_client_order_id'),
    )
    op.create_index('idx_portfolio_orders_account', 'portfolio_orders', ['account_id', 'session'])
    op.create_table('portfolio_fills',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('account_id', sa.Uuid(), sa.ForeignKey('portfolio_accounts.id'), nullable=False),
    sa.Column('order_id', sa.Integer(), sa.ForeignKey('portfolio_orders.id'), nullable=False),
    sa.Column('timestamp', sa.DateTime(timezone=True), nullable=False),
    sa.Column('symbol', sa.String(length=20), nullable=False),
    sa.Column('direction', sa.String(length=4), nullable=False),
    sa.Column('shares', F, nullable=False),
    sa.Column('price', F, nullable=False),
    sa.Column('commission', F, nullable=False),
    sa.Column('slippage_cost', F, nullable=False),
    sa.Column('pnl', F, nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('order_id', name='uq_portfolio_fills_order'),
    )
    op.create_index('idx_portfolio_fills_account', 'portfolio_fills', ['account_id', 'id'])
    op.create_table('portfolio_equity',
    sa.Column('account_id', sa.Uuid(), sa.ForeignKey('portfolio_accounts.id'), nullable=False),
    sa.Column('session', sa.Date(), nullable=False),
    sa.Column('equity', F, nullable=False),
    sa.Column('cash', F, nullable=False),
    sa.PrimaryKeyConstraint('account_id', 'session'),
    )


def downgrade() -> None:
    op.drop_table('portfolio_equity')
    op.drop_index('idx_portfolio_fills_account', table_name='portfolio_fills')
    op.drop_table('portfolio_fills')
    op.drop_index('idx_portfolio_orders_account', table_name='portfolio_orders')
    op.drop_table('portfolio_orders')
    op.drop_table('portfolio_deployments')
    op.drop_table('portfolio_positions')
    op.drop_table('portfolio_accounts')
