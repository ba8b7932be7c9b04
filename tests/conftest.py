import os

import pytest

from tests.fixtures.platform import BACKEND, drop_test_resources, make_settings, running_platform


# Tests run once, in the PostgreSQL + RabbitMQ pass, because the embedded backend would only repeat them:
# - what does not touch storage or the broker: the chart, dashboards and alerts, the CRDs and the operator
#   (it only speaks HTTP to the platform), the OpenAPI fuzzing (its slow part is generating requests),
#   token, cursor, breaker, HTTP-client and settings checks, validation and route guards (refused before
#   any query), the provider channels, the layout;
# - what always runs on RabbitMQ whatever the backend: the broker-fault tests;
# - auth and members, whose repositories have no backend-specific branch: they run on SQLite under every
#   other test of the embedded pass (each platform serves every target), and their row-lock and change-feed
#   behaviour is what the PostgreSQL pass checks.
# The embedded pass (ROOMEE_TEST_SCOPE=backend) runs the rest: the event bus, migrations, sagas, and the
# services with dialect-specific SQL (billing, hotel, media, news, notification), and the end-to-end flows.
BACKEND_INDEPENDENT = (
    "tests/deploy/",
    "tests/k8s_operator/",
    "tests/e2e/test_openapi_conformance.py",
    "tests/e2e/test_broker_outage.py",
    "tests/e2e/test_news_media_broker_outage.py",
    "tests/kit/events/test_broker_start.py",
    "tests/kit/events/test_broker_cluster.py",
    "tests/kit/test_breaker.py",
    "tests/kit/test_cursors.py",
    "tests/kit/test_http_client.py",
    "tests/kit/test_observability.py",
    "tests/kit/test_production_settings.py",
    "tests/kit/test_token_checks.py",
    "tests/auth/",
    "tests/members/",
    "tests/billing/test_permissions.py",
    "tests/hotel/test_remote_paths.py",
    "tests/hotel/test_route_guards.py",
    "tests/media/test_route_guards.py",
    "tests/news/test_route_guards.py",
    "tests/notification/test_channels_email.py",
    "tests/notification/test_channels_push.py",
    "tests/notification/test_rules.py",
    "tests/notification/test_socket_js_client.py",
    "tests/test_layout.py",
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
