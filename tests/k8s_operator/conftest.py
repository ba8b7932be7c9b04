import pytest

from tests.fixtures.kube import operator_running, running_kube


@pytest.fixture
async def kube(tmp_path):
    """The conforming Kubernetes API (kmock + conformance layer) with the repository's CRDs applied."""
    async with running_kube(tmp_path / "kube") as running:
        yield running


@pytest.fixture
def run_operator(monkeypatch):
    """Start the operator in this event loop against a kube API and a platform: ``async with run_operator(kube, settings)``."""
    return lambda kube, settings, **overrides: operator_running(monkeypatch, kube, settings, **overrides)
