"""Object storage behind one interface (``ROOMEE_MEDIA_STORAGE``): ``local`` or ``gcs``.

- ``local`` (embedded default): files under the data dir; the media target itself serves the
  signed PUT (``PUT /media/objects/{key}``, an HMAC over method, key, content type, length and
  expiry) and streams the files.
- ``gcs``: google-cloud-storage V4 signed URLs for the client's PUT and for short-lived GETs. The
  SDK is synchronous: every call runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol
from urllib.parse import quote, urlencode

from roomee.kit.settings import Settings

# Keys are built by the service from ids it issued: `<hotel>/<media id>/<name>`.
KEY_PATTERN = re.compile(r"^[A-Za-z0-9_:-][A-Za-z0-9_.:-]{0,63}/[0-9a-f-]{36}/(original|thumbnail)$")


class StorageError(Exception):
    """The storage backend failed (unreachable, 5xx): the operation may be retried later."""


class ObjectMissing(StorageError):
    """Storage answered, and the object is not there (deleted behind the platform's back): not an
    outage, retrying will not bring it back."""


@dataclass(frozen=True)
class SignedRequest:
    """What the client sends to upload: the URL, the method and the headers it must carry."""

    url: str
    method: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class StoredObject:
    size: int
    content_type: str | None


@dataclass(frozen=True)
class Download:
    """How a file is served: a local ``path`` to stream, or a ``redirect_url`` (signed GET)."""

    path: Path | None = None
    redirect_url: str | None = None


class Storage(Protocol):
    name: str

    async def signed_upload(self, key: str, content_type: str, size: int, expires_at: datetime, ttl: timedelta) -> SignedRequest: ...
    async def stat(self, key: str) -> StoredObject | None: ...
    async def read(self, key: str) -> bytes: ...
    async def write(self, key: str, data: bytes, content_type: str) -> None: ...
    async def delete(self, key: str) -> None: ...
    async def download(self, key: str, content_type: str, file_name: str) -> Download:
        """How to serve the object; ObjectMissing when storage no longer has it."""
        ...
    async def close(self) -> None: ...


def upload_signature(secret: bytes, *, method: str, key: str, content_type: str, size: int, expires: int) -> str:
    message = "\n".join((method, key, content_type, str(size), str(expires))).encode()
    return base64.urlsafe_b64encode(hmac.new(secret, message, hashlib.sha256).digest()).decode().rstrip("=")


class LocalStorage:
    """Files under ``<data dir>/media-objects``, each with a ``.meta.json`` holding its content type."""

    name = "local"

    def __init__(self, settings: Settings, secret: bytes) -> None:
        self.root = (settings.data_dir / "media-objects").resolve()
        self.base_url = settings.url_of("media")
        self.secret = secret

    def path_of(self, key: str) -> Path:
        if not KEY_PATTERN.match(key):
            raise ValueError(f"not a media object key: {key!r}")
        path = (self.root / key).resolve()
        if self.root not in path.parents:
            raise ValueError(f"not a media object key: {key!r}")
        return path

    @staticmethod
    def _meta_path(path: Path) -> Path:
        return path.with_name(path.name + ".meta.json")

    async def signed_upload(self, key, content_type, size, expires_at, ttl) -> SignedRequest:
        expires = int(expires_at.timestamp())
        signature = upload_signature(self.secret, method="PUT", key=key, content_type=content_type, size=size, expires=expires)
        query = urlencode({"expires": expires, "signature": signature})
        return SignedRequest(
            f"{self.base_url}/media/objects/{quote(key)}?{query}",
            "PUT",
            {"Content-Type": content_type, "Content-Length": str(size)},
        )

    def signature_is_valid(self, *, key: str, content_type: str, size: int, expires: int, signature: str) -> bool:
        expected = upload_signature(self.secret, method="PUT", key=key, content_type=content_type, size=size, expires=expires)
        return hmac.compare_digest(expected, signature)

    def open_for_upload(self, key: str) -> "LocalUpload":
        return LocalUpload(self.path_of(key))

    async def stat(self, key):
        path = self.path_of(key)

        def read_stat() -> StoredObject | None:
            try:
                size = path.stat().st_size
                meta = json.loads(self._meta_path(path).read_text())
            except FileNotFoundError:
                return None
            return StoredObject(size, meta.get("contentType"))

        return await asyncio.to_thread(read_stat)

    async def read(self, key):
        path = self.path_of(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            raise ObjectMissing(f"object {key} is missing") from None

    async def write(self, key, data, content_type):
        path = self.path_of(key)

        def write_files() -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            _atomic_write(self._meta_path(path), json.dumps({"contentType": content_type}).encode())
            _atomic_write(path, data)

        await asyncio.to_thread(write_files)

    async def delete(self, key):
        path = self.path_of(key)

        def remove() -> None:
            for target in (path, self._meta_path(path)):
                target.unlink(missing_ok=True)
            try:
                path.parent.rmdir()
            except OSError:
                pass  # other objects of the media still there

        await asyncio.to_thread(remove)

    async def download(self, key, content_type, file_name):
        path = self.path_of(key)
        try:
            await asyncio.to_thread(path.stat)
        except FileNotFoundError:
            raise ObjectMissing(f"object {key} is missing") from None
        except OSError as exc:  # the volume unreadable, not mounted as a directory, ...
            raise StorageError(f"local storage: {exc}") from exc
        return Download(path=path)

    async def close(self) -> None:
        return None


def _atomic_write(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    temporary.write_bytes(data)
    os.replace(temporary, path)


class LocalUpload:
    """One signed PUT being received: chunks go to a temporary file, renamed only when complete."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
        self.received = 0
        self._file = None

    def __enter__(self) -> "LocalUpload":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.temporary, "wb")  # noqa: SIM115 - closed in __exit__
        return self

    def write(self, chunk: bytes) -> None:
        self._file.write(chunk)
        self.received += len(chunk)

    def commit(self, content_type: str) -> None:
        self._file.close()
        _atomic_write(LocalStorage._meta_path(self.path), json.dumps({"contentType": content_type}).encode())
        os.replace(self.temporary, self.path)

    def __exit__(self, *exc) -> None:
        if not self._file.closed:
            self._file.close()
        self.temporary.unlink(missing_ok=True)


class GcsStorage:
    """A Google Cloud Storage bucket (or fake-gcs-server), through the official SDK."""

    name = "gcs"

    def __init__(self, settings: Settings) -> None:
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage
        from google.cloud.storage.retry import DEFAULT_RETRY
        from google.oauth2 import service_account

        if settings.media_gcs_credentials_file is None:
            raise RuntimeError("ROOMEE_MEDIA_GCS_CREDENTIALS_FILE (a service-account key) is needed to sign URLs")
        self.signer = service_account.Credentials.from_service_account_file(str(settings.media_gcs_credentials_file))
        self.endpoint = settings.media_gcs_endpoint.rstrip("/") if settings.media_gcs_endpoint else None
        project = settings.media_gcs_project or self.signer.project_id
        if self.endpoint:
            self.client = storage.Client(
                project=project, credentials=AnonymousCredentials(), client_options={"api_endpoint": self.endpoint}
            )
        else:
            self.client = storage.Client(project=project, credentials=self.signer)
        self.bucket = self.client.bucket(settings.media_gcs_bucket)
        self.download_ttl = timedelta(seconds=settings.media_download_url_ttl_seconds)
        # The SDK retries transient errors for up to two minutes by default: a request waits at most this.
        budget = settings.media_storage_timeout_seconds
        self.limits = {"timeout": budget, "retry": DEFAULT_RETRY.with_timeout(budget)}

    async def _call(self, function, *args, **kwargs):
        from google.api_core import exceptions as google_errors
        from requests import RequestException

        try:
            return await asyncio.to_thread(function, *args, **kwargs)
        except google_errors.NotFound:
            raise
        except (google_errors.GoogleAPIError, RequestException) as exc:
            raise StorageError(f"gcs: {exc}") from exc

    def _sign(self, key: str, **options) -> str:
        extra = {"api_access_endpoint": self.endpoint} if self.endpoint else {}
        return self.bucket.blob(key).generate_signed_url(version="v4", credentials=self.signer, **extra, **options)

    async def signed_upload(self, key, content_type, size, expires_at, ttl) -> SignedRequest:
        # The length range is signed too: real GCS refuses a body of another size.
        length_range = {"x-goog-content-length-range": f"{size},{size}"}
        url = await asyncio.to_thread(
            self._sign, key, method="PUT", expiration=ttl, content_type=content_type, headers=length_range
        )
        return SignedRequest(url, "PUT", {"Content-Type": content_type, **length_range})

    async def stat(self, key):
        blob = await self._call(self.bucket.get_blob, key, **self.limits)
        if blob is None:
            return None
        return StoredObject(int(blob.size), blob.content_type)

    async def read(self, key):
        from google.api_core.exceptions import NotFound

        try:
            return await self._call(self.bucket.blob(key).download_as_bytes, **self.limits)
        except NotFound:
            raise ObjectMissing(f"object {key} is missing") from None

    async def write(self, key, data, content_type):
        await self._call(self.bucket.blob(key).upload_from_string, data, content_type=content_type, **self.limits)

    async def delete(self, key):
        from google.api_core.exceptions import NotFound

        try:
            await self._call(self.bucket.blob(key).delete, **self.limits)
        except NotFound:
            pass

    async def download(self, key, content_type, file_name):
        # Signing needs no request, and none is made: a file view costs no storage call. A lost object
        # answers 404 at the signed URL itself; asking the bucket first would add a round trip to every view.
        url = await asyncio.to_thread(
            self._sign, key, method="GET", expiration=self.download_ttl, response_type=content_type,
            response_disposition=f'inline; filename="{_header_safe(file_name)}"',
        )
        return Download(redirect_url=url)

    async def close(self) -> None:
        await asyncio.to_thread(self.client.close)


def _header_safe(file_name: str) -> str:
    return re.sub(r'[^A-Za-z0-9._ -]', "_", file_name)[:200] or "file"


def storage_from_settings(settings: Settings) -> Storage:
    if settings.media_storage == "gcs":
        return GcsStorage(settings)
    secret = settings.media_signing_secret or hmac.new(
        settings.resolved_service_secret().encode(), b"media:upload-url", hashlib.sha256
    ).hexdigest()
    return LocalStorage(settings, secret.encode())
