"""The Dockerfile: hadolint finds nothing, and the image holds every target, the operator too,
and runs as the non-root user the chart's securityContext expects."""

from __future__ import annotations

import re

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
