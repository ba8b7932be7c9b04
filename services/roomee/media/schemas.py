"""Wire shapes of the media service (camelCase JSON)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import AliasChoices, Field

from roomee.kit.errors import ErrorDocument
from roomee.kit.schemas import CamelModel


class PresignRequest(CamelModel):
    file_name: str = Field(min_length=1, max_length=255, description="The file's name, shown on download.")
    content_type: str = Field(min_length=3, max_length=100, description="The type the client will upload.")
    size: int = Field(gt=0, description="Exact size in bytes of the file the client will upload.")


class PresignedUpload(CamelModel):
    id: str = Field(description="The media id, to pass to upload-complete.")
    upload_url: str
    method: Literal["PUT"] = "PUT"
    headers: dict[str, str] = Field(description="Headers the upload request must carry, exactly.")
    expires_at: datetime


class CompleteRequest(CamelModel):
    id: str = Field(
        min_length=1, max_length=36, validation_alias=AliasChoices("id", "mediaId", "media_id"),
        description="The media id from generate-presigned-url (`mediaId` is accepted too).",
    )


class MediaOut(CamelModel):
    id: str
    hotel_id: str = Field(alias="ecosystemId")  # the seed's wire name for the hotel
    status: Literal["pending", "completed"]
    file_name: str
    file_url: str | None = Field(description="Stable platform URL of the file (checks the caller); null until completed.")
    thumbnail_url: str | None = Field(description="Stable platform URL of the thumbnail; null for non-images.")
    content_type: str
    size: int
    width: int | None = None
    height: int | None = None
    public: bool
    created_at: datetime
    completed_at: datetime | None = None


class StoredObjectOut(CamelModel):
    id: str
    hotel_id: str = Field(alias="ecosystemId")
    stored: bool = Field(description="The media's object is in storage (false: deleted behind media's back, or "
                                     "a pending upload not received yet).")
    size: int | None = Field(description="The stored object's size in bytes; null when it is not stored.")


class StorageOut(CamelModel):
    hotel_id: str = Field(alias="ecosystemId")
    quota_bytes: int | None = Field(description="Null until a `roomee.storage.media` event sets the quota.")
    used_bytes: int
    reserved_bytes: int = Field(description="Bytes held by presigned uploads not completed yet.")
    max_size: int | None
    unit: str | None


_BINARY = {"schema": {"type": "string", "format": "binary"}}
_REDIRECT = {
    "description": "A redirect to a short-lived signed GET of the object (gcs backend); `Cache-Control: no-store`.",
    "headers": {"Location": {"description": "The signed URL.", "schema": {"type": "string", "format": "uri"}}},
}
# The stable fileUrl / thumbnailUrl answer the bytes themselves (local backend) or a 307 (gcs), not JSON.
_DETAILS = {"not_found": "media not found", "no_thumbnail": "this media has no thumbnail",
            "file_missing": "the media's file is no longer in storage"}


def _not_found(*codes: tuple[str, str]) -> dict:
    """The 404 of a file route: each `error` code it answers, with what it means."""
    return {
        "model": ErrorDocument,
        "description": "; ".join(f"`{code}`: {meaning}" for code, meaning in codes) + ".",
        "content": {"application/json": {"examples": {
            code: {"summary": meaning, "value": {"error": code, "detail": _DETAILS[code]}} for code, meaning in codes}}},
    }


_NO_MEDIA = ("not_found", "no such completed media, or one of another hotel")
_FILE_MISSING = ("file_missing", "the media exists but its object is no longer in storage (deleted behind the "
                 "platform's back; local storage, on gcs the signed URL answers 404); retrying will not help, "
                 "unlike a 503 `storage_unavailable`")
FILE_RESPONSES = {
    200: {"description": "The file's bytes, inline, in its stored type (one of `ROOMEE_MEDIA_ALLOWED_TYPES`).",
          "content": {kind: _BINARY for kind in ("image/*", "video/*", "application/pdf", "application/octet-stream")}},
    307: _REDIRECT,
    404: _not_found(_NO_MEDIA, _FILE_MISSING),
}
THUMBNAIL_RESPONSES = {
    200: {"description": "The thumbnail's bytes (an image).", "content": {"image/*": _BINARY}},
    307: _REDIRECT,
    404: _not_found(_NO_MEDIA, ("no_thumbnail", "the media has no thumbnail"), _FILE_MISSING),
}
# No token for public media: the bearer token is optional (`{}` is "no security" in OpenAPI).
OPTIONAL_BEARER = {"security": [{}]}
