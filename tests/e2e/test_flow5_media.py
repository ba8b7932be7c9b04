"""Seed Flow 5 end to end, on the local storage backend and on GCS (fake-gcs-server), over real
HTTP and the platform's broker (RabbitMQ on the real backend):

the hotel's ``roomee.storage.media`` event creates the quota → a member asks for a presigned URL →
a plain HTTP PUT of a real JPEG carrying an EXIF rotation, straight to storage → upload-complete →
the thumbnail exists, is upright and within the box, the bytes are counted → the media is used in
an article's ``medias`` and travels in ``page.created``. The refusals (wrong type, oversize, over
quota, expired URL, a body lying about its type) are in tests/media/test_media_api.py, on both
backends too."""

from __future__ import annotations

import io

from PIL import Image

from tests.fixtures.events import event_tap
from tests.fixtures.gcs import fake_gcs, media_storage  # noqa: F401 - fixtures
from tests.fixtures.media import grant_storage, jpeg, presign
from tests.fixtures.people import make_admin
from tests.fixtures.platform import make_settings, running_platform
from tests.news.support import create_article, create_feed

BOX = 320


async def test_a_photo_goes_straight_to_storage_and_into_an_article(tmp_path, media_storage):
    settings = make_settings(tmp_path, **media_storage)
    async with running_platform(settings, "auth,members,media,news") as running, running.client() as client, \
            event_tap(running) as tap:
        admin = await make_admin(running, client, "admin@example.com")
        quota = await grant_storage(running, admin.hotel_id, 20000)
        assert quota["quotaBytes"] == 20_000_000_000

        # A 12-megapixel camera JPEG stored landscape, to be displayed portrait (EXIF orientation 6).
        photo = jpeg(4000, 3000, orientation=6, quality=70)
        signed = await presign(client, admin, photo, "image/jpeg", "lobby.jpg")
        assert signed.status_code == 201, signed.text
        upload = signed.json()
        if media_storage["media_storage"] == "gcs":
            assert upload["uploadUrl"].startswith(media_storage["media_gcs_endpoint"])
            assert "X-Goog-Signature=" in upload["uploadUrl"]
        async with running.client() as raw:  # no platform token: the URL's signature is the authorisation
            put = await raw.put(upload["uploadUrl"], content=photo, headers=upload["headers"])
        assert put.status_code in (200, 201), put.text

        done = await client.post("/media/upload-complete", json={"id": upload["id"]}, headers=admin.headers)
        assert done.status_code == 200, done.text
        media = done.json()
        assert (media["width"], media["height"], media["size"]) == (3000, 4000, len(photo))
        thumbnail = await client.get(media["thumbnailUrl"], headers=admin.headers, follow_redirects=True)
        assert thumbnail.status_code == 200
        image = Image.open(io.BytesIO(thumbnail.content))
        assert image.size == (240, 320)  # upright (portrait) and within the box
        assert image.getpixel((200, 160))[0] > 150 and image.getpixel((40, 160))[2] > 150
        assert not image.getexif()
        usage = (await client.get("/media/storage", headers=admin.headers)).json()
        assert usage["reservedBytes"] == 0 and usage["usedBytes"] == len(photo) + len(thumbnail.content)

        feed = await create_feed(client, admin)
        article = await create_article(client, admin, feed, title="Le nouveau lobby", medias=[media["id"]])
        expected = {"fileUrl": media["fileUrl"], "thumbnailUrl": media["thumbnailUrl"]}
        assert [{k: m[k] for k in expected} for m in article["medias"]] == [expected]
        envelope = await tap.wait_for("roomee.notification.page.created", lambda e: e["payload"]["id"] == article["id"])
        assert envelope["payload"]["medias"] == [expected]

        # What the article links to serves the file to the hotel's members.
        served = await client.get(article["medias"][0]["fileUrl"], headers=admin.headers)
        if media_storage["media_storage"] == "gcs":  # a short-lived signed GET, straight from storage
            assert served.status_code == 307 and "X-Goog-Expires=300" in served.headers["location"]
        else:
            assert served.status_code == 200 and served.headers["cache-control"] == "private, max-age=300"
        original = await client.get(article["medias"][0]["fileUrl"], headers=admin.headers, follow_redirects=True)
        assert original.status_code == 200 and original.content == photo
