import pytest

from tests.fixtures.kube import running_kube


@pytest.fixture
async def kube(tmp_path):
    """The conforming Kubernetes API (kmock + conformance layer) with the repository's CRDs applied."""
    async with running_kube(tmp_path / "kube") as running:
        yield running
