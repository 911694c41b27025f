"""fair share between keys: when each key last had its turn per backend, and a per-key
limit on queued requests

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'


def upgrade() -> None:
    op.create_table('queue_turns',
    sa.Column('backend', sa.String(length=64), nullable=False),
    sa.Column('key_id', sa.String(length=64), nullable=False),
    sa.Column('last_turn', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('backend', 'key_id')
    )
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.add_column(sa.Column('max_queued', sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.drop_column('max_queued')
    op.drop_table('queue_turns')
