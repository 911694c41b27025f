"""The tables, as SQLAlchemy Core metadata: the single source for queries and for the
migration test (migrations must produce exactly this schema on SQLite and PostgreSQL).

Times are float epoch seconds: unambiguous and comparable on both databases.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

Seq = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

requests = sa.Table(
    "requests",
    metadata,
    sa.Column("seq", Seq, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(36), nullable=False, unique=True),
    sa.Column("app", sa.String(255), nullable=False),
    sa.Column("endpoint_id", sa.String(255), nullable=False),
    sa.Column("backend", sa.String(64), nullable=False),
    sa.Column("key_id", sa.String(64), nullable=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("priority", sa.SmallInteger(), nullable=False),
    sa.Column("batch_key", sa.String(255), nullable=True),
    sa.Column("input", sa.JSON(), nullable=False),
    sa.Column("base_url", sa.Text(), nullable=False),
    sa.Column("webhook_url", sa.Text(), nullable=True),
    sa.Column("store_io", sa.Boolean(), nullable=False),
    sa.Column("created_at", sa.Float(), nullable=False),
    sa.Column("start_deadline", sa.Float(), nullable=True),
    sa.Column("started_at", sa.Float(), nullable=True),
    sa.Column("completed_at", sa.Float(), nullable=True),
    sa.Column("attempts", sa.Integer(), nullable=False),
    sa.Column("worker_id", sa.String(64), nullable=True),
    sa.Column("lease_expires_at", sa.Float(), nullable=True),
    sa.Column("cancel_requested", sa.Boolean(), nullable=False),
    sa.Column("progress_step", sa.Integer(), nullable=True),
    sa.Column("progress_total", sa.Integer(), nullable=True),
    sa.Column("preview_url", sa.Text(), nullable=True),
    sa.Column("upstream_position", sa.Integer(), nullable=True),
    sa.Column("result_status", sa.Integer(), nullable=True),
    sa.Column("result_body", sa.JSON(), nullable=True),
    sa.Column("result_headers", sa.JSON(), nullable=True),
    sa.Column("error", sa.Text(), nullable=True),
    sa.Column("error_type", sa.String(64), nullable=True),
    sa.Column("inference_time", sa.Float(), nullable=True),
    sa.Column("backend_state", sa.JSON(), nullable=False),
    sa.Column("version", sa.Integer(), nullable=False),
    #: price reserved at submit, settled exactly once when the request ends
    sa.Column("reserved_micros", sa.BigInteger(), nullable=True),
    #: X-Fal-No-Retry: a lost worker or a retryable failure ends the request at once
    sa.Column("no_retry", sa.Boolean(), nullable=False, server_default=sa.false()),
    #: X-Fal-Object-Lifecycle-Preference for the files this request makes
    sa.Column("media_ttl", sa.Float(), nullable=True),
    sa.Column("media_keep_forever", sa.Boolean(), nullable=False, server_default=sa.false()),
    #: the ACL its files start with (``initial_acl``); None: the key's storage settings
    sa.Column("media_acl", sa.JSON(), nullable=True),
    #: "<api key id>:<Idempotency-Key>", and a hash of what was submitted under it
    sa.Column("idempotency_key", sa.String(320), nullable=True),
    sa.Column("idempotency_hash", sa.String(64), nullable=True),
    #: X-Fal-Runner-Hint: a worker advertising this exact string claims it first
    sa.Column("runner_hint", sa.String(255), nullable=True),
    #: each key's head (its first queued request by priority, then seq) in one probe, and
    #: the keys with queued requests by a skip scan: claims cost the same at any depth
    #: (store/claim_statements.py)
    sa.Index("ix_requests_queue", "status", "backend", "key_id", "priority", "seq"),
    sa.Index("ix_requests_lease", "status", "lease_expires_at"),
    sa.Index("ix_requests_deadline", "status", "start_deadline"),
    sa.Index("ix_requests_completed", "completed_at"),
    sa.Index("ix_requests_key", "key_id", "seq"),
    sa.Index("ix_requests_worker", "worker_id", "status"),
    sa.Index("ix_requests_key_created", "key_id", "created_at"),
    #: a key's running or queued count, and (as well as ix_requests_queue) its head
    sa.Index("ix_requests_key_status", "key_id", "status", "backend", "priority", "seq"),
    sa.Index("ix_requests_idempotency", "idempotency_key", unique=True),
    #: the queued requests with a runner hint (few: the hinted pre-claim reads only them)
    sa.Index(
        "ix_requests_hinted",
        "backend",
        "runner_hint",
        postgresql_where=sa.text("status = 'IN_QUEUE' AND runner_hint IS NOT NULL"),
        sqlite_where=sa.text("status = 'IN_QUEUE' AND runner_hint IS NOT NULL"),
    ),
)

request_logs = sa.Table(
    "request_logs",
    metadata,
    sa.Column("id", Seq, primary_key=True, autoincrement=True),
    sa.Column("request_id", sa.String(36), nullable=False),
    sa.Column("ts", sa.Float(), nullable=False),
    sa.Column("level", sa.String(16), nullable=False),
    sa.Column("message", sa.Text(), nullable=False),
    sa.Index("ix_request_logs_request", "request_id", "id"),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("secret_hash", sa.String(128), nullable=False),
    sa.Column("created_at", sa.Float(), nullable=False),
    sa.Column("revoked_at", sa.Float(), nullable=True),
    sa.Column("is_admin", sa.Boolean(), nullable=False),
    #: at most this many of the key's requests run at once; the rest wait in the queue
    sa.Column("max_concurrent", sa.Integer(), nullable=True),
    #: submits per rolling minute
    sa.Column("rpm", sa.Integer(), nullable=True),
    #: prepaid credit in micro-dollars; None means the key is not credit-limited
    sa.Column("balance_micros", sa.BigInteger(), nullable=True),
    #: fnmatch patterns of the endpoints the key may submit to; None: all of them
    sa.Column("endpoints", sa.JSON(), nullable=True),
    #: unix time after which the key no longer authenticates
    sa.Column("expires_at", sa.Float(), nullable=True),
    #: at most this many of the key's requests wait in the queue; more are refused 429
    sa.Column("max_queued", sa.Integer(), nullable=True),
    #: only endpoints whose catalog licence allows commercial use (others: 403 naming it)
    sa.Column("commercial_only", sa.Boolean(), nullable=False, server_default=sa.false()),
)

#: when each API key last had a request claimed, per backend: claims go round-robin
#: across keys ("" stands for requests without a key)
queue_turns = sa.Table(
    "queue_turns",
    metadata,
    sa.Column("backend", sa.String(64), primary_key=True),
    sa.Column("key_id", sa.String(64), primary_key=True),
    sa.Column("last_turn", sa.Float(), nullable=False),
)

webhooks = sa.Table(
    "webhooks",
    metadata,
    sa.Column("id", Seq, primary_key=True, autoincrement=True),
    sa.Column("request_id", sa.String(36), nullable=False),
    sa.Column("url", sa.Text(), nullable=False),
    sa.Column("body", sa.Text(), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False),
    sa.Column("next_attempt_at", sa.Float(), nullable=False),
    sa.Column("locked_until", sa.Float(), nullable=True),
    sa.Column("last_status", sa.Integer(), nullable=True),
    sa.Column("last_error", sa.Text(), nullable=True),
    sa.Column("created_at", sa.Float(), nullable=False),
    sa.Column("delivered_at", sa.Float(), nullable=True),
    sa.Index("ix_webhooks_due", "state", "next_attempt_at"),
    sa.Index("ix_webhooks_request", "request_id"),
)

#: processes running workers, as they last reported themselves (the admin API, /health/ready)
workers = sa.Table(
    "workers",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("hostname", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer(), nullable=False),
    sa.Column("started_at", sa.Float(), nullable=False),
    sa.Column("last_seen", sa.Float(), nullable=False),
    #: backend -> {"slots", "busy", "status": the backend's own status()}
    sa.Column("backends", sa.JSON(), nullable=False),
    sa.Index("ix_workers_last_seen", "last_seen"),
)

#: the endpoints of each worker pool (``OPENFAL_POOLS``, written at start): what the
#: ``openfal_pool_queue`` view (migration 0006; KEDA's postgresql trigger reads it)
#: counts queued and running requests by
worker_pools = sa.Table(
    "worker_pools",
    metadata,
    sa.Column("pool", sa.String(64), primary_key=True),
    sa.Column("endpoint_id", sa.String(255), primary_key=True),
)

media = sa.Table(
    "media",
    metadata,
    sa.Column("key", sa.String(512), primary_key=True),
    sa.Column("request_id", sa.String(36), nullable=True),
    sa.Column("size", sa.BigInteger(), nullable=False),
    sa.Column("created_at", sa.Float(), nullable=False),
    sa.Column("expires_at", sa.Float(), nullable=True),
    #: the key that uploaded it or whose request made it (None: no key, auth off)
    sa.Column("key_id", sa.String(64), nullable=True),
    #: fal's file ACL, {"default": allow|forbid|hide, "rules": [{"user", "decision"}]}; None: allow
    sa.Column("acl", sa.JSON(), nullable=True),
    sa.Index("ix_media_expires", "expires_at"),
    sa.Index("ix_media_request", "request_id"),
)

#: each key's storage defaults (fal's /v1/storage/settings): what its new files get
#: when a request names no X-Fal-Object-Lifecycle-Preference
storage_settings = sa.Table(
    "storage_settings",
    metadata,
    sa.Column("key_id", sa.String(64), primary_key=True),
    #: seconds new files are kept; None: the server's media TTL
    sa.Column("expiration_duration_seconds", sa.Float(), nullable=True),
    #: whether they are kept forever (fal's ``expiration_duration_seconds: null``)
    sa.Column("keep_forever", sa.Boolean(), nullable=False, server_default=sa.false()),
    #: the ACL new files start with; None: allow
    sa.Column("initial_acl", sa.JSON(), nullable=True),
    sa.Column("updated_at", sa.Float(), nullable=False),
)

server_secrets = sa.Table(
    "server_secrets",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text(), nullable=False),
    sa.Column("created_at", sa.Float(), nullable=False),
)

#: the charge-row columns the Platform API's reports read
_REPORTED = ("endpoint_id", "key_id", "outcome", "status_code", "unit", "units", "amount_micros", "queue_seconds", "run_seconds")

ledger = sa.Table(
    "ledger",
    metadata,
    sa.Column("id", Seq, primary_key=True, autoincrement=True),
    sa.Column("key_id", sa.String(64), nullable=True),
    sa.Column("request_id", sa.String(36), nullable=True),
    sa.Column("endpoint_id", sa.String(255), nullable=True),
    #: reserve, release, charge, credit
    sa.Column("kind", sa.String(16), nullable=False),
    #: signed micro-dollars: negative takes from the balance
    sa.Column("amount_micros", sa.BigInteger(), nullable=False),
    sa.Column("images", sa.Integer(), nullable=False),
    sa.Column("megapixels", sa.Float(), nullable=False),
    sa.Column("video_seconds", sa.Float(), nullable=False),
    #: how the request ended: ok, or its error_type
    sa.Column("outcome", sa.String(64), nullable=True),
    sa.Column("created_at", sa.Float(), nullable=False),
    #: on charge rows: the status code the request ended with (analytics: 2xx/4xx/5xx)
    sa.Column("status_code", sa.Integer(), nullable=True),
    #: on charge rows: the price's billing unit and how many of them were delivered
    sa.Column("unit", sa.String(16), nullable=True),
    sa.Column("units", sa.Float(), nullable=True),
    #: on charge rows: seconds queued before a worker started it, and seconds it ran
    sa.Column("queue_seconds", sa.Float(), nullable=True),
    sa.Column("run_seconds", sa.Float(), nullable=True),
    #: on charge rows: already added into charge_rollup (the reaper rolls them up)
    sa.Column("rolled_up", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Index("ix_ledger_key_created", "key_id", "created_at"),
    #: the charge rows not rolled up yet: the reaper's next batch, and the reports' tail
    sa.Index(
        "ix_ledger_unrolled",
        "created_at",
        postgresql_where=sa.text("kind = 'charge' AND NOT rolled_up"),
        sqlite_where=sa.text("kind = 'charge' AND NOT rolled_up"),
    ),
    #: the Platform API's reports read charge rows by time (all keys) or by key and
    #: time: these partial covering indexes answer them from the index alone (PostgreSQL
    #: index-only scans; SQLite keeps plain partial indexes)
    sa.Index(
        "ix_ledger_charges",
        "created_at",
        postgresql_include=list(_REPORTED),
        postgresql_where=sa.text("kind = 'charge'"),
        sqlite_where=sa.text("kind = 'charge'"),
    ),
    sa.Index(
        "ix_ledger_key_charges",
        "key_id",
        "created_at",
        postgresql_include=[c for c in _REPORTED if c != "key_id"],
        postgresql_where=sa.text("kind = 'charge'"),
        sqlite_where=sa.text("kind = 'charge'"),
    ),
    sa.Index("ix_ledger_request", "request_id"),
)

#: the ledger's charge rows added up per UTC day and per hour, endpoint, key and billing
#: unit, so a month's reports read hundreds of cells, not every request (see
#: store/rollup.py): counts and sums exact, queue waits and run times as log-histograms
#: (openfal.loghist)
charge_rollup = sa.Table(
    "charge_rollup",
    metadata,
    sa.Column("id", Seq, primary_key=True, autoincrement=True),
    #: the cell's length, seconds: 86400 (a UTC day) or 3600 (an hour)
    sa.Column("span", sa.Float(), nullable=False),
    #: its start, epoch seconds (a multiple of span)
    sa.Column("start", sa.Float(), nullable=False),
    #: '' where the charge row had none (a key: auth off)
    sa.Column("endpoint_id", sa.String(255), nullable=False),
    sa.Column("key_id", sa.String(64), nullable=False),
    sa.Column("unit", sa.String(16), nullable=False),
    #: every request, and by status class (2xx/3xx, 4xx, 5xx)
    sa.Column("request_count", sa.Integer(), nullable=False),
    sa.Column("success_count", sa.Integer(), nullable=False),
    sa.Column("user_error_count", sa.Integer(), nullable=False),
    sa.Column("error_count", sa.Integer(), nullable=False),
    #: the requests that delivered (outcome ok): usage line items
    sa.Column("ok_count", sa.Integer(), nullable=False),
    sa.Column("ok_units", sa.Float(), nullable=False),
    sa.Column("ok_cost_micros", sa.BigInteger(), nullable=False),
    #: log-histograms of queue waits and run times (openfal.loghist's bytes)
    sa.Column("queue_hist", sa.LargeBinary(), nullable=False),
    sa.Column("run_hist", sa.LargeBinary(), nullable=False),
    sa.UniqueConstraint("span", "start", "endpoint_id", "key_id", "unit", name="uq_charge_rollup_cell"),
    sa.Index("ix_charge_rollup_key", "key_id", "span", "start"),
)
