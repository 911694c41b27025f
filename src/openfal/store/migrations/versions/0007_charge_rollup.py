"""the daily and hourly rollup of the ledger's charge rows (the Platform API's reports read it
and the raw rows not rolled up yet); requests' runner hints (X-Fal-Runner-Hint)

Rows already in the ledger start not rolled up: the reaper rolls them in batches.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'

_UNROLLED = "kind = 'charge' AND NOT rolled_up"
_HINTED = "status = 'IN_QUEUE' AND runner_hint IS NOT NULL"


def upgrade() -> None:
    op.create_table('charge_rollup',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('span', sa.Float(), nullable=False),
    sa.Column('start', sa.Float(), nullable=False),
    sa.Column('endpoint_id', sa.String(length=255), nullable=False),
    sa.Column('key_id', sa.String(length=64), nullable=False),
    sa.Column('unit', sa.String(length=16), nullable=False),
    sa.Column('request_count', sa.Integer(), nullable=False),
    sa.Column('success_count', sa.Integer(), nullable=False),
    sa.Column('user_error_count', sa.Integer(), nullable=False),
    sa.Column('error_count', sa.Integer(), nullable=False),
    sa.Column('ok_count', sa.Integer(), nullable=False),
    sa.Column('ok_units', sa.Float(), nullable=False),
    sa.Column('ok_cost_micros', sa.BigInteger(), nullable=False),
    sa.Column('queue_hist', sa.LargeBinary(), nullable=False),
    sa.Column('run_hist', sa.LargeBinary(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('span', 'start', 'endpoint_id', 'key_id', 'unit', name='uq_charge_rollup_cell')
    )
    op.create_index('ix_charge_rollup_key', 'charge_rollup', ['key_id', 'span', 'start'], unique=False)
    with op.batch_alter_table('ledger', schema=None) as batch_op:
        batch_op.add_column(sa.Column('rolled_up', sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.create_index(
            'ix_ledger_unrolled', ['created_at'], unique=False,
            postgresql_where=sa.text(_UNROLLED), sqlite_where=sa.text(_UNROLLED),
        )


    # not a batch: SQLite's copy-and-rename of requests would break the view that reads it
    op.add_column('requests', sa.Column('runner_hint', sa.String(length=255), nullable=True))
    op.create_index('ix_requests_hinted', 'requests', ['backend', 'runner_hint'], unique=False, postgresql_where=sa.text(_HINTED), sqlite_where=sa.text(_HINTED))


def downgrade() -> None:
    op.drop_index('ix_requests_hinted', table_name='requests')
    op.drop_column('requests', 'runner_hint')
    with op.batch_alter_table('ledger', schema=None) as batch_op:
        batch_op.drop_index('ix_ledger_unrolled')
        batch_op.drop_column('rolled_up')
    op.drop_index('ix_charge_rollup_key', table_name='charge_rollup')
    op.drop_table('charge_rollup')
