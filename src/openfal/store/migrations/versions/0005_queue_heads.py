"""claims by each key's head: the queue index gains key_id (status, backend, key_id,
priority, seq) and the key index (key_id, status) gains (backend, priority, seq), so a
claim probes one head per key instead of ordering the whole queue, whichever of the
two the planner picks

Revision ID: 0005
Revises: 0004
"""

from alembic import op

revision = '0005'
down_revision = '0004'


def upgrade() -> None:
    with op.batch_alter_table('requests', schema=None) as batch_op:
        batch_op.drop_index('ix_requests_queue')
        batch_op.create_index('ix_requests_queue', ['status', 'backend', 'key_id', 'priority', 'seq'], unique=False)
        batch_op.drop_index('ix_requests_key_status')
        batch_op.create_index('ix_requests_key_status', ['key_id', 'status', 'backend', 'priority', 'seq'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('requests', schema=None) as batch_op:
        batch_op.drop_index('ix_requests_queue')
        batch_op.create_index('ix_requests_queue', ['status', 'backend', 'priority', 'seq'], unique=False)
        batch_op.drop_index('ix_requests_key_status')
        batch_op.create_index('ix_requests_key_status', ['key_id', 'status'], unique=False)
