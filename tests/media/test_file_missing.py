"""``GET /media/{id}/file`` (and ``/thumbnail``) of a media whose object was deleted behind the platform's
back (a bucket emptied by hand, a file removed from the volume) answers 404 ``file_missing`` on local
storage: the object is lost, retrying will not help; an unusable volume still answers 503
``storage_unavailable``. On gcs the route signs a GET without asking the bucket (a file view costs no
storage call), so the lost object's 404 comes from the signed URL itself."""

from __future__ import annotations

from google.auth.credentials import AnonymousCredentials
from google.cloud import storage as gcs

from tests.fixtures.media import grant_storage, png, service_upload
from tests.fixtures.people import make_admin

SERVED = (200, 307)  # the bytes (local) or a redirect to a signed GET (gcs)


def delete_behind_the_platforms_back(running, key: str) -> None:
    """Remove the object straight from the storage, as someone with access to the bucket or volume would."""
    overrides = running.storage
    if overrides["media_storage"] == "local":
        path = running.settings.data_dir / "media-objects" / key
        path.unlink()
        assert not path.exists()
        return
    client = gcs.Client(project=overrides["media_gcs_project"], credentials=AnonymousCredentials(),
                        client_options={"api_endpoint": overrides["media_gcs_endpoint"]})
    with client:
        bucket = client.bucket(overrides["media_gcs_bucket"])
        bucket.blob(key).delete()
        assert bucket.get_blob(key) is None


async def _uploaded(running, client, email: str) -> tuple[object, dict, dict]:
    owner = await make_admin(running, client, email, "Lost Files Hotel")
    await grant_storage(running, owner.hotel_id, 10)
    hotel = await running.service_headers("hotel")
    uploaded = await service_upload(client, hotel, owner.hotel_id, png(), "image/png")
    assert uploaded.status_code == 201, uploaded.text
    return owner, hotel, uploaded.json()


async def test_a_file_whose_object_is_lost_answers_404_file_missing(media_platform):
    async with media_platform.client() as client:
        owner, hotel, media = await _uploaded(media_platform, client, "lost@example.com")
        stranger = await make_admin(media_platform, client, "stranger@example.com", "Other Hotel")
        file_path, thumbnail_path = f"/media/{media['id']}/file", f"/media/{media['id']}/thumbnail"
        for path in (file_path, thumbnail_path):
            assert (await client.get(path, headers=owner.headers)).status_code in SERVED

        delete_behind_the_platforms_back(media_platform, f"{owner.hotel_id}/{media['id']}/original")
        for headers in (owner.headers, hotel):
            lost = await client.get(file_path, headers=headers)
            await _assert_lost(media_platform, client, lost)
        # Who may not see the media learns nothing of its object: the plain 404 of a media not found.
        assert (await client.get(file_path, headers=stranger.headers)).json()["error"] == "not_found"
        assert (await client.get(file_path)).status_code == 401
        assert (await client.get("/media/00000000-0000-0000-0000-000000000000/file",
                                 headers=owner.headers)).json()["error"] == "not_found"
        # The row stays (GET /media/{id}/object says the object is gone), and the thumbnail, still stored, is served.
        assert (await client.get(f"/media/{media['id']}", headers=owner.headers)).status_code == 200
        assert (await client.get(f"/media/{media['id']}/object", headers=hotel)).json()["stored"] is False
        assert (await client.get(thumbnail_path, headers=owner.headers)).status_code in SERVED

        delete_behind_the_platforms_back(media_platform, f"{owner.hotel_id}/{media['id']}/thumbnail")
        await _assert_lost(media_platform, client, await client.get(thumbnail_path, headers=owner.headers))


async def _assert_lost(running, client, answer) -> None:
    """Local storage answers 404 file_missing; gcs redirects to a signed GET, which answers 404 itself."""
    if running.storage["media_storage"] == "local":
        assert answer.status_code == 404, answer.text
        assert answer.json() == {"error": "file_missing", "detail": "the media's file is no longer in storage"}
        return
    assert answer.status_code == 307, answer.text
    assert (await client.get(answer.headers["location"])).status_code == 404


async def test_the_file_routes_list_file_missing_beside_the_outage(media_platform):
    async with media_platform.client() as client:
        document = (await client.get("/openapi/media.json")).json()
    for path, codes in (("/media/{media_id}/file", {"not_found", "file_missing"}),
                        ("/media/{media_id}/thumbnail", {"not_found", "no_thumbnail", "file_missing"})):
        responses = document["paths"][path]["get"]["responses"]
        assert {"401", "404", "503"} <= set(responses), path
        not_found = responses["404"]
        assert all(f"`{code}`" in not_found["description"] for code in codes), not_found["description"]
        examples = not_found["content"]["application/json"]["examples"]
        assert {example["value"]["error"] for example in examples.values()} == codes
        assert not_found["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorDocument")
        assert "unavailable" in responses["503"]["description"]


async def test_an_unusable_local_volume_still_answers_503_then_the_file_again(local_media_platform):
    async with local_media_platform.client() as client:
        owner, _, media = await _uploaded(local_media_platform, client, "volume@example.com")
        path = f"/media/{media['id']}/file"
        # The volume is not there as a directory (an unmounted or broken volume): storage is down, not the file.
        root = local_media_platform.settings.data_dir / "media-objects"
        root.rename(root.with_name("media-objects.away"))
        root.write_bytes(b"")
        try:
            down = await client.get(path, headers=owner.headers)
            assert down.status_code == 503 and down.json()["error"] == "storage_unavailable", down.text
        finally:
            root.unlink()
            root.with_name("media-objects.away").rename(root)
        back = await client.get(path, headers=owner.headers)
        assert back.status_code == 200 and back.content == png()
