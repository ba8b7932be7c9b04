"""HTTP routes of the media service (api-media). Seed paths are kept exactly."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Path, Query, Request, Response, UploadFile
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from roomee.kit.auth import CurrentMember, CurrentPrincipal, Principal, require_service_scope
from roomee.kit.deps import context_of
from roomee.kit.limits import UPLOAD
from roomee.kit.platform import ServiceContext
from roomee.kit.schemas import Page
from roomee.media import schemas
from roomee.media.service import MEDIA_STORAGE, MEDIA_UPLOAD, FileTooLarge, MediaService

router = APIRouter(tags=["media"])

Context = Annotated[ServiceContext, Depends(context_of("media"))]
MediaId = Annotated[str, Path(min_length=1, max_length=36)]
HotelId = Annotated[str, Path(min_length=1, max_length=64)]


async def _service(ctx: Context) -> MediaService:
    return MediaService(ctx)


Media = Annotated[MediaService, Depends(_service)]
_optional_bearer = HTTPBearer(auto_error=False)


async def _optional_principal(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_optional_bearer)]
) -> Principal | None:
    """The caller when a bearer token is sent (files of public media need none)."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        return None
    return await request.app.state.platform.verifier.principal(credentials.credentials)


def _errors(*codes: int) -> dict:
    descriptions = {
        401: "No or invalid bearer token.", 403: "Not allowed (missing permission or service scope).",
        404: "No such media in the caller's hotel.", 409: "Storage quota missing or exceeded, or upload not received.",
        410: "The upload expired or was refused.", 413: "The file is over the per-file limit.",
        415: "The content type is not allowed.", 422: "Invalid input, or a file that is not what it claims.",
        503: "Object storage is unavailable; retry.",
    }
    return {code: {"description": descriptions[code]} for code in codes}


@router.post(
    "/media/generate-presigned-url", status_code=201, response_model=schemas.PresignedUpload,
    responses=_errors(401, 403, 409, 413, 415, 422),
)
async def generate_presigned_url(body: schemas.PresignRequest, service: Media, principal: CurrentMember):
    """An upload URL valid 15 minutes for one file of the caller's hotel.

    Send exactly `method` to `uploadUrl` with `headers` and a body of `size` bytes, then call
    `POST /media/upload-complete` with `id` before `expiresAt`. The type must be allowed, the size
    within the per-file limit and the hotel's remaining quota; the bytes are held until completion
    or expiry.
    """
    return await service.presign(principal, body.model_dump())


@router.put(
    "/media/objects/{key:path}", status_code=200, include_in_schema=True, openapi_extra=UPLOAD,
    responses={400: {"description": "Body length differs from the signed length."},
               403: {"description": "Invalid or expired signature."},
               409: {"description": "The upload is no longer expected."}},
)
async def put_signed_object(
    key: str, request: Request, service: Media,
    expires: Annotated[int, Query()], signature: Annotated[str, Query(max_length=200)],
) -> Response:
    """The `local` storage backend's signed upload (the URL from generate-presigned-url; no bearer token)."""
    await service.receive_local_upload(
        key, expires=expires, signature=signature, content_type=request.headers.get("content-type"),
        content_length=request.headers.get("content-length"), body=request.stream(),
    )
    return Response(status_code=200)


@router.post("/media/upload-complete", response_model=schemas.MediaOut, responses=_errors(401, 403, 404, 409, 410, 422, 503))
async def upload_complete(body: schemas.CompleteRequest, service: Media, principal: CurrentMember):
    """Finish a direct upload: the stored object is checked (size, real type), an image gets a
    thumbnail, and the bytes count against the quota. Calling it again returns the same media.

    A file that is not what it claims is removed and its reservation released (422).
    """
    return await service.complete(principal, body.id)


@router.post("/media/upload", status_code=201, response_model=schemas.MediaOut, openapi_extra=UPLOAD,
             responses=_errors(401, 403, 409, 413, 415, 422, 503))
async def upload(
    service: Media,
    caller: Annotated[Principal, Depends(require_service_scope(MEDIA_UPLOAD))],
    request: Request,
    file: Annotated[UploadFile, File(description="The file; its part's Content-Type is the declared type.")],
    hotel_id: Annotated[str, Form(alias="ecosystemId", min_length=1, max_length=64)],
    public: Annotated[bool, Form(description="Anyone may GET the file (e.g. the hotel's QR code).")] = False,
    idempotency_key: Annotated[str | None, Form(alias="idempotencyKey", max_length=200)] = None,
):
    """Service-to-service (scope `media:upload`): upload a file for a hotel in one request.

    The same `idempotencyKey` for the same hotel returns the same media and stores nothing twice.
    Counts against the hotel's quota once one is set.
    """
    limit = service.settings.media_max_file_bytes
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise FileTooLarge({"maxBytes": limit})
    return await service.upload(
        caller, hotel_id=hotel_id, file_name=(file.filename or "file")[:255],
        content_type=file.content_type or "application/octet-stream", data=data, public=public,
        idempotency_key=idempotency_key,
    )


@router.get("/media/storage", response_model=schemas.StorageOut, responses=_errors(401, 403))
async def my_storage(service: Media, principal: CurrentMember):
    """Quota and usage of the caller's hotel (`quotaBytes` null until the hotel's plan sets it)."""
    return await service.storage_of(principal.hotel_id, must_exist=False)


@router.get("/media/storage/{hotel_id}", response_model=schemas.StorageOut, responses=_errors(401, 403, 404))
async def storage_of(
    hotel_id: HotelId, service: Media, _caller: Annotated[Principal, Depends(require_service_scope(MEDIA_STORAGE))]
):
    """Service-to-service (scope `media:storage`): quota and usage of a hotel."""
    return await service.storage_of(hotel_id, must_exist=True)


@router.delete("/media/storage/{hotel_id}", status_code=204, responses=_errors(401, 403))
async def delete_storage(
    hotel_id: HotelId, service: Media, _caller: Annotated[Principal, Depends(require_service_scope(MEDIA_STORAGE))]
) -> Response:
    """Service-to-service (scope `media:storage`): delete a hotel's quota and every object. Idempotent."""
    await service.delete_storage(hotel_id)
    return Response(status_code=204)


@router.get("/media", response_model=Page[schemas.MediaOut], responses=_errors(401, 403, 422))
async def list_media(
    service: Media, principal: CurrentMember,
    limit: Annotated[int, Query(ge=1, le=200, description="Page size.")] = 50,
    cursor: Annotated[str | None, Query(description="The `nextCursor` of the previous page.")] = None,
):
    """Completed media of the caller's hotel, newest first, paginated by cursor."""
    return await service.list_media(principal, cursor=cursor, limit=limit)


@router.get("/media/{media_id}", response_model=schemas.MediaOut, responses=_errors(401, 403, 404))
async def get_media(media_id: MediaId, service: Media, principal: CurrentPrincipal):
    """A media of the caller's hotel, or any media for a service with scope `media:read`."""
    return await service.get(principal, media_id)


@router.get("/media/{media_id}/object", response_model=schemas.StoredObjectOut, responses=_errors(401, 403, 404, 503))
async def stored_object(media_id: MediaId, service: Media, principal: CurrentPrincipal):
    """Whether the media's object is in storage now (a media of the caller's hotel, or any media for a
    service with scope `media:read`): how a hotel's QR code deleted behind media's back is found."""
    return await service.stored_object(principal, media_id)


@router.delete("/media/{media_id}", status_code=204, responses=_errors(401, 403, 404))
async def delete_media(media_id: MediaId, service: Media, principal: CurrentPrincipal) -> Response:
    """Delete a media and release its bytes: a member with `publish_pages` (or its uploader) of the
    same hotel, or a service with scope `media:upload`. Deleting it again answers 204."""
    await service.delete(principal, media_id)
    return Response(status_code=204)


async def _serve(service: MediaService, principal: Principal | None, media_id: str, *, thumbnail: bool) -> Response:
    row, download = await service.file(principal, media_id, thumbnail=thumbnail)
    cache = "public, max-age=3600" if row["public"] else "private, max-age=300"
    if download.redirect_url is not None:
        return RedirectResponse(download.redirect_url, status_code=307, headers={"Cache-Control": "no-store"})
    return FileResponse(
        download.path, media_type=row["thumbnail_type"] if thumbnail else row["content_type"],
        filename=row["file_name"], content_disposition_type="inline",
        headers={"Cache-Control": cache, "X-Content-Type-Options": "nosniff"},
    )


@router.get("/media/{media_id}/file", response_class=Response, responses={**_errors(401, 404, 503), **schemas.FILE_RESPONSES},
            openapi_extra=schemas.OPTIONAL_BEARER)
async def media_file(
    media_id: MediaId, service: Media, principal: Annotated[Principal | None, Depends(_optional_principal)]
) -> Response:
    """The file (the stable `fileUrl`): streamed (local) or a redirect to a short-lived signed GET (gcs).
    Needs a token of the same hotel (or `media:read`) unless the media is public. A media whose object is
    no longer in storage answers 404 `file_missing` (local storage; on gcs the signed URL answers 404 itself, the
    redirect costing no storage call); storage unreachable answers 503 `storage_unavailable`."""
    return await _serve(service, principal, media_id, thumbnail=False)


@router.get("/media/{media_id}/thumbnail", response_class=Response,
            responses={**_errors(401, 404, 503), **schemas.THUMBNAIL_RESPONSES}, openapi_extra=schemas.OPTIONAL_BEARER)
async def media_thumbnail(
    media_id: MediaId, service: Media, principal: Annotated[Principal | None, Depends(_optional_principal)]
) -> Response:
    """The thumbnail (the stable `thumbnailUrl`), with the same access rule as the file."""
    return await _serve(service, principal, media_id, thumbnail=True)
