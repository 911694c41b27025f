"""Prometheus metrics. Counters and histograms live in the process that does the work
(API nodes count submits, worker processes count completions and serve them with
``openfal worker --port``); gauges of shared state (queue depth) are read from
the store at scrape time, so every node reports the same truth."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from openfal.models import RequestRecord

SUBMITTED = Counter("openfal_requests_submitted_total", "Requests accepted into the queue", ["endpoint"])
COMPLETED = Counter(
    "openfal_requests_completed_total", "Requests that ended, by outcome (ok or the error_type)", ["endpoint", "outcome"]
)
DURATION = Histogram(
    "openfal_request_duration_seconds",
    "Submit to COMPLETED",
    ["endpoint"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600),
)
QUEUE_WAIT = Histogram(
    "openfal_queue_wait_seconds",
    "Submit to first start",
    ["endpoint"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900),
)
QUEUE_DEPTH = Gauge("openfal_queue_depth", "Requests waiting, by backend", ["backend"])
RUNNING = Gauge("openfal_requests_running", "Requests in progress, by backend", ["backend"])
SLOTS = Gauge("openfal_worker_slots", "Worker slots in this process", ["backend"])
WEBHOOKS = Counter(
    "openfal_webhook_attempts_total", "Webhook delivery attempts by outcome (delivered, retry, failed)", ["outcome"]
)
CLUSTER_SLOTS = Gauge(
    "openfal_cluster_worker_slots", "Worker slots of every live worker process (from the worker registry)", ["backend"]
)
CLUSTER_BUSY = Gauge("openfal_cluster_worker_busy_slots", "Busy worker slots of every live worker process", ["backend"])
POOL_QUEUED = Gauge(
    "openfal_pool_queue_depth", "Requests waiting for a worker pool (OPENFAL_POOLS; the openfal_pool_queue view)", ["pool"]
)
POOL_RUNNING = Gauge("openfal_pool_requests_running", "Requests a worker pool is running", ["pool"])
POOL_OLDEST_WAIT = Gauge(
    "openfal_pool_oldest_wait_seconds", "How long the oldest request waiting for a worker pool has waited", ["pool"]
)
BUSY = Gauge("openfal_worker_busy_slots", "Worker slots running a request in this process", ["backend"])


def record_completion(record: RequestRecord) -> None:
    endpoint = record.endpoint_id
    COMPLETED.labels(endpoint, record.error_type or "ok").inc()
    if record.completed_at is not None:
        DURATION.labels(endpoint).observe(max(0.0, record.completed_at - record.created_at))


def record_start(record: RequestRecord) -> None:
    if record.attempts == 1 and record.started_at is not None:
        QUEUE_WAIT.labels(record.endpoint_id).observe(max(0.0, record.started_at - record.created_at))
ABANDONED_RUNS = Counter(
    "openfal_abandoned_runs_total", "Runs given up while stuck inside a step after a cancel or the run time limit", ["backend"]
)
