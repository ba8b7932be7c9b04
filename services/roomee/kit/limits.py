"""Bounded request bodies: a limit per route class, answered 413 ``payload_too_large`` before the body
is read in full.

Two classes: every route takes at most ``max_json_body_bytes`` (JSON, forms, anything unmarked), and
routes marked :data:`UPLOAD` (``openapi_extra=UPLOAD``, a file in the body) take at most
``max_upload_body_bytes`` (default: the largest media file plus room for a multipart envelope). Such a
route still checks the file itself (its size, its signed length).

A declared ``Content-Length`` over the limit is refused at once, without reading a byte; a body without
one (chunked) is counted as it streams and refused at the first chunk that crosses the limit. Only a
request larger than the JSON limit pays for finding its route.
"""

from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.routing import Match

from roomee.kit.settings import Settings

# The route class of a route whose body is a file: ``@router.post(..., openapi_extra=UPLOAD)``.
BODY_CLASS = "x-body-class"
UPLOAD: dict[str, Any] = {BODY_CLASS: "upload"}
# What a multipart body holds besides the file: boundaries, part headers, the other form fields.
MULTIPART_ENVELOPE_BYTES = 1024 * 1024


class PayloadTooLarge(HTTPException):
    """A body over its route's limit. An ``HTTPException``: FastAPI's body reading lets it through as is."""

    code = "payload_too_large"

    def __init__(self, limit: int) -> None:
        super().__init__(413, {"maxBytes": limit})
        self.limit = limit


def upload_limit(settings: Settings) -> int:
    return settings.max_upload_body_bytes or settings.media_max_file_bytes + MULTIPART_ENVELOPE_BYTES


class BodyLimit:
    """Pure ASGI middleware; ``routes``: the routes of the app it guards (only the upload routes among
    them are kept, and looked at only for a body over the JSON limit)."""

    def __init__(self, app, routes: list, settings: Settings) -> None:
        self.app = app
        self.upload_routes = [route for route in routes if (getattr(route, "openapi_extra", None) or {}).get(BODY_CLASS)
                              == UPLOAD[BODY_CLASS]]
        self.json_limit = settings.max_json_body_bytes
        self.upload_limit = upload_limit(settings)

    def limit_of(self, scope) -> int:
        if any(route.matches(scope)[0] is Match.FULL for route in self.upload_routes):
            return self.upload_limit
        return self.json_limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared, chunked = None, False
        for name, value in scope["headers"]:
            if name == b"content-length":
                declared = value if declared is None else declared
            elif name == b"transfer-encoding":
                chunked = True
        if declared is None and not chunked:
            # No body at all (HTTP/1.1: neither a length nor chunks), as every GET: nothing to count.
            return await self.app(scope, receive, send)
        length = int(declared) if declared is not None and declared.isdigit() else None
        if length is not None and length <= self.json_limit:
            return await self.app(scope, receive, send)  # the common case: nothing to look up or count
        limit = self.limit_of(scope)
        if length is not None:
            if length > limit:
                return await too_large(limit)(scope, receive, send)
            return await self.app(scope, receive, send)  # the server never passes more than declared
        received = 0
        answered = False

        async def counting():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise PayloadTooLarge(limit)
            return message

        async def watching(message):
            nonlocal answered
            if message["type"] == "http.response.start":
                answered = True
            await send(message)

        try:
            await self.app(scope, counting, watching)
        except PayloadTooLarge as exc:
            # Raised where nothing answers it (a middleware reading the body before the app).
            if answered:
                raise
            await too_large(exc.limit)(scope, receive, send)


def too_large(limit: int) -> JSONResponse:
    # No "Connection: close": closing with the rest of the body unread would reset the connection, and the
    # client could lose this answer. The server drops what still arrives (never buffered), as a lingering close.
    return JSONResponse({"error": PayloadTooLarge.code, "detail": {"maxBytes": limit}}, status_code=413)
