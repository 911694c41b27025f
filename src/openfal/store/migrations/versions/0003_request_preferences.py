"""request preferences (X-Fal-No-Retry, X-Fal-Object-Lifecycle-Preference,
Idempotency-Key), the worker registry, key scopes and expiry

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'


def upgrade() -> None:
    op.create_table('workers',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('hostname', sa.String(length=255), nullable=False),
    sa.Column('pid', sa.Integer(), nullable=False),
    sa.Column('started_at', sa.Float(), nullable=False),
    sa.Column('last_seen', sa.Float(), nullable=False),
    sa.Column('backends', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('workers', schema=None) as batch_op:
        batch_op.create_index('ix_workers_last_seen', ['last_seen'], unique=False)

    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.add_column(sa.Column('endpoints', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('expires_at', sa.Float(), nullable=True))

    with op.batch_alter_table('requests', schema=None) as batch_op:
        batch_op.add_column(sa.Column('no_retry', sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column('media_ttl', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('media_keep_forever', sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column('idempotency_key', sa.String(length=320), nullable=True))
        batch_op.add_column(sa.Column('idempotency_hash', sa.String(length=64), nullable=True))
        batch_op.create_index('ix_requests_idempotency', ['idempotency_key'], unique=True)


def downgrade() -> None:
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.drop_column('expires_at')
        batch_op.drop_column('endpoints')

    with op.batch_alter_table('requests', schema=None) as batch_op:
        batch_op.drop_index('ix_requests_idempotency')
        batch_op.drop_column('idempotency_hash')
        batch_op.drop_column('idempotency_key')
        batch_op.drop_column('media_keep_forever')
        batch_op.drop_column('media_ttl')
        batch_op.drop_column('no_retry')

    with op.batch_alter_table('workers', schema=None) as batch_op:
        batch_op.drop_index('ix_workers_last_seen')
    op.drop_table('workers')
