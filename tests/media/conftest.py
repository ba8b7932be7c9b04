import pytest

from tests.fixtures.gcs import fake_gcs, media_storage  # noqa: F401 - fixtures
from tests.fixtures.platform import make_settings, running_platform


@pytest.fixture
async def media_platform(tmp_path, media_storage):
    """The whole platform with the media target on one storage backend (each test runs on both)."""
    async with running_platform(make_settings(tmp_path, **media_storage)) as running:
        running.storage = media_storage
        yield running
