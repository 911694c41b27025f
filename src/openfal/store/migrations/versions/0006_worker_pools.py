"""worker pools and the per-pool queue view that autoscalers read

``openfal_pool_queue`` is a stable interface (KEDA's postgresql trigger queries it):
one row per pool, with its queued and running requests and how long the oldest queued
one has waited, in seconds. Change it only by a new migration that keeps these columns.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'

#: now, as float epoch seconds (the requests' times)
_NOW = {
    'postgresql': 'EXTRACT(EPOCH FROM clock_timestamp())',
    'sqlite': "((julianday('now') - 2440587.5) * 86400.0)",
}

_VIEW = """
CREATE VIEW openfal_pool_queue AS
SELECT p.pool AS pool,
       COALESCE(SUM(CASE WHEN r.status = 'IN_QUEUE' THEN 1 ELSE 0 END), 0) AS queued,
       COALESCE(SUM(CASE WHEN r.status = 'IN_PROGRESS' THEN 1 ELSE 0 END), 0) AS running,
       COALESCE({now} - MIN(CASE WHEN r.status = 'IN_QUEUE' THEN r.created_at END), 0) AS oldest_wait_seconds
FROM worker_pools p
LEFT JOIN requests r ON r.endpoint_id = p.endpoint_id AND r.status IN ('IN_QUEUE', 'IN_PROGRESS')
GROUP BY p.pool
"""


def upgrade() -> None:
    op.create_table('worker_pools',
    sa.Column('pool', sa.String(length=64), nullable=False),
    sa.Column('endpoint_id', sa.String(length=255), nullable=False),
    sa.PrimaryKeyConstraint('pool', 'endpoint_id')
    )
    op.execute(_VIEW.format(now=_NOW[op.get_bind().dialect.name]))


def downgrade() -> None:
    op.execute('DROP VIEW openfal_pool_queue')
    op.drop_table('worker_pools')
