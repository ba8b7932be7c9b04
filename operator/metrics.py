"""Prometheus metrics of the operator (served on its ``/metrics``)."""

from __future__ import annotations

import time
from contextlib import contextmanager

from prometheus_client import Counter, Gauge, Histogram

reconciliations_total = Counter(
    "roomee_operator_reconciliations_total", "Handler runs of the operator by resource, handler and outcome.",
    ["resource", "handler", "outcome"],
)
reconciliation_errors_total = Counter(
    "roomee_operator_reconciliation_errors_total", "Handler runs that failed (temporary or permanent).",
    ["resource", "handler", "kind"],
)
reconciliation_duration_seconds = Histogram(
    "roomee_operator_reconciliation_duration_seconds", "Duration of one handler run.",
    ["resource", "handler"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


@contextmanager
def measured(resource: str, handler: str):
    """Count and time one handler run; kopf's TemporaryError/PermanentError count as errors."""
    import kopf

    started = time.perf_counter()
    outcome = "done"
    try:
        yield
    except kopf.TemporaryError:
        outcome = "retry"
        reconciliation_errors_total.labels(resource, handler, "temporary").inc()
        raise
    except kopf.PermanentError:
        outcome = "failed"
        reconciliation_errors_total.labels(resource, handler, "permanent").inc()
        raise
    except Exception:
        outcome = "error"
        reconciliation_errors_total.labels(resource, handler, "unexpected").inc()
        raise
    finally:
        reconciliations_total.labels(resource, handler, outcome).inc()
        reconciliation_duration_seconds.labels(resource, handler).observe(time.perf_counter() - started)

leader_gauge = Gauge("roomee_operator_leader", "1 while this replica holds the Lease and runs kopf, else 0.")
