"""The generated Secret across an upgrade, with helm's `lookup` answered by a Kubernetes API.

`helm template --dry-run=server` renders as `helm upgrade` does, reading live objects from the API
(here the project's Kubernetes API stand-in, tests/fixtures/kube.py). The first render is an
install (nothing to read back); once its Secret exists, every later render keeps each value, keys
added by hand included, and follows the kept passwords in the URLs.
"""

from __future__ import annotations

import asyncio
import base64
import os

import yaml

from roomee.kit.auth import KeyStore
from roomee.kit.settings import Settings
from tests.deploy.tools import CHART, ROOT, tool
from tests.fixtures.kube import Kind, running_kube


async def _render(kubeconfig, *args: str) -> dict:
    """The Secret `helm upgrade` would write now, against the live API."""
    process = await asyncio.create_subprocess_exec(
        tool("helm"), "template", "roomee", str(CHART), "--namespace", "default", "--dry-run=server", *args,
        cwd=ROOT, env={**os.environ, "KUBECONFIG": str(kubeconfig)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    [secret] = [d for d in yaml.safe_load_all(out.decode()) if d and d["kind"] == "Secret"]
    return secret


def _decoded(secret: dict) -> dict[str, str]:
    return {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}


async def test_an_upgrade_keeps_every_generated_value_and_hand_added_keys(tmp_path):
    async with running_kube(tmp_path / "kube", with_crds=False) as kube:
        kube.api.register(Kind("", "v1", "secrets", "Secret", namespaced=True))
        installed = await _render(kube.kubeconfig)
        # Two installs without a live Secret generate different values: the lookup is what keeps them.
        assert _decoded(await _render(kube.kubeconfig))["service-secret"] != _decoded(installed)["service-secret"]
        manifest = tmp_path / "secret.yaml"
        manifest.write_text(yaml.safe_dump(installed))
        await kube.kubectl("apply", "--validate=false", "-f", str(manifest))
        # (data, not stringData: the stand-in does not fold stringData into data as an API server does)
        hand_added = base64.b64encode(b"hunter2").decode()
        await kube.kubectl("patch", "secret", "roomee-secrets", "--type", "merge",
                           "-p", f'{{"data": {{"smtp-password": "{hand_added}"}}}}')

        upgraded = await _render(kube.kubeconfig, "--set", "postgresql.service.port=5433",
                                 "--set", "targets.auth.replicas=3")
        before, after = _decoded(installed), _decoded(upgraded)
        for key in ("service-secret", "cursor-secret", "media-signing-secret", "operator-client-secret",
                    "postgresql-password", "rabbitmq-password", "signing-key.pem", "broker-url"):
            assert after[key] == before[key], key
        assert after["smtp-password"] == "hunter2"
        # The URL follows the changed Service port with the kept password.
        assert after["database-url"] == before["database-url"].replace(":5432/", ":5433/")
        assert upgraded["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"

    # Tokens signed before the upgrade verify after it: the same key, the same key id.
    kids = []
    for name, pem in (("before", before["signing-key.pem"]), ("after", after["signing-key.pem"])):
        (tmp_path / name).mkdir()
        (tmp_path / name / "signing-key.pem").write_text(pem)
        kids.append(KeyStore(Settings(auth_keys_dir=tmp_path / name, data_dir=tmp_path / "data")).signing_key.kid)
    assert kids[0] == kids[1]


async def test_an_upgrade_adds_the_operators_client_secret_to_a_secret_from_before_it_then_keeps_it(tmp_path):
    """A release installed before the chart had `operator-client-secret`: the first upgrade generates it
    (the other keys kept), the next keeps it."""
    async with running_kube(tmp_path / "kube", with_crds=False) as kube:
        kube.api.register(Kind("", "v1", "secrets", "Secret", namespaced=True))
        older = await _render(kube.kubeconfig)
        del older["data"]["operator-client-secret"]
        manifest = tmp_path / "secret.yaml"
        manifest.write_text(yaml.safe_dump(older))
        await kube.kubectl("apply", "--validate=false", "-f", str(manifest))

        first = await _render(kube.kubeconfig)
        assert len(_decoded(first)["operator-client-secret"]) >= 32
        assert {k: v for k, v in _decoded(first).items() if k != "operator-client-secret"} == _decoded(older)
        manifest.write_text(yaml.safe_dump(first))
        await kube.kubectl("apply", "--validate=false", "-f", str(manifest))
        second = await _render(kube.kubeconfig)
        assert _decoded(second)["operator-client-secret"] == _decoded(first)["operator-client-secret"]
