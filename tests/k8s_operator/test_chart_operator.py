"""The operator's part of the Helm chart (rendered by real helm): two replicas with a rolling
update, the identity and Lease namespace from the pod (fieldRef), a Role for its Lease only, and
aggregated ClusterRoles letting namespace users read and edit Hotels and Workspaces; its pod gets only
the settings and credentials roomee.operator reads."""

from __future__ import annotations

import pytest

from tests.deploy.tools import VALUES, by_kind, helm_template, manifests, target_of


def test_two_replicas_lease_rbac_env_from_the_pod_and_aggregated_roles():
    docs = manifests(helm_template())
    [operator] = [d for d in by_kind(docs, "Deployment") if target_of(d) == "operator"]
    assert operator["spec"]["replicas"] == 2
    assert operator["spec"]["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    env = {e["name"]: e for e in operator["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["ROOMEE_OPERATOR_IDENTITY"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["ROOMEE_OPERATOR_LEASE_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    lease_name = env["ROOMEE_OPERATOR_LEASE_NAME"]["value"]

    [role] = by_kind(docs, "Role")
    assert role["metadata"]["namespace"] == "roomee"
    assert {(tuple(r["verbs"]), tuple(r.get("resourceNames", ()))) for r in role["rules"]} == {
        (("create",), ()), (("get", "update"), (lease_name,))}
    assert all(r["apiGroups"] == ["coordination.k8s.io"] and r["resources"] == ["leases"] for r in role["rules"])
    [binding] = by_kind(docs, "RoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"][0]["name"] == operator["spec"]["template"]["spec"]["serviceAccountName"]

    aggregated = {label: r for r in by_kind(docs, "ClusterRole") for label, value in r["metadata"]["labels"].items()
                  if label.startswith("rbac.authorization.k8s.io/aggregate-to-") and value == "true"}
    assert set(aggregated) == {f"rbac.authorization.k8s.io/aggregate-to-{k}" for k in ("view", "edit", "admin")}
    view = aggregated["rbac.authorization.k8s.io/aggregate-to-view"]
    assert {v for rule in view["rules"] for v in rule["verbs"]} == {"get", "list", "watch"}
    edit = aggregated["rbac.authorization.k8s.io/aggregate-to-edit"]
    assert {"hotels", "workspaces"} <= {res for rule in edit["rules"] for res in rule["resources"]}
    assert {"create", "patch", "delete"} <= {v for rule in edit["rules"] for v in rule["verbs"]}
    assert [b["spec"]["maxUnavailable"] for b in by_kind(docs, "PodDisruptionBudget")
            if b["metadata"]["labels"]["app.kubernetes.io/component"] == "operator"] == [1]


def operator_env(*args: str, namespace: str = "roomee") -> dict[str, dict]:
    docs = manifests(helm_template(*args, namespace=namespace))
    [operator] = [d for d in by_kind(docs, "Deployment") if target_of(d) == "operator"]
    return {e["name"]: e for e in operator["spec"]["template"]["spec"]["containers"][0]["env"]}


def secret(name: str, key: str, optional: bool = False) -> dict:
    return {"secretKeyRef": {"name": name, "key": key, **({"optional": True} if optional else {})}}


@pytest.mark.parametrize("args, namespace, config", [
    ((), "roomee", {"ROOMEE_LOG_LEVEL", "ROOMEE_LOG_FORMAT"}),  # the generated Secret
    # An existing Secret and external engines; its config turns the API docs off (every process gets `config`).
    (("-f", str(VALUES / "production.yaml")), "prod", {"ROOMEE_LOG_LEVEL", "ROOMEE_LOG_FORMAT", "ROOMEE_API_DOCS"}),
])
def test_the_operator_gets_only_the_settings_and_credentials_it_reads(args, namespace, config):
    env = operator_env(*args, namespace=namespace)
    secret_name = "roomee-secrets"  # generated, or production's existingSecret of that name
    # Its listener, the three services it calls, the non-secret config, its own client secret, its Lease.
    assert set(env) == {
        "ROOMEE_HOST", "ROOMEE_PORT", "ROOMEE_AUTH_URL", "ROOMEE_HOTEL_URL", "ROOMEE_MEMBERS_URL",
        "ROOMEE_OPERATOR_CLIENT_SECRET",
        "ROOMEE_OPERATOR_LEASE_NAME", "ROOMEE_OPERATOR_LEASE_NAMESPACE", "ROOMEE_OPERATOR_IDENTITY", *config,
    }, sorted(env)
    # Only its own client secret (required: the pod waits for the key): not the secret every client's
    # secret derives from, nor the map of every client's secret.
    assert env["ROOMEE_OPERATOR_CLIENT_SECRET"]["valueFrom"] == secret(secret_name, "operator-client-secret")
    assert "ROOMEE_SERVICE_SECRET" not in env and "ROOMEE_SERVICE_CLIENT_SECRETS" not in env
    assert {name: env[name]["value"] for name in ("ROOMEE_AUTH_URL", "ROOMEE_HOTEL_URL", "ROOMEE_MEMBERS_URL")} == {
        "ROOMEE_AUTH_URL": "http://roomee-auth:80", "ROOMEE_HOTEL_URL": "http://roomee-hotel:80",
        "ROOMEE_MEMBERS_URL": "http://roomee-members:80"}
    # Every setting named is one the operator's settings have, and every URL one it calls.
    from roomee.operator.settings import OperatorSettings

    assert {name.removeprefix("ROOMEE_").lower() for name in env} <= set(OperatorSettings.model_fields)


def test_the_operator_gets_the_users_config_and_extra_env_but_no_other_credential():
    env = operator_env("--set", "config.ROOMEE_HTTP_TIMEOUT_MS=5000", "--set", "extraEnv[0].name=HTTPS_PROXY",
                       "--set", "extraEnv[0].value=http://proxy:3128", "--set", "secrets.existingSecret=mine",
                       "--set", "secrets.signingKeysSecret=keys")
    assert env["ROOMEE_HTTP_TIMEOUT_MS"]["value"] == "5000" and env["HTTPS_PROXY"]["value"] == "http://proxy:3128"
    assert env["ROOMEE_OPERATOR_CLIENT_SECRET"]["valueFrom"] == secret("mine", "operator-client-secret")
    assert not {"ROOMEE_SERVICE_SECRET", "ROOMEE_SERVICE_CLIENT_SECRETS", "ROOMEE_DATABASE_URL", "ROOMEE_BROKER_URL", "ROOMEE_CURSOR_SECRET", "ROOMEE_STRIPE_API_KEY",
                "ROOMEE_MEDIA_SIGNING_SECRET", "ROOMEE_SENDGRID_API_KEY", "ROOMEE_SMTP_PASSWORD"} & set(env)


def test_the_key_of_the_operators_client_secret_is_a_value():
    env = operator_env("--set", "secrets.existingSecret=mine", "--set", "secrets.signingKeysSecret=keys",
                       "--set", "secrets.operatorClientSecret=roomee-operator")
    assert env["ROOMEE_OPERATOR_CLIENT_SECRET"]["valueFrom"] == secret("mine", "roomee-operator")
