"""backtest runs: instruments, input-bar hash and series of a run; each fill's reason and return

The seed's columns stay as they are. `backtest_results.symbol` holds the first instrument of
a run; `symbols` holds all of them between commas (`,AAPL,MSFT,`) so that a run of several
instruments is found by any of them. `bars_hash` is the SHA-256 of the run's input bars and
`series` its per-bar dates, equity and buy-and-hold benchmark (a NumPy .npy array), so a
stored run is reproducible and its chart drawn after a restart. On `backtest_trades`,
`reason` is why a fill happened (signal, stop_loss, take_profit, end) and `trade_return` a
closing fill's pnl as a fraction of the equity when the trade opened.

Revision ID: backtest_0002
Revises: backtest_0001
Create Date: 2026-11-30 15:00:00.000000
"""

from alembic import op
import sqlalchemy as sa

revision = 'backtest_0002'
down_revision = 'backtest_0001'
branch_labels = None
depends_on = None
# the single chain's revision that did this work (shared.migrate adopts such a database)
legacy = '0003'


def upgrade() -> None:
    op.add_column('backtest_results', sa.Column('symbols', sa.Text(), nullable=True))
    op.add_column('backtest_results', sa.Column('bars_hash', sa.String(length=64), nullable=True))
    op.add_column('backtest_results', sa.Column('series', sa.LargeBinary(), nullable=True))
    op.create_index('idx_backtest_results_symbol', 'backtest_results', ['symbol', sa.literal_column('created_at DESC')], unique=False)
    op.add_column('backtest_trades', sa.Column('reason', sa.String(length=20), nullable=True))
    op.add_column('backtest_trades', sa.Column('trade_return', sa.Float(precision=53), nullable=True))


def _drop(table: str, column: str) -> None:
    # SQLite >= 3.35 drops a column in place; a batch "move and copy" would drop and recreate
    # backtest_results, and with foreign keys on that deletes every trade (ON DELETE CASCADE).
    if op.get_bind().dialect.name == 'sqlite':
        op.execute(f'ALTER TABLE {table} DROP COLUMN {column}')
    else:
        op.drop_column(table, column)


def downgrade() -> None:
    _drop('backtest_trades', 'trade_return')
    _drop('backtest_trades', 'reason')
    op.drop_index('idx_backtest_results_symbol', table_name='backtest_results')
    _drop('backtest_results', 'series')
    _drop('backtest_results', 'bars_hash')
    _drop('backtest_results', 'symbols')
