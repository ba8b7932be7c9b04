"""Object storage down in the middle of the media flows: work is delayed (503, retried), never lost
or counted twice. A GCS emulator of this test's own, on disk, is stopped and started again."""

from __future__ import annotations

import asyncio
from urllib.parse import urlparse

import pytest

from tests.fixtures.gcs import gcs_settings, start_fake_gcs
from tests.fixtures.media import grant_storage, jpeg, presign, put_object
from tests.fixtures.people import make_admin
from tests.fixtures.platform import make_settings, running_platform
from tests.media.conftest import MEDIA_TARGETS


@pytest.fixture
def own_gcs(tmp_path):
    root = tmp_path / "gcs"
    root.mkdir()
    gcs = start_fake_gcs(root=root)
    holder = {"gcs": gcs, "root": root}
    try:
        yield holder
    finally:
        holder["gcs"].stop()


def restart(holder) -> None:
    port = urlparse(holder["gcs"].url).port
    holder["gcs"] = start_fake_gcs(port=port, root=holder["root"])


async def test_storage_outage_delays_completion_and_deletion(tmp_path, own_gcs):
    overrides = gcs_settings(own_gcs["gcs"], tmp_path) | {"media_storage_timeout_seconds": 1.0}
    bucket = overrides["media_gcs_bucket"]
    async with running_platform(make_settings(tmp_path, **overrides), MEDIA_TARGETS) as running, \
            running.client() as client:
        admin = await make_admin(running, client, "admin@example.com")
        await grant_storage(running, admin.hotel_id, 10)
        photo = jpeg(640, 480, orientation=3)
        signed = (await presign(client, admin, photo, "image/jpeg")).json()
        assert (await put_object(signed, photo)).status_code == 200

        own_gcs["gcs"].stop()
        down = await client.post("/media/upload-complete", json={"id": signed["id"]}, headers=admin.headers)
        assert down.status_code == 503 and down.json()["error"] == "storage_unavailable", down.text
        pending = await client.get(f"/media/{signed['id']}", headers=admin.headers)
        assert pending.json()["status"] == "pending"
        storage = (await client.get("/media/storage", headers=admin.headers)).json()
        assert (storage["usedBytes"], storage["reservedBytes"]) == (0, len(photo))

        restart(own_gcs)
        done = await client.post("/media/upload-complete", json={"id": signed["id"]}, headers=admin.headers)
        assert done.status_code == 200, done.text
        used = (await client.get("/media/storage", headers=admin.headers)).json()
        assert used["reservedBytes"] == 0 and used["usedBytes"] > len(photo)

        # Deleting while storage is down: the bytes are released at once, the objects go once it is back.
        own_gcs["gcs"].stop()
        assert (await client.delete(f"/media/{signed['id']}", headers=admin.headers)).status_code == 204
        assert (await client.get("/media/storage", headers=admin.headers)).json()["usedBytes"] == 0
        restart(own_gcs)
        assert own_gcs["gcs"].object_names(bucket)  # still there: nothing removed them yet
        running.platform.services["media"].state["sweep_wakeup"].set()
        for _ in range(100):
            if not own_gcs["gcs"].object_names(bucket):
                break
            await asyncio.sleep(0.1)
        assert own_gcs["gcs"].object_names(bucket) == []


async def test_a_server_upload_cut_short_is_taken_over_by_its_retry_or_swept(local_media_platform):
    from datetime import timedelta

    from roomee.kit.clock import utcnow
    from roomee.media.storage import StorageError
    from tests.fixtures.media import png, service_upload

    running = local_media_platform
    state = running.platform.services["media"].state
    storage = state["storage"]
    real_write = storage.write

    async def failing_original(key, data, content_type):
        if key.endswith("/original"):
            raise StorageError("disk unavailable")
        await real_write(key, data, content_type)

    async with running.client() as client:
        admin = await make_admin(running, client, "admin@example.com")
        hotel = await running.service_headers("hotel")
        storage.write = failing_original
        cut = await service_upload(client, hotel, admin.hotel_id, png(), idempotency_key="qr-h1")
        assert cut.status_code == 503 and cut.json()["error"] == "storage_unavailable"
        other = await service_upload(client, hotel, admin.hotel_id, png(30, 30), idempotency_key="qr-h2")
        assert other.status_code == 503
        storage.write = real_write

        # The retry with the same key finishes the same media; nothing is counted twice.
        retried = await service_upload(client, hotel, admin.hotel_id, png(), idempotency_key="qr-h1")
        assert retried.status_code == 201, retried.text
        again = await service_upload(client, hotel, admin.hotel_id, png(), idempotency_key="qr-h1")
        assert again.json()["id"] == retried.json()["id"]
        used = (await client.get("/media/storage", headers=admin.headers)).json()["usedBytes"]
        assert used == retried.json()["size"] + len((await client.get(retried.json()["thumbnailUrl"], headers=admin.headers)).content)

        # The one never retried: once its time is up the sweeper removes its thumbnail; nothing is counted.
        media_dir = running.settings.data_dir / "media-objects" / admin.hotel_id
        assert len(list(media_dir.glob("*/thumbnail"))) == 2
        state["clock"] = lambda: utcnow() + timedelta(minutes=16)
        from roomee.media.service import MediaService

        await MediaService(running.platform.services["media"]).sweep()
        assert len(list(media_dir.glob("*/thumbnail"))) == 1
        assert (await client.get("/media/storage", headers=admin.headers)).json()["usedBytes"] == used
