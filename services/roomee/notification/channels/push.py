"""Push backends: ``log`` (embedded default) and ``onesignal``.

OneSignal transport: aiohttp's client, speaking the HTTP contract of the official SDK
``onesignal-python-api`` 5.18 (``DefaultApi.create_notification``): ``POST {onesignal_url}/notifications``
with ``Authorization: Key <REST API key>`` and a JSON ``Notification`` body (``app_id``, ``contents``,
``headings``, ``data``, ``include_subscription_ids``, ``idempotency_key``). The test suite sends the
same notification through the real SDK and checks both requests are the same.

Why not the SDK itself: measured on this machine (2 cores) for 100 000 subscriptions = 50 requests
of 2 000 ids against the recording fake in another process: an asyncio client (8 connections)
0.36 s; the SDK on 8 threads (``run_in_executor``) 2.4-2.6 s, of which about 1.8 s is its model
type-checking (about 37 ms of CPU per 2 000-id ``Notification``) that holds the GIL and so also
stalls the event loop running the consumers and the Socket.IO server. Skipping that check is
fragile: ``_check_input_type=False`` fails in 5.18.0 (``ApiValueError`` for ``_host_index``), and
``Notification(..., _check_type=False)`` still took 0.5-0.6 s. An asyncio client also gives
cancellation and timeouts without a thread pool.

Why aiohttp rather than httpx: many small requests (one per single-receiver notification) are
bound by the client's CPU. Measured here against the same fake, 3 000 one-subscription requests:
httpx 1 000 requests/s with 8 connections (450/s with 32), aiohttp 8 500/s (8 900/s with 32).

Batching: subscription ids are de-duplicated and sorted, then cut into requests of at most
``MAX_BATCH`` (2 000, OneSignal's limit); requests run concurrently, ``PUSH_CONCURRENCY`` at a time
per backend. Each request carries an idempotency key (a UUID, as OneSignal wants) derived from the
caller's key, the batch index and the batch's ids: retrying the same send reuses the same keys
(OneSignal answers with the notification it already created), while a retry of a different set
of subscriptions gets new keys (it is never swallowed as a duplicate of an earlier batch).

Outcome of each request (one ``AttemptResult`` each): 2xx with an ``id`` -> ``sent`` (ids the
provider reports invalid in ``invalid_recipients``); 2xx without an ``id`` (no subscribed device)
-> ``failed``, not retryable; 5xx, 429, timeout or connection error -> ``failed``, retryable;
other 4xx -> ``failed``, not retryable. Requests pass through a circuit breaker (the platform's
opossum semantics); an open circuit fails the request at once, retryable.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import uuid
from collections.abc import Iterable
from typing import Any

import aiohttp

from roomee import __version__
from roomee.kit.breaker import CircuitBreaker, CircuitOpenError
from roomee.notification.channels import AttemptResult, PushMessage

log = logging.getLogger("roomee.notification.push")

MAX_BATCH = 2000
PUSH_CONCURRENCY = 16
PROVIDER_TIMEOUT_SECONDS = 10.0
RESPONSE_LIMIT = 2000  # characters of a provider response kept in the attempt
# Namespace of the per-batch idempotency keys (uuid5).
IDEMPOTENCY_NAMESPACE = uuid.UUID("5d0a7c62-8f5e-4c3b-9a47-3f1f0e6b2c91")


def batches(subscription_ids: Iterable[str], size: int = MAX_BATCH) -> list[list[str]]:
    """Distinct ids, sorted (so a retry cuts the same batches), in chunks of at most ``size``."""
    ids = sorted(set(subscription_ids))
    return [ids[start : start + size] for start in range(0, len(ids), size)]


def batch_idempotency_key(key: str, index: int, batch: list[str]) -> str:
    """A UUID derived from the caller's key, the batch index and the batch's ids."""
    digest = hashlib.sha256("\n".join(batch).encode()).hexdigest()
    return str(uuid.uuid5(IDEMPOTENCY_NAMESPACE, f"{key}:{index}:{digest}"))


def onesignal_language(locale: str | None) -> str:
    """OneSignal's language code for a locale (``fr-FR`` -> ``fr``; ``zh-Hant`` kept)."""
    if not locale:
        return "en"
    parts = locale.replace("_", "-").split("-")
    language = parts[0].lower()
    if language == "zh" and len(parts) > 1 and parts[1].lower() in ("hans", "hant"):
        return f"zh-{parts[1].title()}"
    return language


def _localized(locale: str, text: str) -> dict[str, str]:
    # OneSignal requires an "en" entry; the member's language is sent beside it.
    return {onesignal_language(locale): text, "en": text}


def notification_body(app_id: str, message: PushMessage, batch: list[str], idempotency_key: str) -> dict[str, Any]:
    """The JSON body of OneSignal's ``POST /notifications`` for one batch."""
    data = dict(message.data)
    data.setdefault("notificationId", message.notification_id)
    data.setdefault("workspaceId", message.workspace_id)
    body: dict[str, Any] = {"app_id": app_id, "contents": _localized(message.locale, message.body)}
    if message.title:
        body["headings"] = _localized(message.locale, message.title)
    body["data"] = data
    body["include_subscription_ids"] = batch
    body["idempotency_key"] = idempotency_key
    return body


def _truncate(text: str | None) -> str | None:
    if text is None or len(text) <= RESPONSE_LIMIT:
        return text
    return text[:RESPONSE_LIMIT] + "..."


class LogPush:
    """Embedded default: logs each request it would have made. Nothing reaches a device, so the
    outcome is ``logged`` (metrics and attempts never count it as sent)."""

    provider = "log"

    async def send(self, message: PushMessage, *, idempotency_key: str) -> list[AttemptResult]:
        results = []
        for index, batch in enumerate(batches(message.subscription_ids)):
            key = batch_idempotency_key(idempotency_key, index, batch)
            log.info(
                "push %r to %d subscription(s) of workspace %s (notification %s)",
                message.title,
                len(batch),
                message.workspace_id,
                message.notification_id,
                extra={"notification_id": message.notification_id, "idempotency_key": key},
            )
            results.append(
                AttemptResult(
                    channel="push",
                    provider=self.provider,
                    status="logged",
                    recipients=batch,
                    response="logged",
                    provider_message_id=key,
                )
            )
        return results

    async def aclose(self) -> None:
        return None


class _RetryableResponse(Exception):
    """A 5xx or 429: counts as a failure for the circuit breaker and is worth retrying."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"OneSignal answered {status}")
        self.status = status
        self.text = text


class OneSignalPush:
    """OneSignal ``POST /notifications`` over aiohttp, batched, behind a circuit breaker."""

    provider = "onesignal"

    def __init__(
        self,
        *,
        url: str,
        app_id: str,
        api_key: str,
        breaker: CircuitBreaker | None = None,
        concurrency: int = PUSH_CONCURRENCY,
        timeout: float = PROVIDER_TIMEOUT_SECONDS,
    ) -> None:
        self.url = url.rstrip("/")
        self.app_id = app_id
        self.breaker = breaker or CircuitBreaker("notification", "onesignal")
        self.concurrency = concurrency
        self.timeout = timeout
        self._headers = {
            "Authorization": f"Key {api_key}",
            "Accept": "application/json",
            "User-Agent": f"roomee-notification/{__version__}",
        }
        self._semaphore = asyncio.Semaphore(concurrency)
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_settings(cls, settings: Any, **kwargs: Any) -> "OneSignalPush":
        missing = [name for name in ("onesignal_app_id", "onesignal_api_key") if not getattr(settings, name)]
        if missing:
            names = ", ".join(f"ROOMEE_{name.upper()}" for name in missing)
            raise ValueError(f"push_backend=onesignal needs {names}")
        kwargs.setdefault("timeout", settings.provider_timeout_seconds)
        kwargs.setdefault("breaker", CircuitBreaker.from_settings(settings, "notification", "onesignal"))
        return cls(
            url=settings.onesignal_url,
            app_id=settings.onesignal_app_id,
            api_key=settings.onesignal_api_key,
            **kwargs,
        )

    def _client(self) -> aiohttp.ClientSession:
        # Created on first use: an aiohttp session belongs to the running event loop.
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers=self._headers,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                connector=aiohttp.TCPConnector(limit=self.concurrency),
            )
        return self._session

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def send(self, message: PushMessage, *, idempotency_key: str) -> list[AttemptResult]:
        requests = [
            (batch, notification_body(self.app_id, message, batch, batch_idempotency_key(idempotency_key, i, batch)))
            for i, batch in enumerate(batches(message.subscription_ids))
        ]
        return list(await asyncio.gather(*(self._send_batch(batch, body) for batch, body in requests)))

    async def _post(self, body: dict[str, Any]) -> tuple[int, str]:
        async with self._client().post(f"{self.url}/notifications", json=body) as response:
            text = await response.text()
        if response.status >= 500 or response.status == 429:
            raise _RetryableResponse(response.status, text)
        return response.status, text

    async def _send_batch(self, batch: list[str], body: dict[str, Any]) -> AttemptResult:
        def failed(error: str, *, retryable: bool, response: str | None = None) -> AttemptResult:
            log.warning(
                "OneSignal request for %d subscription(s) failed: %s",
                len(batch),
                error,
                extra={"idempotency_key": body["idempotency_key"], "retryable": retryable},
            )
            return AttemptResult(
                channel="push",
                provider=self.provider,
                status="failed",
                recipients=batch,
                response=_truncate(response),
                error=error,
                retryable=retryable,
            )

        async with self._semaphore:
            try:
                status, text = await self.breaker.call(self._post, body)
            except CircuitOpenError as exc:
                return failed(f"circuit open (retry in {exc.retry_after:.1f} s)", retryable=True)
            except _RetryableResponse as exc:
                return failed(f"HTTP {exc.status}", retryable=True, response=exc.text)
            except TimeoutError as exc:  # aiohttp's timeouts are TimeoutErrors
                return failed(f"timeout: {type(exc).__name__}", retryable=True)
            except aiohttp.ClientError as exc:
                return failed(f"connection error: {exc!r}", retryable=True)
        if status >= 400:
            return failed(f"HTTP {status}", retryable=False, response=text)
        try:
            payload = json.loads(text)
        except ValueError:
            return failed(f"HTTP {status} with a body that is not JSON", retryable=True, response=text)
        notification_id = payload.get("id") if isinstance(payload, dict) else None
        errors = payload.get("errors") if isinstance(payload, dict) else None
        if not notification_id:
            # OneSignal answers 200 without an id when no included subscription can receive it.
            return failed(f"not sent: {json.dumps(errors)}", retryable=False, response=text)
        invalid: list[str] = []
        if isinstance(errors, dict):
            for key in ("invalid_player_ids", "invalid_subscription_ids"):
                invalid.extend(str(value) for value in errors.get(key) or ())
        return AttemptResult(
            channel="push",
            provider=self.provider,
            status="sent",
            recipients=batch,
            response=_truncate(text),
            provider_message_id=str(notification_id),
            invalid_recipients=invalid,
        )
