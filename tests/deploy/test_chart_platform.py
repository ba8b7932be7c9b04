"""`helm install roomee charts/roomee` alone: a platform on shared engines and one kept Secret.

The default values render the bundled PostgreSQL and RabbitMQ, one generated Secret and the
migrations Job, and no target without the shared database and broker; production-style values
render none of the bundled parts; a value the platform cannot run without fails the render with its
name. (The rendered objects run in containers in test_cluster.py.)
"""

from __future__ import annotations

import base64
import re

import pytest
import yaml

from roomee.kit.auth import KeyStore
from roomee.kit.settings import Settings
from tests.deploy.tools import CHART, VALUES, by_kind, helm_template, manifests, run, target_of, tool

PRODUCTION = str(VALUES / "production.yaml")
GENERATED_KEYS = {"service-secret", "cursor-secret", "media-signing-secret", "operator-client-secret",
                  "postgresql-password", "rabbitmq-password", "signing-key.pem", "database-url", "broker-url"}


@pytest.fixture(scope="module")
def default_docs() -> list[dict]:
    return manifests(helm_template())


@pytest.fixture(scope="module")
def production_docs() -> list[dict]:
    return manifests(helm_template("-f", PRODUCTION, namespace="prod"))


def _pods(docs: list[dict]) -> list[tuple[str, dict]]:
    """(name, pod spec) of every Deployment, StatefulSet and Job."""
    return [(d["metadata"]["name"], d["spec"]["template"]["spec"]) for d in docs
            if d["kind"] in ("Deployment", "StatefulSet", "Job")]


def _roomee_containers(docs: list[dict]) -> list[tuple[str, dict]]:
    """Every container running the Roomee image (targets, operator, migrations)."""
    return [(name, c) for name, pod in _pods(docs) for c in pod["containers"] if c.get("args", [])[:1] in (["run"], ["migrate"])]


def _platform_containers(docs: list[dict]) -> list[tuple[str, dict]]:
    """The Roomee containers that get the platform's env and Secret: all but the operator's, which gets only
    what it reads (tests/k8s_operator/test_chart_operator.py)."""
    return [(name, c) for name, c in _roomee_containers(docs) if not name.endswith("-operator")]


def _env(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container["env"]}


def _secret_ref(container: dict, name: str) -> tuple[str, str]:
    ref = _env(container)[name]["valueFrom"]["secretKeyRef"]
    return ref["name"], ref["key"]


def _fails(*args: str) -> str:
    result = run(tool("helm"), "template", "roomee", str(CHART), *args, check=False)
    assert result.returncode != 0, f"helm template {' '.join(args)} rendered"
    return result.stderr


def test_default_values_render_no_roomee_container_without_the_shared_database_and_broker(default_docs):
    # Seven targets, the operator and the migrations Job; all but the operator share the database and broker.
    assert len(_roomee_containers(default_docs)) == 9
    containers = _platform_containers(default_docs)
    assert len(containers) == 8
    for name, container in containers:
        assert _secret_ref(container, "ROOMEE_DATABASE_URL") == ("roomee-secrets", "database-url"), name
        assert _secret_ref(container, "ROOMEE_BROKER_URL") == ("roomee-secrets", "broker-url"), name
        assert _secret_ref(container, "ROOMEE_SERVICE_SECRET") == ("roomee-secrets", "service-secret"), name
        assert _secret_ref(container, "ROOMEE_CURSOR_SECRET")[0] == "roomee-secrets"
        env = _env(container)
        assert env["ROOMEE_AUTO_MIGRATE"]["value"] == "false"
        # No secret is ever a plain value, no setting is left to a per-pod default.
        assert not any("value" in e and re.search("SECRET|PASSWORD|_KEY$|DATABASE_URL|BROKER_URL", e["name"])
                       for e in container["env"]), name


def test_one_generated_secret_kept_across_upgrades_with_urls_naming_the_bundled_services(default_docs):
    [secret] = by_kind(default_docs, "Secret")
    assert secret["metadata"]["name"] == "roomee-secrets"
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    data = {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}
    assert set(data) == GENERATED_KEYS
    assert all(len(data[key]) >= 32 for key in ("service-secret", "cursor-secret", "media-signing-secret",
                                                 "operator-client-secret", "postgresql-password", "rabbitmq-password"))
    independent = ("service-secret", "cursor-secret", "media-signing-secret", "operator-client-secret")
    assert len({data[k] for k in independent}) == len(independent)
    # The operator's client secret is its own, not the one service-secret derives (which every pod with
    # service-secret could compute); auth and the operator's pod read it from the same key.
    assert data["operator-client-secret"] != Settings(service_secret=data["service-secret"]).client_secret_of("operator")
    deployments = {target_of(d): d["spec"]["template"]["spec"]["containers"][0] for d in by_kind(default_docs, "Deployment")}
    assert _secret_ref(deployments["auth"], "ROOMEE_OPERATOR_CLIENT_SECRET") == ("roomee-secrets", "operator-client-secret")
    assert _secret_ref(deployments["operator"], "ROOMEE_OPERATOR_CLIENT_SECRET") == ("roomee-secrets", "operator-client-secret")
    services = {s["metadata"]["name"]: s for s in by_kind(default_docs, "Service")}
    assert data["database-url"] == (
        f"postgresql://roomee:{data['postgresql-password']}@roomee-postgresql:5432/roomee")
    assert data["broker-url"] == f"amqp://roomee:{data['rabbitmq-password']}@roomee-rabbitmq:5672/"
    assert services["roomee-postgresql"]["spec"]["ports"][0]["port"] == 5432
    assert services["roomee-rabbitmq"]["spec"]["ports"][0]["port"] == 5672


def test_the_generated_signing_key_is_what_the_auth_target_loads(default_docs, tmp_path):
    [secret] = by_kind(default_docs, "Secret")
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "signing-key.pem").write_bytes(base64.b64decode(secret["data"]["signing-key.pem"]))
    store = KeyStore(Settings(auth_keys_dir=tmp_path / "keys", data_dir=tmp_path / "data"))
    assert store.signing_key.private_key.key_size >= 2048
    assert list((tmp_path / "keys").iterdir()) == [tmp_path / "keys" / "signing-key.pem"]  # nothing generated
    [auth] = [d for d in by_kind(default_docs, "Deployment") if target_of(d) == "auth"]
    pod = auth["spec"]["template"]["spec"]
    [volume] = [v for v in pod["volumes"] if v["name"] == "signing-keys"]
    # Only the key is mounted: auth loads every *.pem of the directory.
    assert volume["secret"] == {"secretName": "roomee-secrets",
                                "items": [{"key": "signing-key.pem", "path": "signing-key.pem"}]}
    [container] = pod["containers"]
    [mount] = [m for m in container["volumeMounts"] if m["name"] == "signing-keys"]
    assert _env(container)["ROOMEE_AUTH_KEYS_DIR"]["value"] == mount["mountPath"] and mount["readOnly"]


@pytest.mark.parametrize("engine, port, probe", [("postgresql", 5432, "exec"), ("rabbitmq", 5672, "tcpSocket")])
def test_bundled_engines_are_single_node_stateful_sets_on_the_official_env_contract(default_docs, engine, port, probe):
    [sts] = [s for s in by_kind(default_docs, "StatefulSet") if s["metadata"]["name"] == f"roomee-{engine}"]
    assert sts["spec"]["replicas"] == 1 and sts["spec"]["serviceName"] == f"roomee-{engine}"
    [claim] = sts["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"] and claim["spec"]["resources"]["requests"]["storage"]
    pod = sts["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["automountServiceAccountToken"] is False
    [container] = pod["containers"]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert probe in container["readinessProbe"]
    assert any(p["containerPort"] == port for p in container["ports"])
    env = _env(container)
    if engine == "postgresql":
        assert container["image"] == "docker.io/library/postgres:15"
        assert env["POSTGRES_USER"]["value"] == "roomee" and env["POSTGRES_DB"]["value"] == "roomee"
        assert _secret_ref(container, "POSTGRES_PASSWORD") == ("roomee-secrets", "postgresql-password")
        assert container["readinessProbe"]["exec"]["command"][0] == "pg_isready"
    else:
        assert container["image"] == "docker.io/library/rabbitmq:3.10-management"
        assert env["RABBITMQ_DEFAULT_USER"]["value"] == "roomee"
        assert _secret_ref(container, "RABBITMQ_DEFAULT_PASS") == ("roomee-secrets", "rabbitmq-password")
    [service] = [s for s in by_kind(default_docs, "Service") if s["metadata"]["name"] == f"roomee-{engine}"]
    assert service["spec"]["selector"].items() <= sts["spec"]["template"]["metadata"]["labels"].items()


def test_media_keeps_local_files_on_one_claim_with_one_replica(default_docs):
    [media] = [d for d in by_kind(default_docs, "Deployment") if target_of(d) == "media"]
    assert media["spec"]["replicas"] == 1 and media["spec"]["strategy"] == {"type": "Recreate"}
    pod = media["spec"]["template"]["spec"]
    [data] = [v for v in pod["volumes"] if v["name"] == "data"]
    [claim] = by_kind(default_docs, "PersistentVolumeClaim")
    assert data["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"] == "roomee-media"
    env = _env(pod["containers"][0])
    assert env["ROOMEE_MEDIA_STORAGE"]["value"] == "local"
    # Signed upload URLs go to clients: the public URL, not the in-cluster Service.
    assert env["ROOMEE_MEDIA_MEDIA_URL"]["value"] == env["ROOMEE_PUBLIC_URL"]["value"]
    assert env["ROOMEE_MEDIA_URL"]["value"] == "http://roomee-media:80"


def test_production_values_render_no_bundled_engine_and_no_secret(production_docs):
    kinds = {d["kind"] for d in production_docs}
    assert "StatefulSet" not in kinds and "Secret" not in kinds and "PersistentVolumeClaim" not in kinds
    assert not any(s["metadata"]["name"].endswith(("-postgresql", "-rabbitmq")) for s in by_kind(production_docs, "Service"))
    for name, container in _platform_containers(production_docs):
        assert _secret_ref(container, "ROOMEE_DATABASE_URL") == ("roomee-db-app", "uri"), name
        assert _secret_ref(container, "ROOMEE_BROKER_URL") == ("roomee-broker", "broker-url"), name
        assert _secret_ref(container, "ROOMEE_SERVICE_SECRET") == ("roomee-secrets", "service-secret"), name
        env = _env(container)
        assert env["ROOMEE_PUBLIC_URL"]["value"] == "https://roomee.example.com"
        assert env["ROOMEE_FORWARDED_ALLOW_IPS"]["value"] == "10.244.0.0/16"
        assert env["ROOMEE_EMAIL_BACKEND"]["value"] == "sendgrid"
        assert env["ROOMEE_SENDGRID_API_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "roomee-secrets"
        assert env["ROOMEE_MEDIA_STORAGE"]["value"] == "gcs" and env["ROOMEE_MEDIA_GCS_BUCKET"]["value"] == "roomee-media"
        assert env["ROOMEE_PUSH_BACKEND"]["value"] == "onesignal"
    replicas = {target_of(d): d["spec"]["replicas"] for d in by_kind(production_docs, "Deployment")}
    assert replicas["media"] == 2
    [auth] = [d for d in by_kind(production_docs, "Deployment") if target_of(d) == "auth"]
    volumes = auth["spec"]["template"]["spec"]["volumes"]
    assert {"name": "signing-keys", "secret": {"secretName": "roomee-signing-keys"}} in volumes


def test_an_existing_secret_alone_turns_the_bundled_engines_off():
    docs = manifests(helm_template("--set", "secrets.existingSecret=mine", "--set", "secrets.signingKeysSecret=keys"))
    assert not by_kind(docs, "StatefulSet") and not by_kind(docs, "Secret")
    for name, container in _platform_containers(docs):
        assert _secret_ref(container, "ROOMEE_DATABASE_URL") == ("mine", "database-url"), name


def test_external_database_with_generated_secrets_keeps_the_bundled_broker():
    docs = manifests(helm_template("--set", "externalDatabase.existingSecret=pg-app", "--set", "externalDatabase.urlKey=uri"))
    assert [s["metadata"]["name"] for s in by_kind(docs, "StatefulSet")] == ["roomee-rabbitmq"]
    [secret] = by_kind(docs, "Secret")
    assert "database-url" not in secret["data"] and "broker-url" in secret["data"]
    for name, container in _platform_containers(docs):
        assert _secret_ref(container, "ROOMEE_DATABASE_URL") == ("pg-app", "uri"), name
        assert _secret_ref(container, "ROOMEE_BROKER_URL") == ("roomee-secrets", "broker-url"), name


@pytest.mark.parametrize(
    "args, named",
    [
        (["--set", "postgresql.enabled=false"], "externalDatabase.existingSecret"),
        (["--set", "rabbitmq.enabled=false"], "externalBroker.existingSecret"),
        (["--set", "targets.media.replicas=2"], "targets.media.replicas"),
        (["--set", "media.storage=gcs"], "media.gcs.bucket"),
        (["--set", "email.backend=smtp"], "email.smtp.host"),
        (["--set", "email.backend=smtp", "--set", "email.smtp.host=mx", "--set", "email.smtp.implicitTls=true"],
         "email.smtp.implicitTls"),
        (["--set", "push.backend=onesignal"], "push.onesignal.appId"),
        (["--set", "secrets.existingSecret=mine"], "secrets.signingKeysSecret"),
    ],
    ids=["no-database", "no-broker", "local-media-replicas", "gcs-bucket", "smtp-host", "smtp-tls-modes",
         "onesignal-app", "signing-keys"],
)
def test_a_missing_or_contradicting_value_fails_the_render_naming_it(args, named):
    assert named in _fails(*args)


def test_structured_values_are_refused_in_config():
    """A setting with a value of its own is not given twice (config would silently lose or win)."""
    assert "ROOMEE_EMAIL_BACKEND" in _fails("--set", "config.ROOMEE_EMAIL_BACKEND=smtp")


def test_urls_trusted_proxies_and_provider_settings_from_values():
    docs = manifests(helm_template(
        "--set", "ingress.enabled=true", "--set", "ingress.hosts={roomee.test}",
        "--set", "trustedProxies={10.42.0.0/16,192.168.1.10}",
        "--set", "hotelJoin.appUrl=https://app.roomee.test/join",
        "--set", "email.backend=smtp", "--set", "email.smtp.host=mx.roomee.test", "--set", "email.smtp.username=roomee",
    ))
    [auth] = [d for d in by_kind(docs, "Deployment") if target_of(d) == "auth"]
    env = _env(auth["spec"]["template"]["spec"]["containers"][0])
    # No TLS entry covers the host: plain http, not a https link nothing answers.
    assert env["ROOMEE_PUBLIC_URL"]["value"] == "http://roomee.test"
    assert env["ROOMEE_FORWARDED_ALLOW_IPS"]["value"] == "10.42.0.0/16,192.168.1.10"
    assert env["ROOMEE_HOTEL_JOIN_APP_URL"]["value"] == "https://app.roomee.test/join"
    assert "ROOMEE_SIGNUP_URL" not in env and "ROOMEE_HOTEL_JOIN_URL" not in env  # the built-in pages
    assert env["ROOMEE_SMTP_HOST"]["value"] == "mx.roomee.test" and env["ROOMEE_SMTP_PORT"]["value"] == "587"
    assert env["ROOMEE_SMTP_STARTTLS"]["value"] == "true" and env["ROOMEE_SMTP_USERNAME"]["value"] == "roomee"
    assert env["ROOMEE_SMTP_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "roomee-secrets", "key": "smtp-password", "optional": True}
    tls = manifests(helm_template("--set", "ingress.enabled=true", "--set", "ingress.hosts={roomee.test}",
                                  "--set", "ingress.tls[0].secretName=t", "--set", "ingress.tls[0].hosts={roomee.test}"))
    [auth] = [d for d in by_kind(tls, "Deployment") if target_of(d) == "auth"]
    assert _env(auth["spec"]["template"]["spec"]["containers"][0])["ROOMEE_PUBLIC_URL"]["value"] == "https://roomee.test"


def test_every_setting_the_chart_renders_exists_in_the_settings():
    """Every env name the chart writes is a field of roomee.kit.settings or of the operator's settings
    (ROOMEE_MEDIA_* overrides included)."""
    from roomee.operator.settings import OperatorSettings

    rendered = helm_template("-f", str(VALUES / "everything-on.yaml"))
    names = set(re.findall(r"name: (ROOMEE_[A-Z0-9_]+)", rendered))
    fields = {f"ROOMEE_{name.upper()}" for name in OperatorSettings.model_fields}
    per_service = {f"ROOMEE_{t.upper()}_{f.upper()}" for t in ("media",) for f in Settings.model_fields}
    assert {"ROOMEE_FORWARDED_ALLOW_IPS", "ROOMEE_HOTEL_JOIN_APP_URL", "ROOMEE_RESET_PASSWORD_URL"} <= names
    assert names - fields - per_service == set()


def test_values_file_of_the_docs_is_the_tested_one():
    docs = (CHART.parents[1] / "docs" / "deploy.md").read_text()
    production = yaml.safe_load(open(PRODUCTION))
    assert production["externalDatabase"]["urlKey"] in docs and production["externalBroker"]["urlKey"] in docs
    assert "tests/deploy/values/production.yaml" in docs
