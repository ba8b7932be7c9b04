import pytest

from tests.fixtures.gcs import fake_gcs, media_storage  # noqa: F401 - fixtures
from tests.fixtures.platform import make_settings, running_platform

# What the media routes need: tokens (auth), people (members) and media itself.
MEDIA_TARGETS = "auth,members,media"


@pytest.fixture
async def media_platform(tmp_path, media_storage):
    """The media target on one storage backend (a test using it runs on both), on real HTTP."""
    async with running_platform(make_settings(tmp_path, **media_storage), MEDIA_TARGETS) as running:
        running.storage = media_storage
        yield running


@pytest.fixture
async def local_media_platform(tmp_path):
    """The media target on the local storage backend only (for what only that backend does)."""
    async with running_platform(make_settings(tmp_path, media_storage="local"), MEDIA_TARGETS) as running:
        running.storage = {"media_storage": "local"}
        yield running
