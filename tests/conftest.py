import os
import socket
from urllib.parse import urlsplit

import pytest

from tests.fixtures.platform import AMQP_URL, BACKEND, drop_test_resources, make_settings, running_platform


# Tests run once, in the pass on the embedded defaults (the README's command, which runs everything), and are
# left out of the PostgreSQL + RabbitMQ pass (ROOMEE_TEST_SCOPE=backend) because it would only repeat them:
# - what does not touch storage or the broker: the chart, the cluster run of the rendered chart (its own
#   PostgreSQL and RabbitMQ in containers), dashboards and alerts, the CRDs and the operator (it only speaks
#   HTTP to the platform), the OpenAPI fuzzing (its slow part is generating requests), token, cursor,
#   breaker, HTTP-client and settings checks, validation and route guards (refused before any query), the
#   body limit, the metrics listener, the access log, the proxy throttles, the Socket.IO protocol, the
#   provider channels, the layout;
# - what always runs on RabbitMQ whatever the backend: the broker-fault tests (the three-node RabbitMQ cluster
#   test runs in the PostgreSQL + RabbitMQ pass, on the database a clustered broker is deployed with).
# Everything else runs on both: the event bus, migrations, sagas, every service's SQL (auth's sessions and
# members' change feed included: their row locks and feeds are what PostgreSQL checks), the end-to-end flows.
BACKEND_INDEPENDENT = (
    "tests/deploy/",
    "tests/k8s_operator/",
    "tests/e2e/test_openapi_conformance.py",
    "tests/e2e/test_broker_outage.py",
    "tests/e2e/test_news_media_broker_outage.py",
    "tests/kit/events/test_broker_start.py",
    "tests/kit/test_breaker.py",
    "tests/kit/test_cursors.py",
    "tests/kit/test_http_client.py",
    "tests/kit/test_limits.py",
    "tests/kit/test_metrics_port.py",
    "tests/kit/test_served_logs.py",
    "tests/kit/test_observability.py",
    "tests/kit/test_production_settings.py",
    "tests/kit/test_token_checks.py",
    "tests/auth/test_throttles_proxy.py",
    "tests/billing/test_permissions.py",
    "tests/hotel/test_remote_paths.py",
    "tests/hotel/test_route_guards.py",
    "tests/media/test_route_guards.py",
    "tests/news/test_route_guards.py",
    "tests/notification/test_channels_email.py",
    "tests/notification/test_channels_push.py",
    "tests/notification/test_rules.py",
    "tests/notification/test_socket_js_client.py",
    "tests/notification/test_socket_protocol.py",
    "tests/notification/test_realtime_transport.py",
    "tests/test_layout.py",
)
# Tests that stop, cut or cluster RabbitMQ whatever the backend. On a fresh machine without RabbitMQ they skip
# (the embedded defaults are what a newcomer has); in CI (CI=1) they run, and fail if it is absent.
NEEDS_RABBITMQ = (
    "tests/e2e/test_broker_outage.py",
    "tests/e2e/test_news_media_broker_outage.py",
    "tests/kit/events/test_broker_cluster.py",
    "tests/kit/test_startup.py::test_a_broker_that_comes_back_gets_the_events_flowing",
)
SCOPE = os.environ.get("ROOMEE_TEST_SCOPE", "all")
if SCOPE not in ("all", "backend"):
    raise RuntimeError(f"ROOMEE_TEST_SCOPE must be 'all' or 'backend', not {SCOPE!r}")


def pytest_report_header(config):
    return f"roomee test backend: {BACKEND}; scope: {SCOPE}"


def _rabbitmq_answers() -> bool:
    address = urlsplit(AMQP_URL)
    try:
        with socket.create_connection((address.hostname or "127.0.0.1", address.port or 5672), timeout=2):
            return True
    except OSError:
        return False


def pytest_collection_modifyitems(config, items):
    if BACKEND != "real" and not os.environ.get("CI") and not _rabbitmq_answers():
        skip = pytest.mark.skip(reason=f"needs RabbitMQ at {AMQP_URL} (CI=1 runs it and fails without it)")
        for item in items:
            if item.nodeid.startswith(NEEDS_RABBITMQ):
                item.add_marker(skip)
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


def pytest_unconfigure(config):
    """End the worker thread of every SQLite connection still open: aiosqlite's threads are not daemons, so
    one connection a test left open (an engine never disposed, a connect cancelled) keeps the interpreter
    from exiting after the session has reported. Each worker takes calls from the queue it was started with;
    a call returning aiosqlite's stop sentinel ends it."""
    import threading

    from aiosqlite import core

    for thread in threading.enumerate():
        if getattr(thread, "_target", None) is core._connection_worker_thread and thread.is_alive():
            thread._args[0].put_nowait((None, lambda: core._STOP_RUNNING_SENTINEL))
