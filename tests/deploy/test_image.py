"""The Dockerfile: hadolint finds nothing, and the image holds every target, the operator too,
and runs as the non-root user the chart's securityContext expects; the image built from the
checkout imports every module there."""

from __future__ import annotations

import re

import pytest
import yaml

from tests.deploy.tools import CHART, ROOT, run, tool

DOCKERFILE = ROOT / "Dockerfile"


def test_hadolint_finds_nothing():
    result = run(tool("hadolint"), "--no-color", str(DOCKERFILE), check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_carries_services_and_operator_and_runs_as_the_charts_user():
    text = DOCKERFILE.read_text()
    copied = set(re.findall(r"^COPY (?:--from=\S+ )?(\S+)", text, re.M))
    # setuptools maps roomee -> services/roomee and roomee.operator -> operator/ (pyproject.toml).
    assert {"services", "operator", "pyproject.toml"} <= copied
    [user] = re.findall(r"^USER (\S+)", text, re.M)
    uid = int(user.split(":")[0])
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert uid != 0 and uid == values["podSecurityContext"]["runAsUser"] == values["securityContext"]["runAsUser"]
    assert re.search(r'^ENTRYPOINT \["roomee"\]', text, re.M)
    # The writable paths the chart mounts are the ones the image uses.
    assert "ROOMEE_DATA_DIR=/var/lib/roomee" in text
    assert f"EXPOSE {values['containerPort']}" in text


def test_the_built_image_imports_every_module_as_its_user():
    """The image CI builds from this checkout (tests/deploy/cluster/build-images.sh): every module of
    the installed `roomee` imports there, as the non-root user, with the read-only root the chart sets."""
    import json
    import os

    from tests.deploy.cluster.runner import podman, podman_usable
    from tests.deploy.test_wheel import IMPORT_EVERY_MODULE

    why = podman_usable()
    version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    image = f"localhost/roomee:{version}"
    if why is None and podman("image", "exists", image, check=False).returncode != 0:
        why = f"{image} is not built: run `bash tests/deploy/cluster/build-images.sh`"
    if why:
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    result = podman("run", "--rm", "--read-only", "--entrypoint", "python", image, "-c",
                    f"import os; print(os.getuid()); {IMPORT_EVERY_MODULE}", check=False, timeout=300)
    assert result.returncode == 0, result.stderr
    uid, report = result.stdout.splitlines()[0], json.loads(result.stdout.splitlines()[-1])
    assert uid == "10001"
    assert report["failed"] == {} and report["file"].startswith("/opt/roomee/")
    assert any(name.startswith("roomee.operator") for name in report["imported"])
