"""The Grafana dashboard: generated from Python (grafana-foundation-sdk), in step with its copies,
filtered by namespace and target, and built only on metrics the platform's code registers."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from prometheus_client import REGISTRY

from roomee.targets import TARGETS
from tests.deploy.tools import DASHBOARDS, ROOT, RULES

SEED_PANELS = ("Inter-service latency", "Error rate by service", "AMQP throughput", "Notification delivery rate by channel")
SRE_PANELS = ("Circuit breaker state", "Outbox backlog", "Dead-lettered and retried events", "Saga step outcomes",
              "Socket.IO connections", "Event fan-out latency", "Unroutable events in the outbox")
PROMQL_WORDS = {"sum", "by", "rate", "increase", "histogram_quantile", "max", "min", "or", "and", "le", "deriv",
                "label_replace", "count", "without", "on", "ignoring", "avg"}


def overview() -> dict:
    return json.loads((DASHBOARDS / "roomee-overview.json").read_text())


def queries(board: dict) -> list[str]:
    return [target["expr"] for panel in board["panels"] for target in panel["targets"]]


def metric_names(expr: str) -> set[str]:
    """Metric names of a PromQL expression (identifiers followed by `{` or `[` or used bare)."""
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    without_labels = re.sub(r"\{[^}]*\}", "{}", without_strings)
    without_by = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", without_labels)
    names = set(re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*[\{\[]", without_by))
    return {name for name in names if name not in PROMQL_WORDS}


def test_dashboards_and_chart_copies_are_up_to_date():
    result = subprocess.run([sys.executable, str(DASHBOARDS / "generate.py"), "--check"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr


def test_the_seed_panels_and_the_sre_panels_exist():
    titles = [panel["title"] for panel in overview()["panels"]]
    for title in SEED_PANELS + SRE_PANELS:
        assert title in titles
    latency = next(p for p in overview()["panels"] if p["title"] == "Inter-service latency")
    assert [t["expr"].split(",")[0] for t in latency["targets"]] == [
        "histogram_quantile(0.5", "histogram_quantile(0.95", "histogram_quantile(0.99"
    ]


def test_template_variables_namespace_and_target_filter_every_query():
    board = overview()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert {"datasource", "namespace", "target"} <= set(variables)
    assert variables["target"]["query"].endswith(", service)")
    for expr in queries(board):
        for selector in re.findall(r"[a-z_]\{([^}]*)\}", expr):
            assert 'namespace=~"$namespace"' in selector, expr
    # Notification deliveries, sagas and the operator's runs are recorded without a service label.
    per_target = [e for e in queries(board) if not re.search(r"notifications_sent_total|saga|roomee_operator_", e)]
    assert all('service=~"$target"' in e for e in per_target)
    for panel in board["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}


def _registered_metrics() -> set[str]:
    """Every sample name the platform's code can expose: the kit's metrics, each target's own and
    the operator's."""
    import roomee.operator.metrics  # noqa: F401  (the operator is a target apart from the registry)

    for spec in TARGETS.values():
        if getattr(spec, "runner", None):  # a process of its own (the operator), no HTTP router
            spec.load(spec.runner)
            continue
        spec.router  # imports the endpoints and what they use
        for hook in (spec.setup, spec.consumers, spec.workers, spec.mount):
            spec.load(hook)
    return set(REGISTRY._names_to_collectors)


def test_every_metric_of_the_panels_and_alerts_is_registered_by_the_platform():
    known = _registered_metrics()
    used = set().union(*(metric_names(e) for e in queries(overview())))
    used |= set().union(*(metric_names(line) for line in RULES.read_text().splitlines() if "(" in line or "{" in line))
    assert used and used <= known, f"unknown metrics: {used - known}"


def test_dead_letters_and_unroutable_events_are_read_from_their_gauges():
    """What waits (dead letters, unroutable outbox rows) is shown as a depth, max over replicas
    (each samples the same queue or table), not as a rate of past events."""
    panels = {panel["title"]: [t["expr"] for t in panel["targets"]] for panel in overview()["panels"]}
    assert panels["Dead-lettered and retried events"][0].startswith("max by (service, queue) (dead_letters_waiting{")
    assert panels["Unroutable events in the outbox"] == [
        'max by (service, family) (outbox_unroutable_events{namespace=~"$namespace", service=~"$target"})'
    ]
    rules = RULES.read_text()
    assert "max by (namespace, service, queue) (dead_letters_waiting)" in rules
    assert "max by (namespace, service, family) (outbox_unroutable_events)" in rules
