"""fal's Platform API: ledger rows that carry what analytics and usage line items read
(status code, billing unit and units, queue and run seconds), keys limited to
commercially licensed models, file ACLs and owners, per-key storage defaults, and the
ACL a request's files start with

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'

#: what the reports read from charge rows (kept in the covering indexes)
_REPORTED = ("endpoint_id", "key_id", "outcome", "status_code", "unit", "units", "amount_micros", "queue_seconds", "run_seconds")


def upgrade() -> None:
    op.create_table('storage_settings',
    sa.Column('key_id', sa.String(length=64), nullable=False),
    sa.Column('expiration_duration_seconds', sa.Float(), nullable=True),
    sa.Column('keep_forever', sa.Boolean(), server_default=sa.false(), nullable=False),
    sa.Column('initial_acl', sa.JSON(), nullable=True),
    sa.Column('updated_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('key_id')
    )
    with op.batch_alter_table('ledger', schema=None) as batch_op:
        batch_op.add_column(sa.Column('status_code', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('unit', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('units', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('queue_seconds', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('run_seconds', sa.Float(), nullable=True))
        batch_op.create_index(
            'ix_ledger_charges', ['created_at'], unique=False,
            postgresql_include=list(_REPORTED), postgresql_where=sa.text("kind = 'charge'"), sqlite_where=sa.text("kind = 'charge'"),
        )
        batch_op.create_index(
            'ix_ledger_key_charges', ['key_id', 'created_at'], unique=False,
            postgresql_include=[c for c in _REPORTED if c != 'key_id'], postgresql_where=sa.text("kind = 'charge'"), sqlite_where=sa.text("kind = 'charge'"),
        )

    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.add_column(sa.Column('commercial_only', sa.Boolean(), server_default=sa.false(), nullable=False))

    with op.batch_alter_table('media', schema=None) as batch_op:
        batch_op.add_column(sa.Column('key_id', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('acl', sa.JSON(), nullable=True))
        batch_op.create_index('ix_media_request', ['request_id'], unique=False)

    with op.batch_alter_table('requests', schema=None) as batch_op:
        batch_op.add_column(sa.Column('media_acl', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('requests', schema=None) as batch_op:
        batch_op.drop_column('media_acl')
    with op.batch_alter_table('media', schema=None) as batch_op:
        batch_op.drop_index('ix_media_request')
        batch_op.drop_column('acl')
        batch_op.drop_column('key_id')
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.drop_column('commercial_only')
    with op.batch_alter_table('ledger', schema=None) as batch_op:
        batch_op.drop_index('ix_ledger_key_charges')
        batch_op.drop_index('ix_ledger_charges')
        batch_op.drop_column('run_seconds')
        batch_op.drop_column('queue_seconds')
        batch_op.drop_column('units')
        batch_op.drop_column('unit')
        batch_op.drop_column('status_code')
    op.drop_table('storage_settings')
