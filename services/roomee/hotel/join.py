"""The page a hotel's QR code opens (``GET /join/{hotelId}``): how a member of its staff joins, or a
redirect to the app (``ROOMEE_HOTEL_JOIN_APP_URL``). Public: it tells only the hotel's name."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from fastapi import Response
from fastapi.responses import RedirectResponse

from roomee.hotel.repository import HotelRepository
from roomee.kit.html import escape, html_page
from roomee.kit.platform import ServiceContext

JOINABLE = ("provisioning", "ready")


async def joinable_hotel(ctx: ServiceContext, hotel_id: str) -> dict | None:
    """The hotel staff may join: existing, not failed nor being deleted."""
    if not hotel_id or len(hotel_id) > 64:  # no hotel has such an id (the QR code's never does)
        return None
    async with ctx.db.reading() as session:
        row = await HotelRepository(session).get(hotel_id)
    return row if row is not None and row["status"] in JOINABLE else None


def app_link(app_url: str, hotel_id: str) -> str:
    """``app_url`` with ``hotelId`` added to its query."""
    parts = urlsplit(app_url)
    query = urlencode([*parse_qsl(parts.query, keep_blank_values=True), ("hotelId", hotel_id)])
    return urlunsplit(parts._replace(query=query))


def join_answer(ctx: ServiceContext, hotel: dict | None) -> Response:
    if hotel is None:
        return html_page("Hotel not found", "<h1>Hotel not found</h1><p>This join link names no hotel on this "
                         "platform. Scan your hotel's QR code again, or ask your manager for an invitation.</p>",
                         status_code=404)
    if ctx.settings.hotel_join_app_url:
        return RedirectResponse(app_link(ctx.settings.hotel_join_app_url, hotel["id"]), status_code=307)
    name = escape(hotel["name"])
    return html_page(f"Join {hotel['name']}", (
        f"<h1>Join {name} on Roomee</h1>"
        f"<p>The staff of {name} share news, comments and notifications in the Roomee app.</p>"
        "<ol><li>Install the Roomee app on your phone.</li>"
        f"<li>Ask a manager of {name} to invite you: the email holds a link that creates your account.</li>"
        "<li>Open the app and sign in with your email and password.</li></ol>"
        f'<p class="note">Hotel code: <code>{escape(hotel["id"])}</code></p>'
    ))
