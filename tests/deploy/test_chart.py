"""The Helm chart on real helm: lint, render, strict Kubernetes validation, schema, targets, routes."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import PurePosixPath

import jsonschema
import pytest
import yaml
from fastapi.openapi.utils import get_openapi

from roomee import __version__
from roomee.targets import TARGETS
from tests.deploy.tools import (
    CHART,
    KUBERNETES_VERSIONS,
    ROOT,
    RULES,
    VALUES,
    by_kind,
    helm_template,
    manifests,
    run,
    target_of,
    tool,
)

EVERYTHING_ON = str(VALUES / "everything-on.yaml")
# ARCHITECTURE.md §2: the platform's targets. A Deployment may only run one of these; those not
# registered yet in roomee.targets are being built (their routes are contracted already).
PLATFORM_TARGETS = {"auth", "members", "hotel", "media", "billing", "news", "notification", "operator"}


@pytest.fixture(scope="module")
def default_docs() -> list[dict]:
    return manifests(helm_template())


@pytest.fixture(scope="module")
def everything_docs() -> list[dict]:
    return manifests(helm_template("-f", EVERYTHING_ON, namespace="prod", crds=True))


def test_helm_lint_passes_with_default_everything_on_and_production_values():
    helm = tool("helm")
    for args in ([], ["-f", EVERYTHING_ON], ["-f", str(VALUES / "production.yaml")]):
        result = run(helm, "lint", "--strict", str(CHART), *args)
        assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("values", ["default", "everything-on", "production"])
@pytest.mark.parametrize("kubernetes", KUBERNETES_VERSIONS)
def test_rendered_manifests_pass_strict_kubernetes_validation(values, kubernetes, tmp_path):
    validate = tool("kubernetes-validate")
    args = [] if values == "default" else ["-f", str(VALUES / f"{values}.yaml")]
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(helm_template(*args, crds=True))
    result = run(validate, "--strict", "--kubernetes-version", kubernetes, str(rendered), check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    kinds = Counter(doc["kind"] for doc in manifests(rendered.read_text()))
    validated = {kind for kind in kinds if kind not in ("ServiceMonitor", "PrometheusRule")}
    for kind in validated:
        assert f"passed for resource {kind.lower()}/" in result.stdout, f"{kind} was not validated"
    # The Prometheus Operator's kinds have no schema in kubernetes-validate: checked below.


# Subsets of the Prometheus Operator's CRD schemas (monitoring.coreos.com/v1) for the fields the
# chart writes; unknown fields are refused, as --strict does for the built-in kinds.
_RELABEL = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "action": {"enum": ["replace", "keep", "drop", "hashmod", "labelmap", "labeldrop", "labelkeep",
                            "lowercase", "uppercase", "keepequal", "dropequal"]},
        "regex": {"type": "string"},
        "sourceLabels": {"type": "array", "items": {"type": "string"}},
        "targetLabel": {"type": "string"},
        "replacement": {"type": "string"},
        "separator": {"type": "string"},
    },
}
_META = {"type": "object", "required": ["name", "namespace"]}
SERVICE_MONITOR = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": _META,
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["selector", "endpoints"],
            "properties": {
                "jobLabel": {"type": "string"},
                "namespaceSelector": {"type": "object", "additionalProperties": False, "properties": {
                    "any": {"type": "boolean"}, "matchNames": {"type": "array", "items": {"type": "string"}}}},
                "selector": {"type": "object", "additionalProperties": False, "properties": {
                    "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}}}},
                "endpoints": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "additionalProperties": False,
                    "properties": {
                        "port": {"type": "string"}, "path": {"type": "string"},
                        "interval": {"type": "string", "pattern": "^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"},
                        "scrapeTimeout": {"type": "string"}, "honorLabels": {"type": "boolean"},
                        "relabelings": {"type": "array", "items": _RELABEL},
                    }}},
            },
        },
    },
}
PROMETHEUS_RULE = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PrometheusRule"},
        "metadata": _META,
        "spec": {"type": "object", "additionalProperties": False, "required": ["groups"], "properties": {
            "groups": {"type": "array", "items": {"type": "object", "additionalProperties": False, "required": ["name", "rules"],
                "properties": {"name": {"type": "string"}, "interval": {"type": "string"}, "rules": {"type": "array", "items": {
                    "type": "object", "additionalProperties": False, "required": ["expr"],
                    "properties": {"alert": {"type": "string"}, "record": {"type": "string"}, "expr": {"type": "string"},
                                   "for": {"type": "string"}, "labels": {"type": "object"}, "annotations": {"type": "object"}}}}}}}}},
    },
}


def test_service_monitor_and_prometheus_rule_match_the_operator_schemas(everything_docs):
    [monitor] = by_kind(everything_docs, "ServiceMonitor")
    jsonschema.validate(monitor, SERVICE_MONITOR)
    [rule] = by_kind(everything_docs, "PrometheusRule")
    jsonschema.validate(rule, PROMETHEUS_RULE)
    # The PrometheusRule carries the very rules promtool tests.
    assert rule["spec"] == yaml.safe_load(RULES.read_text())
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    # Every target's Service and the operator's are selected, on their `metrics` port, which no Ingress path
    # reaches: the targets serve /metrics on a listener of its own (ROOMEE_METRICS_PORT), the operator beside
    # its probes.
    selector = monitor["spec"]["selector"]["matchLabels"]
    services = [s for s in by_kind(everything_docs, "Service")
                if s["metadata"]["labels"].get("app.kubernetes.io/component") not in ("postgresql", "rabbitmq")]
    assert services and all(selector.items() <= s["metadata"]["labels"].items() for s in services)
    assert all(any(p["name"] == "metrics" for p in s["spec"]["ports"]) for s in services)
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "metrics"
    assert endpoint["path"] == "/metrics" and endpoint["honorLabels"] is True
    for deployment in by_kind(everything_docs, "Deployment"):
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        env = {e["name"]: e.get("value") for e in container["env"]}
        if "metrics" in ports:  # a target: its metrics listener is the port the Service names
            assert env["ROOMEE_METRICS_PORT"] == str(ports["metrics"]) and ports["metrics"] != ports["http"]
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == ["prod"]


def test_crds_ship_with_the_chart_and_are_copies_of_crds(everything_docs):
    sources = sorted((ROOT / "crds").glob("*.yaml"))
    assert sources, "crds/ holds the CustomResourceDefinitions"
    copies = sorted((CHART / "crds").glob("*.yaml"))
    assert [p.name for p in copies] == [p.name for p in sources]
    for source, copy in zip(sources, copies):
        assert copy.read_bytes() == source.read_bytes(), f"{copy} differs from {source}: run dashboards/generate.py"
    crds = by_kind(everything_docs, "CustomResourceDefinition")
    assert sorted(c["spec"]["names"]["kind"] for c in crds) == ["Hotel", "Workspace"]
    assert all(c["spec"]["group"] == "roomee.io" for c in crds)


@pytest.mark.parametrize(
    "values, error",
    [
        ({"targets": {"payments": {"enabled": True, "replicas": 1, "paths": ["/pay"]}}}, "payments"),
        ({"targets": {"auth": {"replicas": "two"}}}, "replicas"),
        ({"config": {"ROOMEE_DATABASE_URL": "postgresql://roomee:secret@db/roomee"}}, "ROOMEE_DATABASE_URL"),
        ({"config": {"LOG_LEVEL": "DEBUG"}}, "LOG_LEVEL"),
        ({"ingress": {"socketio": {"affinity": "ip-hash"}}}, "affinity"),
        ({"targets": {"news": {"paths": ["api/v1/pages"]}}}, "paths"),
        ({"image": {"pullPolicy": "Sometimes"}}, "pullPolicy"),
        ({"databasePassword": "hunter2"}, "databasePassword"),
    ],
    ids=["unknown-target", "replicas-type", "secret-in-config", "config-name", "socketio-affinity",
         "relative-path", "pull-policy", "unknown-key"],
)
def test_values_breaking_the_schema_are_refused(values, error, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(values))
    result = run(tool("helm"), "template", "roomee", str(CHART), "-f", str(bad), check=False)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert error in result.stderr
    assert run(tool("helm"), "lint", str(CHART), "-f", str(bad), check=False).returncode != 0


def test_a_database_without_shared_signing_keys_is_refused_at_render_time(tmp_path):
    """The auth target would refuse to start (kit.settings.unsafe_production_defaults): helm says so first."""
    result = run(tool("helm"), "template", "roomee", str(CHART), "--set", "secrets.existingSecret=roomee-secrets",
                 check=False)
    assert result.returncode != 0 and "secrets.signingKeysSecret is required" in result.stderr
    allowed = helm_template("--set", "secrets.existingSecret=roomee-secrets",
                            "--set", "config.ROOMEE_ALLOW_UNSAFE_DEFAULTS=true")
    assert by_kind(manifests(allowed), "Deployment")


def test_every_value_is_documented_and_typed():
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def walk(value, node, path):
        assert node is not None, f"{path} is not typed in values.schema.json"
        assert "type" in node or "oneOf" in node or "anyOf" in node, f"{path} has no type"
        assert node.get("description"), f"{path} has no description in the schema"
        if isinstance(value, dict) and node.get("properties"):
            for key, child in value.items():
                walk(child, node["properties"].get(key), f"{path}.{key}")

    for key, value in values.items():
        walk(value, schema["properties"].get(key), key)
    text = (CHART / "values.yaml").read_text()
    for key in values:
        before = text[: text.index(f"\n{key}:")].rstrip().splitlines()[-1]
        assert before.lstrip().startswith("#") or isinstance(values[key], dict), f"{key} has no comment in values.yaml"


def test_a_deployment_for_every_registered_target_and_none_for_unknown_ones(default_docs):
    deployments = by_kind(default_docs, "Deployment")
    running = Counter(target_of(d) for d in deployments)
    assert all(count == 1 for count in running.values()), running
    assert set(TARGETS) <= set(running), f"targets without a Deployment: {set(TARGETS) - set(running)}"
    assert set(running) <= PLATFORM_TARGETS | set(TARGETS), f"unknown targets: {set(running) - PLATFORM_TARGETS}"
    services = {s["metadata"]["name"]: s for s in by_kind(default_docs, "Service")}
    for deployment in deployments:
        target = target_of(deployment)
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert labels["app.kubernetes.io/component"] == target
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
        service = services[deployment["metadata"]["name"]]
        assert service["spec"]["selector"].items() <= labels.items()


def test_target_pods_are_probed_restricted_and_configured_from_secrets(everything_docs):
    deployments = {target_of(d): d for d in by_kind(everything_docs, "Deployment")}
    for target, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        [container] = pod["containers"]
        assert container["image"] == "registry.example.com/roomee/roomee:1.2.3"
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
        assert security["capabilities"] == {"drop": ["ALL"]}
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert {"/tmp", "/var/lib/roomee"} <= mounts
        assert container["livenessProbe"]["httpGet"]["path"] == "/health"
        assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
        env = {e["name"]: e for e in container["env"]}
        if target == "operator":  # only what it reads (tests/k8s_operator/test_chart_operator.py)
            assert env["ROOMEE_OPERATOR_CLIENT_SECRET"]["valueFrom"]["secretKeyRef"] == {
                "name": "roomee-secrets", "key": "operator-client-secret"}
            assert "ROOMEE_SERVICE_SECRET" not in env and "ROOMEE_SERVICE_CLIENT_SECRETS" not in env
            assert "ROOMEE_DATABASE_URL" not in env and "ROOMEE_ONESIGNAL_API_KEY" not in env
            continue
        for name, key in (("ROOMEE_DATABASE_URL", "database-url"), ("ROOMEE_BROKER_URL", "broker-url"),
                          ("ROOMEE_SERVICE_SECRET", "service-secret")):
            assert env[name]["valueFrom"]["secretKeyRef"] == {"name": "roomee-secrets", "key": key}
        assert env["ROOMEE_ONESIGNAL_API_KEY"]["valueFrom"]["secretKeyRef"]["optional"] is True
        assert env["ROOMEE_AUTO_MIGRATE"]["value"] == "false"
        # Only auth (which checks it) gets the operator's client secret beside the operator.
        assert ("ROOMEE_OPERATOR_CLIENT_SECRET" in env) == (target == "auth"), target
        assert env["ROOMEE_NOTIFICATION_URL"]["value"] == "http://roomee-notification:80"
        assert env["ROOMEE_PUBLIC_URL"]["value"] == "https://api.roomee.example.com"
        assert not any("value" in e and "secret" in e["name"].lower() for e in container["env"])
    auth = deployments["auth"]["spec"]["template"]["spec"]
    assert {"name": "signing-keys", "secret": {"secretName": "roomee-signing-keys"}} in auth["volumes"]
    notification = deployments["notification"]
    assert notification["spec"]["replicas"] == 4
    [container] = notification["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["requests"] == {"cpu": "500m", "memory": "512Mi"}
    assert {"name": "ROOMEE_CONSUMER_PREFETCH", "value": "200"} in container["env"]


def test_no_secret_value_is_rendered_with_an_existing_secret(everything_docs):
    assert not by_kind(everything_docs, "Secret")
    for doc in by_kind(everything_docs, "Deployment") + by_kind(everything_docs, "Job"):
        for container in doc["spec"]["template"]["spec"]["containers"]:
            assert not any("value" in e and "secret" in e["name"].lower() for e in container["env"])


def test_disruption_budgets_only_for_targets_with_several_replicas(everything_docs):
    replicas = {target_of(d): d["spec"]["replicas"] for d in by_kind(everything_docs, "Deployment")}
    budgets = {b["metadata"]["labels"]["app.kubernetes.io/component"] for b in by_kind(everything_docs, "PodDisruptionBudget")}
    assert budgets == {t for t, n in replicas.items() if n > 1}
    assert replicas["billing"] == 1 and "billing" not in budgets


def test_migrations_run_as_a_job_of_each_revision_not_a_hook(default_docs):
    """A pre-install hook would run before the bundled PostgreSQL exists: an ordinary Job per revision."""
    [job] = by_kind(default_docs, "Job")
    assert job["metadata"]["name"] == "roomee-migrate-1"
    assert "helm.sh/hook" not in job["metadata"].get("annotations", {})
    [container] = job["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["migrate", "--target", "all", "--wait-seconds", "300"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert "envFrom" not in container


def test_operator_runs_alone_with_least_privilege_rbac(default_docs):
    [operator] = [d for d in by_kind(default_docs, "Deployment") if target_of(d) == "operator"]
    assert operator["spec"]["replicas"] == 2 and operator["spec"]["strategy"]["type"] == "RollingUpdate"
    pod = operator["spec"]["template"]["spec"]
    [binding] = by_kind(default_docs, "ClusterRoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": pod["serviceAccountName"], "namespace": "roomee"}]
    [role] = [r for r in by_kind(default_docs, "ClusterRole") if r["metadata"]["name"] == binding["roleRef"]["name"]]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    granted = {(group, resource, verb) for rule in role["rules"] for group in rule["apiGroups"]
               for resource in rule["resources"] for verb in rule["verbs"]}
    assert not any("*" in entry for rule in role["rules"] for entry in rule["apiGroups"] + rule["resources"] + rule["verbs"])
    writes = {"create", "update", "patch", "delete", "deletecollection"}
    written = {(g, r) for g, r, v in granted if v in writes}
    assert written == {
        ("roomee.io", "hotels"), ("roomee.io", "workspaces"), ("roomee.io", "hotels/status"),
        ("roomee.io", "workspaces/status"), ("roomee.io", "hotels/finalizers"), ("roomee.io", "workspaces/finalizers"),
        ("", "events"), ("events.k8s.io", "events"),
    }
    assert not any(v == "delete" for _, _, v in granted)
    assert not any(r in ("secrets", "pods", "deployments") for _, r, _ in granted)
    # The services' pods get no API token at all.
    for deployment in by_kind(default_docs, "Deployment"):
        if deployment is not operator:
            assert deployment["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


def test_dashboards_are_config_maps_for_the_grafana_sidecar(default_docs):
    maps = [c for c in by_kind(default_docs, "ConfigMap") if c["metadata"]["labels"].get("grafana_dashboard") == "1"]
    assert maps
    boards = {name: json.loads(body) for c in maps for name, body in c["data"].items()}
    assert "roomee-overview.json" in boards
    assert boards["roomee-overview.json"] == json.loads((ROOT / "dashboards" / "roomee-overview.json").read_text())


def _openapi_paths(spec) -> list[tuple[str, str]]:
    document = get_openapi(title=spec.name, version=__version__, routes=spec.router.routes)
    return [(path, method.upper()) for path, item in document["paths"].items() for method in item]


def _prefix_match(prefix: str, path: str) -> bool:
    """Kubernetes `Prefix` matching: element by element on `/`."""
    want = PurePosixPath(prefix).parts
    return PurePosixPath(path).parts[: len(want)] == want


def _route(ingresses: list[dict], path: str) -> str | None:
    """The Service the Ingress sends `path` to (the longest matching prefix wins)."""
    candidates = [
        (len(p["path"]), p["backend"]["service"]["name"])
        for ingress in ingresses
        for rule in ingress["spec"]["rules"]
        for p in rule["http"]["paths"]
        if p["pathType"] == "Prefix" and _prefix_match(p["path"], path)
    ]
    return max(candidates)[1] if candidates else None


@pytest.mark.parametrize("affinity", ["cookie", "none"])
def test_every_openapi_route_of_every_target_reaches_its_service(affinity):
    docs = manifests(helm_template("--set", "ingress.enabled=true", "--set", f"ingress.socketio.affinity={affinity}"))
    ingresses = by_kind(docs, "Ingress")
    services = {s["metadata"]["name"]: s["spec"]["selector"]["app.kubernetes.io/component"] for s in by_kind(docs, "Service")}
    checked = 0
    for name, spec in TARGETS.items():
        if getattr(spec, "runner", None):  # the operator: no HTTP routes behind the Ingress
            continue
        for path, method in _openapi_paths(spec):
            service = _route(ingresses, path)
            assert service is not None, f"{method} {path} ({name}) is reached by no Ingress path"
            assert services[service] == name, f"{method} {path} goes to {services[service]}, not {name}"
            checked += 1
    assert checked > 50
    # Socket.IO (not in the OpenAPI) goes to the notification target.
    assert services[_route(ingresses, "/socket.io/")] == "notification"
    sticky = [i for i in ingresses if i["metadata"]["name"].endswith("-socketio")]
    if affinity == "cookie":
        [socketio] = sticky
        assert socketio["metadata"]["annotations"]["nginx.ingress.kubernetes.io/affinity"] == "cookie"
        assert [p["path"] for r in socketio["spec"]["rules"] for p in r["http"]["paths"]] == ["/socket.io"]
    else:
        assert not sticky


def test_contracted_paths_of_the_coming_targets_are_routed():
    """Paths other helpers' targets answer (CONTRACTS and the issues), routed before they land."""
    docs = manifests(helm_template("--set", "ingress.enabled=true"))
    ingresses = by_kind(docs, "Ingress")
    services = {s["metadata"]["name"]: s["spec"]["selector"]["app.kubernetes.io/component"] for s in by_kind(docs, "Service")}
    expected = {
        "/hotel/add": "hotel", "/hotel/h1/provisioning": "hotel",
        "/media/upload": "media", "/media/generate-presigned-url": "media", "/media/storage/e1": "media",
        "/sub/plans": "billing", "/sub/assign-subscription/": "billing", "/sub/webhook": "billing",
        "/api/v1/pages": "news", "/api/v1/pages/p1": "news", "/api/v1/comments": "news", "/api/v1/likes": "news",
        "/api/v1/preferences": "notification", "/api/v1/notifications/counters": "notification",
        "/api/v1/subscriptions": "notification", "/socket.io/": "notification",
        "/users/signUp": "auth", "/.well-known/jwks.json": "auth", "/oauth/token": "auth",
        "/signup": "auth", "/reset-password": "auth", "/join/h1": "hotel",
        "/members/": "members", "/workspaces/w1": "members",
    }
    for path, target in expected.items():
        service = _route(ingresses, path)
        assert service and services[service] == target, f"{path} -> {service}"


def test_rendered_manifests_counted_per_kind(default_docs, everything_docs):
    """The figures of the closing note (printed with -s)."""
    for name, docs in (("default", default_docs), ("everything-on", everything_docs)):
        kinds = Counter(doc["kind"] for doc in docs)
        print(f"\n{name}: {len(docs)} manifests: " + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())))
        assert kinds["Deployment"] >= len(TARGETS)


def test_the_bundled_postgresql_takes_every_pods_pools_at_their_fullest(default_docs):
    """Each target pod may hold pool + overflow connections through the ORM and pool more for hot reads
    (roomee.kit.db); the bundled server's max_connections must take them all, plus the migrations Job."""
    from roomee.kit.settings import Settings

    fields = Settings.model_fields
    per_pod = 2 * fields["db_pool_size"].default + fields["db_max_overflow"].default
    pods = sum(d["spec"]["replicas"] for d in by_kind(default_docs, "Deployment") if target_of(d) != "operator")
    (server,) = [s for s in by_kind(default_docs, "StatefulSet") if "postgres" in s["metadata"]["name"]]
    args = server["spec"]["template"]["spec"]["containers"][0]["args"]
    max_connections = int(args[args.index("-c") + 1].removeprefix("max_connections="))
    assert max_connections >= pods * per_pod + per_pod, (pods, per_pod, max_connections)
