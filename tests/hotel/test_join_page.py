"""GET /join/{hotelId}: what a hotel's QR code opens — an HTML page or a redirect to the app, never JSON."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from roomee.hotel.qr import join_link
from tests.fixtures.platform import make_settings, running_platform
from tests.hotel.support import add_hotel, hotel_body, wait_for_status


async def _ready_hotel(running, client, **changes) -> str:
    operator = await running.service_headers("operator")
    hotel_id = await add_hotel(client, operator, hotel_body(**changes))
    assert (await wait_for_status(client, operator, hotel_id))["status"] == "ready"
    return hotel_id


async def test_the_join_page_names_the_hotel_and_says_how_to_join(platform):
    async with platform.client() as client:
        hotel_id = await _ready_hotel(platform, client, name="Hôtel <Lac> & Spa")
        # The link the QR code encodes, opened as a phone's camera opens it: no token.
        page = await client.get(join_link(f"{platform.url}/join", hotel_id))
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "Hôtel &lt;Lac&gt; &amp; Spa" in page.text and "<Lac>" not in page.text  # escaped
        assert "Install the Roomee app" in page.text and hotel_id in page.text
        assert "<script" not in page.text and "http" not in page.text.split("</title>", 1)[1]  # nothing external


async def test_an_unknown_or_deleted_hotel_is_an_html_404(platform):
    async with platform.client() as client:
        for hotel_id in ("no-such-hotel", "x" * 2000, "%20"):
            page = await client.get(f"/join/{hotel_id}")
            assert page.status_code == 404, hotel_id
            assert page.headers["content-type"].startswith("text/html") and "Hotel not found" in page.text
        operator = await platform.service_headers("operator")
        hotel_id = await _ready_hotel(platform, client)
        assert (await client.delete(f"/hotel/{hotel_id}", headers=operator)).status_code == 202
        await wait_for_status(client, operator, hotel_id, statuses=("deleting", "deleted"))
        gone = await client.get(f"/join/{hotel_id}")
        assert gone.status_code == 404 and gone.headers["content-type"].startswith("text/html")


async def test_with_an_app_url_the_join_link_redirects_to_the_app(tmp_path):
    settings = make_settings(tmp_path, hotel_join_app_url="https://app.roomee.example/join?src=qr")
    async with running_platform(settings) as running, running.client() as client:
        hotel_id = await _ready_hotel(running, client)
        answer = await client.get(f"/join/{hotel_id}", follow_redirects=False)
        assert answer.status_code == 307
        location = urlsplit(answer.headers["location"])
        assert (location.scheme, location.netloc, location.path) == ("https", "app.roomee.example", "/join")
        assert parse_qs(location.query) == {"src": ["qr"], "hotelId": [hotel_id]}
        unknown = await client.get("/join/no-such-hotel", follow_redirects=False)
        assert unknown.status_code == 404 and unknown.headers["content-type"].startswith("text/html")


async def test_the_openapi_documents_html_and_the_redirect(platform):
    async with platform.client() as client:
        document = (await client.get("/openapi/hotel.json")).json()
    answers = document["paths"]["/join/{hotel_id}"]["get"]["responses"]
    assert set(answers) >= {"200", "307", "404"}
    assert list(answers["200"]["content"]) == ["text/html"] and list(answers["404"]["content"]) == ["text/html"]
