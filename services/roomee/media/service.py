"""Rules of the media service: direct uploads, server-side uploads, quotas, access to files.

Uploads read and write object storage, which may take seconds: those steps run between short
database transactions (the service opens them itself) rather than inside one that holds a
connection and row locks for the whole time. Each step is safe to repeat, so a request retried
after a crash ends in the same state.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from prometheus_client import Counter, Histogram
from sqlalchemy.exc import IntegrityError
from starlette.requests import ClientDisconnect

from roomee.kit.auth import PUBLISH_PAGES, Principal
from roomee.kit.clock import as_utc, utcnow
from roomee.kit.errors import Conflict, Forbidden, NotFound, RoomeeError, Unauthorized, Unprocessable
from roomee.kit.observability import RetryNotice
from roomee.kit.platform import ServiceContext
from roomee.kit.schemas import decode_cursor, encode_cursor
from roomee.media import imaging
from roomee.media.models import GONE_STATUSES
from roomee.media.repository import MediaRepository, QuotaRepository
from roomee.media.storage import Download, LocalStorage, ObjectMissing, StorageError, storage_from_settings

log = logging.getLogger("roomee.media")

STORAGE = "storage"
CLOCK = "clock"
SWEEP_WAKEUP = "sweep_wakeup"
MEDIA_READ = "media:read"
MEDIA_UPLOAD = "media:upload"
MEDIA_STORAGE = "media:storage"
SWEEP_BATCH = 500

uploads_total = Counter("media_uploads_total", "Uploads by kind and outcome.", ["service", "kind", "outcome"])
thumbnail_seconds = Histogram(
    "media_thumbnail_duration_seconds", "Time to make one thumbnail.", ["service"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)


class UnsupportedContentType(RoomeeError):
    status_code, code = 415, "unsupported_content_type"


class FileTooLarge(RoomeeError):
    status_code, code = 413, "file_too_large"


class QuotaExceeded(RoomeeError):
    status_code, code = 409, "storage_quota_exceeded"


class UploadGone(RoomeeError):
    status_code, code = 410, "upload_expired"


class StorageUnavailable(RoomeeError):
    status_code, code = 503, "storage_unavailable"


class FileMissing(NotFound):
    """The media's row is there, its object is not (deleted behind the platform's back): not an outage."""

    code = "file_missing"


async def setup(ctx: ServiceContext) -> None:
    ctx.state.setdefault(CLOCK, utcnow)
    ctx.state[STORAGE] = storage_from_settings(ctx.settings)
    ctx.state[SWEEP_WAKEUP] = asyncio.Event()
    ctx.on_stop(ctx.state[STORAGE].close)


def workers(ctx: ServiceContext) -> list:
    return [lambda: sweep_forever(ctx)]


def now_of(ctx: ServiceContext) -> datetime:
    return as_utc(ctx.state.get(CLOCK, utcnow)())


def quota_in_bytes(max_size: int, unit: str) -> int:
    # The seed's "MO" (mégaoctet): 20 000 MO is its "20 GB" premium plan, so decimal units.
    return max_size * {"KO": 1_000, "MO": 1_000_000, "GO": 1_000_000_000}[unit]


STORAGE_UNITS = ("KO", "MO", "GO")


def _thumbnail_key(object_key: str) -> str:
    return object_key.rsplit("/", 1)[0] + "/thumbnail"


class MediaService:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.db = ctx.db
        self.settings = ctx.settings
        self.storage = ctx.state[STORAGE]

    def now(self) -> datetime:
        return now_of(self.ctx)

    # ---- presentation and access -------------------------------------------------------------

    def present(self, row: dict[str, Any]) -> dict[str, Any]:
        completed = row["status"] == "completed"
        base = f"{self.settings.base_url}/media/{row['id']}"
        return {
            "id": row["id"],
            "hotel_id": row["hotel_id"],
            "status": row["status"],
            "file_name": row["file_name"],
            "file_url": f"{base}/file" if completed else None,
            "thumbnail_url": f"{base}/thumbnail" if completed and row["thumbnail_key"] else None,
            "content_type": row["content_type"] or row["declared_type"],
            "size": row["size"] if row["size"] is not None else row["declared_size"],
            "width": row["width"],
            "height": row["height"],
            "public": row["public"],
            "created_at": as_utc(row["created_at"]),
            "completed_at": as_utc(row["completed_at"]),
        }

    @staticmethod
    def _visible_to(principal: Principal, row: dict[str, Any], service_scope: str) -> bool:
        if principal.is_service:
            return service_scope in principal.scopes
        return row["hotel_id"] == principal.hotel_id

    async def _visible(self, principal: Principal, media_id: str, service_scope: str = MEDIA_READ) -> dict[str, Any]:
        """The live media if the caller may see it; another hotel's answers 404 like a missing one."""
        if principal.is_service and service_scope not in principal.scopes:
            raise Forbidden(f"service scope '{service_scope}' required", code="insufficient_scope")
        async with self.db.transaction() as session:
            row = await MediaRepository(session).get_any(media_id)
        if row is None or row["status"] in GONE_STATUSES or not self._visible_to(principal, row, service_scope):
            raise NotFound("media not found")
        return row

    async def get(self, principal: Principal, media_id: str) -> dict[str, Any]:
        return self.present(await self._visible(principal, media_id))

    async def stored_object(self, principal: Principal, media_id: str) -> dict[str, Any]:
        """Whether a media's object is in storage now: one deleted behind media's back (a bucket
        emptied by hand, a lifecycle rule) leaves its row, and its file URL answers 404."""
        row = await self._visible(principal, media_id)
        try:
            found = await self.storage.stat(row["object_key"])
        except StorageError as exc:
            raise StorageUnavailable(str(exc)) from exc
        return {"id": row["id"], "hotel_id": row["hotel_id"], "stored": found is not None,
                "size": found.size if found is not None else None}

    async def list_media(self, principal: Principal, *, cursor: str | None, limit: int) -> dict[str, Any]:
        position = decode_cursor(cursor)
        after = None
        if position is not None:
            try:
                after = (datetime.fromisoformat(position[0]), str(position[1]))
            except (IndexError, TypeError, ValueError):
                raise Unprocessable("invalid cursor", code="invalid_cursor") from None
        async with self.db.transaction() as session:
            rows = await MediaRepository(session).list_completed(principal.hotel_id, after=after, limit=limit + 1)
        next_cursor = None
        if len(rows) > limit:
            rows = rows[:limit]
            last = rows[-1]
            next_cursor = encode_cursor(as_utc(last["created_at"]).isoformat(), last["id"])
        return {"items": [self.present(r) for r in rows], "next_cursor": next_cursor}

    async def file(self, principal: Principal | None, media_id: str, *, thumbnail: bool) -> tuple[dict[str, Any], Download]:
        """Where to get a completed media's file (or thumbnail), once the caller may have it."""
        async with self.db.transaction() as session:
            row = await MediaRepository(session).get_any(media_id)
        if row is None or row["status"] != "completed":
            raise NotFound("media not found")
        if not row["public"]:
            if principal is None:
                raise Unauthorized("missing bearer token", headers={"WWW-Authenticate": "Bearer"})
            if not self._visible_to(principal, row, MEDIA_READ):
                raise NotFound("media not found")
        key = row["thumbnail_key"] if thumbnail else row["object_key"]
        if key is None:
            raise NotFound("this media has no thumbnail", code="no_thumbnail")
        content_type = row["thumbnail_type"] if thumbnail else row["content_type"]
        try:
            download = await self.storage.download(key, content_type, row["file_name"])
        except ObjectMissing:
            log.warning("a media's object is missing from storage", extra={"media_id": media_id, "object_key": key})
            raise FileMissing("the media's file is no longer in storage") from None
        except StorageError as exc:
            raise StorageUnavailable(str(exc)) from exc
        return row, download

    # ---- direct upload: presign, PUT (local backend), complete --------------------------------

    def _check_declared(self, content_type: str, size: int) -> str:
        declared = imaging.normalize_type(content_type)
        if declared not in self.settings.media_allowed_types:
            raise UnsupportedContentType(
                {"contentType": content_type, "allowed": list(self.settings.media_allowed_types)}
            )
        if size > self.settings.media_max_file_bytes:
            raise FileTooLarge({"size": size, "maxBytes": self.settings.media_max_file_bytes})
        return declared

    async def presign(self, principal: Principal, body: dict[str, Any]) -> dict[str, Any]:
        """Check type, size and quota, hold the bytes, then sign: a refusal signs nothing."""
        declared = self._check_declared(body["content_type"], body["size"])
        hotel_id, size = principal.hotel_id, body["size"]
        media_id = str(uuid.uuid4())
        key = f"{hotel_id}/{media_id}/original"
        now = self.now()
        ttl = timedelta(seconds=self.settings.media_upload_url_ttl_seconds)
        async with self.db.transaction() as session:
            quotas = QuotaRepository(session)
            if not await quotas.reserve(hotel_id, size, now):
                raise self._quota_refusal(await quotas.get(hotel_id), size)
            await MediaRepository(session).insert({
                "id": media_id, "hotel_id": hotel_id, "workspace_id": principal.workspace_id,
                "uploaded_by": principal.member_id or principal.subject, "file_name": body["file_name"],
                "object_key": key, "declared_type": declared, "declared_size": size, "reserved_bytes": size,
                "public": False,
                "status": "pending", "expires_at": now + ttl, "created_at": now,
            })
            signed = await self.storage.signed_upload(key, declared, size, now + ttl, ttl)
        uploads_total.labels("media", "direct", "presigned").inc()
        return {"id": media_id, "upload_url": signed.url, "method": signed.method, "headers": signed.headers,
                "expires_at": now + ttl}

    @staticmethod
    def _quota_refusal(quota: dict[str, Any] | None, size: int) -> RoomeeError:
        if quota is None or quota["quota_bytes"] is None:
            return QuotaExceeded((
                "this hotel has no storage quota: it is still being provisioned, or it was not provisioned "
                "through the hotel service (POST /hotel/add), which gives every hotel its plan's quota"), code="storage_quota_missing")
        return QuotaExceeded({
            "requested": size, "quotaBytes": quota["quota_bytes"], "usedBytes": quota["used_bytes"],
            "reservedBytes": quota["reserved_bytes"],
        })

    async def receive_local_upload(
        self, key: str, *, expires: int, signature: str, content_type: str | None, content_length: str | None, body,
    ) -> None:
        """The local backend's signed PUT: signature, expiry and length are checked before a byte is kept."""
        storage = self.storage
        if not isinstance(storage, LocalStorage):
            raise NotFound("uploads go to the storage backend's own URL")
        try:
            length = int(content_length or "")
        except ValueError:
            raise RoomeeError("Content-Length is required", code="length_required") from None
        content_type = imaging.normalize_type(content_type or "")
        try:
            storage.path_of(key)
        except ValueError:
            raise Forbidden("invalid upload signature", code="invalid_signature") from None
        if not storage.signature_is_valid(key=key, content_type=content_type, size=length, expires=expires, signature=signature):
            raise Forbidden("invalid upload signature (URL, Content-Type and Content-Length must match)",
                            code="invalid_signature")
        if self.now().timestamp() > expires:
            raise Forbidden("this upload URL has expired", code="signature_expired")
        async with self.db.transaction() as session:
            row = await MediaRepository(session).by_object_key(key)
        if row is None or row["status"] != "pending":
            raise Conflict("this upload is no longer expected", code="upload_not_pending")
        with storage.open_for_upload(key) as upload:
            try:
                async for chunk in body:
                    if upload.received + len(chunk) > length:
                        raise RoomeeError("the body is longer than the signed Content-Length", code="length_mismatch")
                    upload.write(chunk)
            except ClientDisconnect:
                raise RoomeeError("the client went away during the upload", code="upload_interrupted") from None
            if upload.received != length:
                raise RoomeeError("the body is shorter than the signed Content-Length", code="length_mismatch")
            upload.commit(content_type)

    async def complete(self, principal: Principal, media_id: str) -> dict[str, Any]:
        """Check the stored object against what was signed, sniff it, thumbnail it, count it. Idempotent."""
        async with self.db.transaction() as session:
            row = await MediaRepository(session).get(principal.hotel_id, media_id)
        if row is None or row["status"] == "deleted":
            raise NotFound("media not found")
        if row["status"] == "completed":
            return self.present(row)
        if row["status"] in ("expired", "rejected"):
            raise self._gone(row["reason"])
        if self.now() > as_utc(row["expires_at"]):
            await self._reject(row, "upload_expired")
            raise self._gone("upload_expired")
        try:
            stored = await self.storage.stat(row["object_key"])
        except StorageError as exc:
            raise StorageUnavailable(str(exc)) from exc
        if stored is None:
            raise Conflict("nothing was uploaded to the URL yet", code="upload_missing")
        refusal = self._mismatch(row, stored.size, stored.content_type)
        facts: dict[str, Any] = {}
        if refusal is None:
            try:
                data = await self.storage.read(row["object_key"])
            except StorageError as exc:
                raise StorageUnavailable(str(exc)) from exc
            refusal, facts = await self._inspect(row["declared_type"], data, row["object_key"])
        if refusal is not None:
            await self._reject(row, refusal[0])
            uploads_total.labels("media", "direct", refusal[0]).inc()
            raise Unprocessable(refusal[1], code=refusal[0])
        done = await self._finish(row, stored.size, facts)
        uploads_total.labels("media", "direct", "completed").inc()
        return done

    def _mismatch(self, row: dict[str, Any], size: int, content_type: str | None) -> tuple[str, str] | None:
        if size != row["declared_size"]:
            return "size_mismatch", f"the stored object has {size} bytes, {row['declared_size']} were announced"
        if content_type is not None and imaging.normalize_type(content_type) != row["declared_type"]:
            return "content_type_mismatch", f"the object was stored as {content_type}, not {row['declared_type']}"
        return None

    async def _inspect(self, declared: str, data: bytes, object_key: str) -> tuple[tuple[str, str] | None, dict[str, Any]]:
        """The real type of the bytes, and for images the thumbnail (stored here) and the size."""
        real = imaging.sniff(data)
        if real != declared:
            return ("content_type_mismatch", f"the file is {real or 'of an unknown type'}, not {declared}"), {}
        facts: dict[str, Any] = {"content_type": real, "thumbnail_key": None, "thumbnail_type": None,
                                 "thumbnail_size": 0, "width": None, "height": None}
        if real not in imaging.THUMBNAILED_TYPES:
            return None, facts
        started = time.perf_counter()
        try:
            thumbnail = await asyncio.to_thread(imaging.make_thumbnail, data, self.settings.media_thumbnail_box)
        except imaging.ImageRejected as exc:
            return ("unreadable_image", str(exc)), {}
        except imaging.TooLargeToThumbnail as exc:
            log.info("image stored without a thumbnail", extra={"object_key": object_key, "reason": str(exc)})
            return None, {**facts, "width": exc.width, "height": exc.height}
        thumbnail_seconds.labels("media").observe(time.perf_counter() - started)
        thumbnail_key = _thumbnail_key(object_key)
        try:
            await self.storage.write(thumbnail_key, thumbnail.data, thumbnail.content_type)
        except StorageError as exc:
            raise StorageUnavailable(str(exc)) from exc
        facts.update(thumbnail_key=thumbnail_key, thumbnail_type=thumbnail.content_type, thumbnail_size=len(thumbnail.data),
                     width=thumbnail.source_width, height=thumbnail.source_height)
        return None, facts

    async def _finish(self, row: dict[str, Any], size: int, facts: dict[str, Any]) -> dict[str, Any]:
        now = self.now()
        async with self.db.transaction() as session:
            media, quotas = MediaRepository(session), QuotaRepository(session)
            values = {**facts, "size": size, "status": "completed", "completed_at": now, "expires_at": None,
                      "reserved_bytes": 0}
            if await media.transition(row["id"], from_status="pending", values=values):
                await quotas.adjust(row["hotel_id"], used=size + facts["thumbnail_size"],
                                    reserved=-row["reserved_bytes"], now=now)
                return self.present({**row, **values})
            current = await media.get(row["hotel_id"], row["id"])
        if current is not None and current["status"] == "completed":
            return self.present(current)  # a concurrent call finished first
        raise self._gone(current["reason"] if current else "upload_expired")

    @staticmethod
    def _gone(reason: str | None) -> UploadGone:
        if reason == "upload_expired":
            return UploadGone("the upload URL expired before the upload was completed")
        return UploadGone(f"this upload was refused ({reason})", code="upload_rejected")

    async def _reject(self, row: dict[str, Any], reason: str) -> None:
        """Refuse a pending upload: release its reservation and remove what was stored."""
        now = self.now()
        status = "expired" if reason == "upload_expired" else "rejected"
        async with self.db.transaction() as session:
            if await MediaRepository(session).transition(
                row["id"], from_status="pending",
                values={"status": status, "reason": reason, "deleted_at": now, "reserved_bytes": 0, "idempotency_key": None},
            ):
                await QuotaRepository(session).adjust(row["hotel_id"], reserved=-row["reserved_bytes"], now=now)
        log.info("upload refused", extra={"media_id": row["id"], "reason": reason})
        await self._purge([{**row, "thumbnail_key": _thumbnail_key(row["object_key"])}])

    # ---- server-side upload (services) ---------------------------------------------------------

    async def upload(
        self, principal: Principal, *, hotel_id: str, file_name: str, content_type: str, data: bytes,
        public: bool, idempotency_key: str | None,
    ) -> dict[str, Any]:
        """Store a file in one request. A pending row is written before any object, so a crash
        leaves nothing the sweeper cannot find; a retry with the same key takes that row over."""
        declared = self._check_declared(content_type, len(data))
        if not data:
            raise Unprocessable("the file is empty", code="empty_file")
        real = imaging.sniff(data)
        if real != declared:  # refused before anything is written
            uploads_total.labels("media", "server", "content_type_mismatch").inc()
            raise Unprocessable(f"the file is {real or 'of an unknown type'}, not {declared}", code="content_type_mismatch")
        row = await self._claim_upload(principal, hotel_id, file_name, declared, len(data), public, idempotency_key)
        if row["status"] == "completed":
            return self.present(row)
        refusal, facts = await self._inspect(declared, data, row["object_key"])
        if refusal is not None:
            await self._reject(row, refusal[0])
            uploads_total.labels("media", "server", refusal[0]).inc()
            raise Unprocessable(refusal[1], code=refusal[0])
        try:
            await self.storage.write(row["object_key"], data, declared)
        except StorageError as exc:
            raise StorageUnavailable(str(exc)) from exc  # the row stays pending: a retry or the sweeper ends it
        now = self.now()
        total = len(data) + facts["thumbnail_size"]
        values = {**facts, "size": len(data), "status": "completed", "completed_at": now, "expires_at": None}
        try:
            async with self.db.transaction() as session:
                quotas, media = QuotaRepository(session), MediaRepository(session)
                await quotas.ensure(hotel_id, now)
                if await media.transition(row["id"], from_status="pending", values=values):
                    if not await quotas.consume(hotel_id, total, now):
                        raise self._quota_refusal(await quotas.get(hotel_id), total)  # rolls the change back
                    uploads_total.labels("media", "server", "completed").inc()
                    return self.present({**row, **values})
        except QuotaExceeded:
            await self._reject(row, "storage_quota_exceeded")
            raise
        async with self.db.transaction() as session:  # a concurrent retry with the same key finished first
            current = await MediaRepository(session).get(hotel_id, row["id"])
        if current is not None and current["status"] == "completed":
            return self.present(current)
        raise Conflict("this upload was ended concurrently; retry", code="idempotency_conflict")

    async def _claim_upload(
        self, principal: Principal, hotel_id: str, file_name: str, declared: str, size: int, public: bool,
        idempotency_key: str | None,
    ) -> dict[str, Any]:
        """The row of this upload: the key's completed or pending one, else a new pending one."""
        now = self.now()
        media_id = str(uuid.uuid4())
        values = {
            "id": media_id, "hotel_id": hotel_id, "workspace_id": None, "uploaded_by": principal.subject,
            "file_name": file_name, "object_key": f"{hotel_id}/{media_id}/original", "declared_type": declared,
            "declared_size": size, "reserved_bytes": 0, "public": public, "status": "pending",
            "idempotency_key": idempotency_key, "created_at": now,
            # Long enough for this request; after it, the sweeper removes what a crash left behind.
            "expires_at": now + timedelta(seconds=self.settings.media_upload_url_ttl_seconds),
        }
        for _attempt in range(2):
            try:
                async with self.db.transaction() as session:
                    media = MediaRepository(session)
                    if idempotency_key:
                        # Deleted, expired and refused uploads give their key up: only these two remain.
                        existing = await media.by_idempotency_key(hotel_id, idempotency_key)
                        if existing is not None:
                            return existing
                    await media.insert(values)
                    return values
            except IntegrityError:
                continue  # the same key was inserted concurrently: read it again
        raise Conflict("an upload with this idempotency key is changing; retry", code="idempotency_conflict")

    # ---- deletion ------------------------------------------------------------------------------

    async def delete(self, principal: Principal, media_id: str) -> None:
        """Delete a media and release its bytes. Deleting it again is fine; another hotel's is 404."""
        if principal.is_service and MEDIA_UPLOAD not in principal.scopes:
            raise Forbidden(f"service scope '{MEDIA_UPLOAD}' required", code="insufficient_scope")
        now = self.now()
        async with self.db.transaction() as session:
            media = MediaRepository(session)
            row = await media.get_any(media_id)
            if row is None or not self._visible_to(principal, row, MEDIA_UPLOAD):
                raise NotFound("media not found")
            if row["status"] in GONE_STATUSES:
                return
            if not principal.is_service and not (
                principal.has(PUBLISH_PAGES) or row["uploaded_by"] == principal.member_id
            ):
                raise Forbidden(f"permission '{PUBLISH_PAGES}' required", code="permission_denied")
            # The idempotency key is freed: uploading again with it stores a new file.
            gone = {"status": "deleted", "deleted_at": now, "idempotency_key": None, "reserved_bytes": 0}
            if await media.transition(media_id, from_status=row["status"], values=gone):
                if row["status"] == "completed":
                    await QuotaRepository(session).adjust(
                        row["hotel_id"], used=-(row["size"] + row["thumbnail_size"]), now=now
                    )
                else:
                    await QuotaRepository(session).adjust(row["hotel_id"], reserved=-row["reserved_bytes"], now=now)
        await self._purge([{**row, "thumbnail_key": _thumbnail_key(row["object_key"])}])

    async def delete_storage(self, hotel_id: str) -> None:
        """Every object and the quota of a hotel (hotel deletion, saga compensation). Idempotent."""
        now = self.now()
        async with self.db.transaction() as session:
            await MediaRepository(session).delete_all_of(hotel_id, now)
            await QuotaRepository(session).delete(hotel_id)
        self.ctx.state[SWEEP_WAKEUP].set()  # the sweeper removes the objects in batches

    # ---- quota -----------------------------------------------------------------------------------

    async def storage_of(self, hotel_id: str, *, must_exist: bool) -> dict[str, Any]:
        async with self.db.transaction() as session:
            quota = await QuotaRepository(session).get(hotel_id)
        if quota is None:
            if must_exist:
                raise NotFound("no storage for this hotel")
            quota = {"quota_bytes": None, "used_bytes": 0, "reserved_bytes": 0, "max_size": None, "unit": None}
        return {"hotel_id": hotel_id, **{k: quota[k] for k in ("quota_bytes", "used_bytes", "reserved_bytes", "max_size", "unit")}}

    async def _purge(self, rows: list[dict[str, Any]]) -> None:
        """Remove objects now if storage answers; what fails stays for the sweeper.

        A media whose upload URL is still valid is not marked purged: the client may still PUT to
        it, so the sweeper removes the objects again once the URL has expired.
        """
        purged = []
        now = self.now()
        for row in rows:
            try:
                for key in (row["object_key"], row.get("thumbnail_key")):
                    if key:
                        await self.storage.delete(key)
            except StorageError:
                log.warning("object removal failed; the sweeper will retry", extra={"media_id": row["id"]})
                continue
            expires_at = as_utc(row.get("expires_at"))
            if row["id"] and (expires_at is None or expires_at < now):
                purged.append(row["id"])
        if purged:
            async with self.db.transaction() as session:
                await MediaRepository(session).mark_purged(purged, self.now())

    # ---- background sweep ------------------------------------------------------------------------

    async def sweep(self) -> tuple[int, int]:
        """Expire overdue uploads (releasing their reservations), then remove objects of gone media."""
        now = self.now()
        async with self.db.transaction() as session:
            expired = await MediaRepository(session).expire_pending(now, SWEEP_BATCH)
            released: dict[str, int] = defaultdict(int)
            for row in expired:
                released[row["hotel_id"]] += row["reserved_bytes"]
            quotas = QuotaRepository(session)
            for hotel_id, size in released.items():
                await quotas.adjust(hotel_id, reserved=-size, now=now)
        async with self.db.transaction() as session:
            gone = await MediaRepository(session).unpurged(now, SWEEP_BATCH)
        # A thumbnail may have been written by a completion that lost its race with the expiry.
        await self._purge([{**row, "thumbnail_key": _thumbnail_key(row["object_key"])} for row in gone])
        return len(expired), len(gone)


async def sweep_forever(ctx: ServiceContext) -> None:
    wakeup: asyncio.Event = ctx.state[SWEEP_WAKEUP]
    service = MediaService(ctx)
    notice = RetryNotice(log, "media sweep")  # a storage outage: said once, and its end once
    while True:
        try:
            expired, purged = await service.sweep()
            notice.succeeded()
        except StorageError as exc:
            notice.failed(exc, "storage unavailable; retrying at the next sweep")
            expired = purged = 0
        if expired or purged:
            log.info("media sweep", extra={"expired": expired, "purged": purged})
        if expired == SWEEP_BATCH or purged == SWEEP_BATCH:
            continue
        try:
            await asyncio.wait_for(wakeup.wait(), ctx.settings.media_sweep_interval_seconds)
        except TimeoutError:
            pass
        wakeup.clear()
