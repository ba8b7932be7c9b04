"""The operator's part of the Helm chart (rendered by real helm): two replicas with a rolling
update, the identity and Lease namespace from the pod (fieldRef), a Role for its Lease only, and
aggregated ClusterRoles letting namespace users read and edit Hotels and Workspaces."""

from __future__ import annotations

from tests.deploy.tools import by_kind, helm_template, manifests, target_of


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
