import pytest

from tests.fixtures.platform import BACKEND, drop_test_resources, make_settings, running_platform


def pytest_report_header(config):
    return f"roomee test backend: {BACKEND}"


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
