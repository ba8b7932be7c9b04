import os

import pytest

from tests.fixtures.platform import BACKEND, drop_test_resources, make_settings, running_platform


# Tests whose outcome does not depend on the storage and broker backend: the chart, dashboards and alerts,
# the CRDs and the operator (it only speaks HTTP to the platform), the OpenAPI fuzzing (its slow part is
# generating requests), and the broker-fault tests, which run on RabbitMQ whatever the backend. CI runs
# them once, with the PostgreSQL + RabbitMQ pass, and runs the rest on both backends
# (ROOMEE_TEST_SCOPE=backend on the embedded pass).
BACKEND_INDEPENDENT = (
    "tests/deploy/",
    "tests/k8s_operator/",
    "tests/e2e/test_openapi_conformance.py",
    "tests/e2e/test_broker_outage.py",
    "tests/e2e/test_news_media_broker_outage.py",
    "tests/kit/events/test_broker_start.py",
)
SCOPE = os.environ.get("ROOMEE_TEST_SCOPE", "all")
if SCOPE not in ("all", "backend"):
    raise RuntimeError(f"ROOMEE_TEST_SCOPE must be 'all' or 'backend', not {SCOPE!r}")


def pytest_report_header(config):
    return f"roomee test backend: {BACKEND}; scope: {SCOPE}"


def pytest_collection_modifyitems(config, items):
    if SCOPE != "backend":
        return
    root = config.rootpath
    independent = [item for item in items if item.path.relative_to(root).as_posix().startswith(BACKEND_INDEPENDENT)]
    if independent:
        config.hook.pytest_deselected(items=independent)
        items[:] = [item for item in items if item not in independent]


@pytest.fixture
def settings(tmp_path):
    return make_settings(tmp_path)


@pytest.fixture
async def platform(settings):
    """The whole platform (every target) on real HTTP."""
    async with running_platform(settings) as running:
        yield running


@pytest.fixture(scope="session", autouse=True)
async def _cleanup_real_backend():
    yield
    await drop_test_resources()
