"""claims by each key's head: the queue index gains key_id (status, backend, key_id,
priority, seq) and the key index (key_id, status) gains (backend, priority, seq), so a
claim probes one head per key instead of ordering the whole queue, whichever of the
two the planner picks

Revision ID: 0008
Revises: 0007
"""

from alembic import op

revision = '0008'
down_revision = '0007'


def upgrade() -> None:
    op.drop_index('ix_requests_queue', table_name='requests')
    op.create_index('ix_requests_queue', 'requests', ['status', 'backend', 'key_id', 'priority', 'seq'], unique=False)
    op.drop_index('ix_requests_key_status', table_name='requests')
    op.create_index('ix_requests_key_status', 'requests', ['key_id', 'status', 'backend', 'priority', 'seq'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_requests_queue', table_name='requests')
    op.create_index('ix_requests_queue', 'requests', ['status', 'backend', 'priority', 'seq'], unique=False)
    op.drop_index('ix_requests_key_status', table_name='requests')
    op.create_index('ix_requests_key_status', 'requests', ['key_id', 'status'], unique=False)
