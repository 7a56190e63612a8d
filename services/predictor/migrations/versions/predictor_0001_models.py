"""predictor: versioned models and logged predictions (the seed schema's)

Revision ID: predictor_0001
Revises: 
Create Date: 2026-11-24 10:33:10.768477
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = 'predictor_0001'
down_revision = None
branch_labels = None
depends_on = None
# the single chain's revision that did this work (shared.migrate adopts such a database)
legacy = '0001'


def upgrade() -> None:
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


def downgrade() -> None:
    op.drop_index('idx_predictions_symbol_timestamp', table_name='predictions')
    op.drop_table('predictions')
    op.drop_index('idx_model_states_active', table_name='model_states')
    op.drop_table('model_states')
