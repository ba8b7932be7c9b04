"""skaffold.yaml: what skaffold would build and deploy, read the way skaffold reads it."""

from __future__ import annotations

import glob
import re

import yaml

from tests.deploy.tools import CHART, ROOT, helm_template, manifests, run, target_of, tool

SKAFFOLD = ROOT / "skaffold.yaml"


def config() -> dict:
    return yaml.safe_load(SKAFFOLD.read_text())


def profile(name: str) -> dict:
    return next(p for p in config()["profiles"] if p["name"] == name)


def test_a_current_v4beta_schema_and_the_image_built_from_the_dockerfile():
    skaffold = config()
    assert re.fullmatch(r"skaffold/v4beta\d+", skaffold["apiVersion"]) and int(skaffold["apiVersion"][15:]) >= 11
    assert skaffold["kind"] == "Config"
    [artifact] = skaffold["build"]["artifacts"]
    assert artifact["image"] == "roomee"
    dockerfile = ROOT / artifact.get("context", ".") / artifact["docker"]["dockerfile"]
    assert dockerfile.resolve() == (ROOT / "Dockerfile").resolve() and dockerfile.exists()


def _releases(deploy: dict) -> list[dict]:
    releases = deploy["helm"]["releases"]
    for release in releases:
        assert (ROOT / release["chartPath"]).resolve() == CHART.resolve()
        # The built image (skaffold's templated repo/tag/digest) is what the chart runs.
        assert release["setValueTemplates"]["image.repository"] == "{{.IMAGE_REPO_roomee}}"
        assert "{{.IMAGE_TAG_roomee}}" in release["setValueTemplates"]["image.tag"]
        # Helm installs the chart's crds/ (the Hotel and Workspace CRDs) unless told to skip them.
        assert not release.get("skipCRDs", False)
    return releases


def test_the_release_deploys_the_chart_with_its_crds_and_forwards_every_target():
    [release] = _releases(config()["deploy"])
    assert release["namespace"] == "roomee" and release["createNamespace"]
    assert sorted(p.name for p in (CHART / "crds").glob("*.yaml")) == ["hotels.roomee.io.yaml", "workspaces.roomee.io.yaml"]
    # Port-forwards name Services the release really renders.
    docs = manifests(helm_template(release=release["name"], namespace=release["namespace"]))
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    forwarded = {f["resourceName"] for f in config()["portForward"]}
    deployments = {target_of(d) for d in docs if d["kind"] == "Deployment"} - {"operator"}
    assert forwarded == {f"roomee-{target}" for target in deployments}
    for forward in config()["portForward"]:
        assert forward["port"] == services[forward["resourceName"]]["spec"]["ports"][0]["port"]


def test_the_dev_profile_adds_postgresql_rabbitmq_and_points_the_release_at_them(tmp_path):
    dev = profile("dev")
    files = [path for pattern in dev["manifests"]["rawYaml"] for path in sorted(glob.glob(str(ROOT / pattern)))]
    docs = [doc for path in files for doc in yaml.safe_load_all(open(path)) if doc]
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    images = {c["image"].split(":")[0] for d in deployments.values() for c in d["spec"]["template"]["spec"]["containers"]}
    assert images == {"postgres", "rabbitmq"}
    assert all(d["spec"]["replicas"] == 1 for d in deployments.values())
    [secret] = [d for d in docs if d["kind"] == "Secret"]
    assert "kubectl" in dev["deploy"]
    [release] = _releases(dev["deploy"])
    values = [ROOT / v for v in release["valuesFiles"]]
    dev_values = yaml.safe_load(values[0].read_text())
    assert dev_values["secrets"]["existingSecret"] == secret["metadata"]["name"]
    # The secret holds every required key, and its URLs name the dev Services.
    rendered = manifests(helm_template(*[a for v in values for a in ("-f", str(v))], release=release["name"]))
    required = yaml.safe_load((CHART / "values.yaml").read_text())["secrets"]["required"].values()
    assert set(required) <= set(secret["stringData"])
    services = {d["metadata"]["name"] for d in docs if d["kind"] == "Service"}
    for key in ("database-url", "broker-url"):
        host = re.search(r"@([^:/]+)", secret["stringData"][key]).group(1)
        assert host in services
    assert all(d["spec"]["replicas"] == 1 for d in rendered if d["kind"] == "Deployment")
    # And the dev manifests are valid Kubernetes objects.
    result = run(tool("kubernetes-validate"), "--strict", *files, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
