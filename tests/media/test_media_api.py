"""The media target's routes, on both storage backends (local, gcs on fake-gcs-server)."""

from __future__ import annotations

import io

from PIL import Image

from tests.fixtures.media import (
    PDF, direct_upload, grant_storage, jpeg, png, presign, put_object, service_upload,
)
from tests.fixtures.people import make_admin


async def test_direct_upload_of_a_rotated_jpeg_gives_an_upright_thumbnail(media_platform):
    async with media_platform.client() as client:
        admin = await make_admin(media_platform, client, "admin@example.com")
        await grant_storage(media_platform, admin.ecosystem_id, 50)
        photo = jpeg(1200, 800, orientation=6)
        done = await direct_upload(client, admin, photo, "image/jpeg")
        assert done.status_code == 200, done.text
        media = done.json()
        assert media["status"] == "completed" and media["contentType"] == "image/jpeg"
        assert (media["width"], media["height"], media["size"]) == (800, 1200, len(photo))

        thumb = await client.get(media["thumbnailUrl"], headers=admin.headers, follow_redirects=True)
        assert thumb.status_code == 200
        image = Image.open(io.BytesIO(thumb.content))
        assert image.format == "JPEG" and max(image.size) <= 320 and image.size[1] > image.size[0]
        assert not image.getexif()
        w, h = image.size
        assert image.getpixel((w * 4 // 5, h // 2))[0] > 150  # the stored top (red) is on the right
        assert image.getpixel((w // 5, h // 2))[2] > 150

        original = await client.get(media["fileUrl"], headers=admin.headers, follow_redirects=True)
        assert original.status_code == 200 and original.content == photo
