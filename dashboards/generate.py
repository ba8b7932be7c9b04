"""Build the Grafana dashboards with Grafana's own grafana-foundation-sdk and copy the single
sources the Helm chart packages (dashboards, alert rules, CRDs) into charts/roomee/.

    python dashboards/generate.py          # write dashboards/*.json and the chart's copies
    python dashboards/generate.py --check  # exit 1 if any written file is out of date

Metric names: ARCHITECTURE.md §7 and roomee.kit.metrics. Every panel filters on the template
variables `namespace` (the scrape's namespace label) and `target` (the metrics' own `service`
label: the target name, or `all` under `roomee up`).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from grafana_foundation_sdk.builders import common as common_builder
from grafana_foundation_sdk.builders import dashboard as dashboard_builder
from grafana_foundation_sdk.builders import prometheus as prometheus_builder
from grafana_foundation_sdk.builders import statetimeline, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as common_model
from grafana_foundation_sdk.models import dashboard as dashboard_model

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS = ROOT / "dashboards"
CHART = ROOT / "charts" / "roomee"
RULES = DASHBOARDS / "alerts" / "roomee.rules.yaml"
CRDS = ROOT / "crds"

DATASOURCE = dashboard_model.DataSourceRef(type_val="prometheus", uid="${datasource}")
# Label matchers every query carries.
NS = 'namespace=~"$namespace"'
SVC = 'service=~"$target"'
RATE = "$__rate_interval"


@dataclass
class Query:
    expr: str
    legend: str


@dataclass
class PanelSpec:
    title: str
    description: str
    unit: str
    queries: list[Query]
    kind: str = "timeseries"
    mappings: list = field(default_factory=list)


def _quantiles(metric: str, by: str, legend: str) -> list[Query]:
    return [
        Query(
            f"histogram_quantile({q}, sum by (le, {by}) (rate({metric}_bucket{{{NS}, {SVC}}}[{RATE}])))",
            f"{legend} p{int(q * 100)}",
        )
        for q in (0.5, 0.95, 0.99)
    ]


def _ratio(metric: str, errors: str, by: str) -> str:
    """Share of `errors` among all samples, 0 (not "no data") for a series without errors."""
    total = f"sum by ({by}) (rate({metric}{{{NS}, {SVC}}}[{RATE}]))"
    failed = f"sum by ({by}) (rate({metric}{{{NS}, {SVC}, {errors}}}[{RATE}]))"
    return f"({failed} or {total} * 0) / {total}"


BREAKER_STATES = [
    dashboard_model.ValueMap(
        options={
            "0": dashboard_model.ValueMappingResult(text="closed", color="green", index=0),
            "1": dashboard_model.ValueMappingResult(text="half-open", color="yellow", index=1),
            "2": dashboard_model.ValueMappingResult(text="open", color="red", index=2),
        }
    )
]

PANELS: list[PanelSpec] = [
    PanelSpec(
        "Inter-service latency",
        "Latency of calls between targets seen by the caller (ServiceClient), p50/p95/p99 per caller and callee.",
        "s",
        _quantiles("http_client_request_duration_seconds", "service, target", "{{service}} → {{target}}"),
    ),
    PanelSpec(
        "Error rate by service",
        "Share of HTTP requests answered 5xx (server errors) and 4xx (refused requests) per target.",
        "percentunit",
        [
            Query(_ratio("http_request_duration_seconds_count", 'status=~"5.."', "service"), "{{service}} 5xx"),
            Query(_ratio("http_request_duration_seconds_count", 'status=~"4.."', "service"), "{{service}} 4xx"),
        ],
    ),
    PanelSpec(
        "AMQP throughput",
        "Messages per second published (outbox relay) and consumed, per target.",
        "msg/s",
        [
            Query(
                f"sum by (service, direction) (rate(amqp_messages_total{{{NS}, {SVC}}}[{RATE}]))",
                "{{service}} {{direction}}",
            )
        ],
    ),
    PanelSpec(
        "Notification delivery rate by channel",
        "Deliveries per second by channel (socket, push, email) and outcome (sent, failed, deferred).",
        "ops",
        [
            Query(
                f"sum by (channel, status) (rate(notifications_sent_total{{{NS}}}[{RATE}]))",
                "{{channel}} {{status}}",
            )
        ],
    ),
    PanelSpec(
        "HTTP requests by service",
        "Requests per second served by each target, by status class.",
        "reqps",
        [
            Query(
                f'sum by (service, code) (label_replace(rate(http_request_duration_seconds_count{{{NS}, {SVC}}}[{RATE}]), "code", "${{1}}xx", "status", "([0-9]).."))',
                "{{service}} {{code}}",
            )
        ],
    ),
    PanelSpec(
        "HTTP latency by service",
        "Server-side request duration p50/p95/p99 per target.",
        "s",
        _quantiles("http_request_duration_seconds", "service", "{{service}}"),
    ),
    PanelSpec(
        "Circuit breaker state",
        "State of each caller → callee circuit breaker (opossum semantics): closed, half-open or open.",
        "none",
        [Query(f"max by (service, target) (circuit_breaker_state{{{NS}, {SVC}}})", "{{service}} → {{target}}")],
        kind="state",
        mappings=BREAKER_STATES,
    ),
    PanelSpec(
        "Outbox backlog",
        "Committed events not yet published to the broker, per target. It grows while the broker is unreachable.",
        "short",
        [Query(f"sum by (service) (outbox_backlog{{{NS}, {SVC}}})", "{{service}}")],
    ),
    PanelSpec(
        "Dead-lettered and retried events",
        "Messages waiting in each consumer queue's dead-letter queue (sampled every 15 s; max over replicas, which all "
        "see the same queue), and retries per second per target and routing key. "
        "Inspect with `roomee events dead-letters --queue Q`, replay with `roomee events replay --queue Q`.",
        "short",
        [
            Query(f"max by (service, queue) (dead_letters_waiting{{{NS}, {SVC}}})", "waiting {{service}} {{queue}}"),
            Query(
                f'sum by (service, routing_key) (rate(amqp_messages_total{{{NS}, {SVC}, direction="consume", status="retry"}}[{RATE}]))',
                "retries/s {{service}} {{routing_key}}",
            ),
        ],
    ),
    PanelSpec(
        "Unroutable events in the outbox",
        "Committed events kept in the outbox because no queue is bound to their routing key (a consumer not "
        "deployed, a binding missing), per target and routing-key family; retried with backoff and published "
        "once a bound queue appears. Max over replicas (each relay counts the same table).",
        "short",
        [Query(f"max by (service, family) (outbox_unroutable_events{{{NS}, {SVC}}})", "{{service}} {{family}}")],
    ),
    PanelSpec(
        "Saga step outcomes",
        "Saga steps per second (hotel provisioning and deletion) by step and outcome (succeeded, retry, failed, "
        "compensated), and whole sagas that failed and were compensated.",
        "ops",
        [
            Query(
                f"sum by (saga, step, outcome) (rate(saga_steps_total{{{NS}}}[{RATE}]))",
                "{{saga}} {{step}} {{outcome}}",
            ),
            Query(f"sum by (saga) (rate(sagas_failed_total{{{NS}}}[{RATE}]))", "{{saga}} failed"),
        ],
    ),
    PanelSpec(
        "Sagas in flight and step latency",
        "Sagas started and not finished, and the p95 duration of each step attempt.",
        "short",
        [
            Query(f"sum by (saga) (sagas_in_flight{{{NS}}})", "{{saga}} in flight"),
            Query(
                f"histogram_quantile(0.95, sum by (le, saga, step) (rate(saga_step_duration_seconds_bucket{{{NS}}}[{RATE}])))",
                "{{saga}} {{step}} p95 (s)",
            ),
        ],
    ),
    PanelSpec(
        "Operator reconciliations",
        "Hotel and Workspace handler runs of the operator per second by outcome, their errors by kind, and the "
        "p95 duration of a handler run.",
        "ops",
        [
            Query(
                f"sum by (resource, handler, outcome) (rate(roomee_operator_reconciliations_total{{{NS}}}[{RATE}]))",
                "{{resource}} {{handler}} {{outcome}}",
            ),
            Query(
                f"sum by (resource, kind) (rate(roomee_operator_reconciliation_errors_total{{{NS}}}[{RATE}]))",
                "{{resource}} errors ({{kind}})",
            ),
            Query(
                "histogram_quantile(0.95, sum by (le, resource) "
                f"(rate(roomee_operator_reconciliation_duration_seconds_bucket{{{NS}}}[{RATE}])))",
                "{{resource}} p95 (s)",
            ),
        ],
    ),
    PanelSpec(
        "Socket.IO connections",
        "Socket.IO clients connected, per target (summed over replicas).",
        "short",
        [Query(f"sum by (service) (socketio_connected_clients{{{NS}, {SVC}}})", "{{service}}")],
    ),
    PanelSpec(
        "Event fan-out latency",
        "Time from an event's creation (outbox commit) to its handling by each consumer queue: how long a "
        "notification fan-out (and each push/email job) waits, p50/p95/p99.",
        "s",
        _quantiles("consumer_lag_seconds", "service, queue", "{{service}} {{queue}}"),
    ),
]


def _panel(index: int, spec: PanelSpec):
    builder = statetimeline.Panel() if spec.kind == "state" else timeseries.Panel()
    builder = (
        builder.id(index + 1)
        .title(spec.title)
        .description(spec.description)
        .datasource(DATASOURCE)
        .unit(spec.unit)
        .height(8)
        .span(12)
    )
    if spec.kind == "state":
        builder = builder.mappings(spec.mappings).min(0).max(2)
    else:
        builder = (
            builder.line_width(1)
            .fill_opacity(10)
            .legend(
                common_builder.VizLegendOptions()
                .show_legend(True)
                .display_mode(common_model.LegendDisplayMode.TABLE)
                .placement(common_model.LegendPlacement.BOTTOM)
                .calcs(["lastNotNull", "max"])
            )
        )
    for ref, query in zip("ABCDEFGH", spec.queries):
        builder = builder.with_target(
            prometheus_builder.Dataquery().expr(query.expr).legend_format(query.legend).ref_id(ref).range()
        )
    return builder


def _label_variable(name: str, label: str, query: str):
    """A multi-value template variable over a label's values, with "All" meaning any value."""
    return (
        dashboard_builder.QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query(query)
        .refresh(dashboard_model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .include_all(True)
        .all_value(".*")
        .multi(True)
        .sort(dashboard_model.VariableSort.ALPHABETICAL_ASC)
    )


def overview() -> dict:
    board = (
        dashboard_builder.Dashboard("Roomee platform")
        .uid("roomee-overview")
        .description("Inter-service latency, errors, AMQP, notifications, breakers, outbox, unroutable events, dead letters, sagas, Socket.IO.")
        .tags(["roomee"])
        .refresh("30s")
        .time("now-1h", "now")
        .timezone("browser")
        .tooltip(dashboard_model.DashboardCursorSync.CROSSHAIR)
        .with_variable(
            dashboard_builder.DatasourceVariable("datasource").label("Data source").type("prometheus")
        )
        .with_variable(_label_variable("namespace", "Namespace", "label_values(http_request_duration_seconds_count, namespace)"))
        .with_variable(
            _label_variable(
                "target", "Target", 'label_values(http_request_duration_seconds_count{namespace=~"$namespace"}, service)'
            )
        )
    )
    for index, spec in enumerate(PANELS):
        board = board.with_panel(_panel(index, spec))
    return json.loads(json.dumps(board.build(), cls=JSONEncoder))


def rendered() -> dict[Path, bytes]:
    """Every generated or copied file, by path."""
    dashboard = (json.dumps(overview(), indent=2, sort_keys=True) + "\n").encode()
    files = {
        DASHBOARDS / "roomee-overview.json": dashboard,
        CHART / "files" / "dashboards" / "roomee-overview.json": dashboard,
        CHART / "files" / "roomee.rules.yaml": RULES.read_bytes(),
    }
    if CRDS.is_dir():
        for crd in sorted(CRDS.glob("*.yaml")):
            files[CHART / "crds" / crd.name] = crd.read_bytes()
    return files


def stale_chart_crds(expected: dict[Path, bytes]) -> list[Path]:
    """Chart CRD files with no source in crds/ (a removed CRD must leave the chart too)."""
    return [path for path in sorted((CHART / "crds").glob("*.yaml")) if path not in expected]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report out-of-date files instead of writing them")
    args = parser.parse_args(argv)
    files = rendered()
    stale = [path for path, content in files.items() if not path.exists() or path.read_bytes() != content]
    extra = stale_chart_crds(files)
    if args.check:
        for path in stale + extra:
            print(f"out of date: {path.relative_to(ROOT)}", file=sys.stderr)
        return 1 if stale or extra else 0
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(files[path])
        print(f"wrote {path.relative_to(ROOT)}")
    for path in extra:
        path.unlink()
        print(f"removed {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
