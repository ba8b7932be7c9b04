"""The deployment tests' tools and files: real helm, promtool, prometheus, kubernetes-validate.

The tests install nothing: ``tests/deploy/install-tools.sh`` (run by ``.ci/run``) puts helm in the
virtualenv and Debian's prometheus on the machine. A missing tool fails the test under CI and
skips it elsewhere, naming the command that installs it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "roomee"
VALUES = Path(__file__).resolve().parent / "values"
DASHBOARDS = ROOT / "dashboards"
RULES = DASHBOARDS / "alerts" / "roomee.rules.yaml"
RULE_TESTS = DASHBOARDS / "alerts" / "roomee.rules.test.yaml"
INSTALL = "bash tests/deploy/install-tools.sh"
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest schemas known.
KUBERNETES_VERSIONS = ("1.25.0", "1.37.0")


def tool(name: str) -> str:
    """Path of a tool from the virtualenv or PATH; fails under CI, skips elsewhere, when absent."""
    found = shutil.which(name, path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if found:
        return found
    message = f"{name} is not installed: run `{INSTALL}`"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def run(*args: str, check: bool = True, stdin: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    result = subprocess.run(
        list(args), input=stdin, capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


def helm_template(*args: str, release: str = "roomee", namespace: str = "roomee", crds: bool = False) -> str:
    command = [tool("helm"), "template", release, str(CHART), "--namespace", namespace, *args]
    if crds:
        command.append("--include-crds")
    return run(*command).stdout


def manifests(rendered: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [doc for doc in docs if doc["kind"] == kind]


def target_of(deployment: dict) -> str:
    """The `--target` a Deployment runs."""
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    return args[args.index("--target") + 1]
