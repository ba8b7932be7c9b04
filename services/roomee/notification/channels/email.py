"""Email backends (after Django's): ``file`` (embedded default), ``smtp`` and ``sendgrid``.

Every backend sends a multipart/alternative message (text, then HTML) from ``settings.email_from``
and returns one ``AttemptResult`` per message, in the order given.

- ``file``: writes each message as an ``.eml`` file under ``<data_dir>/mail/``, with a ``.txt`` beside it
  (the headers a person reads, then the text part as is: links and tokens whole, not quoted-printable
  split), and logs it.
- ``smtp``: aiosmtplib; one connection (STARTTLS or implicit TLS, and login, per settings) reused
  for the whole batch, re-opened once if the server drops it. ``smtp_ca_file`` replaces the system
  CAs for verifying the server's certificate; it is loaded at start-up. A 4xx reply, a timeout or
  a connection failure (an unverifiable certificate included) is retryable; a 5xx reply for the
  message (refused recipient, rejected data) is not. If the server cannot be reached, the
  remaining messages of the batch fail at once (retryable).
- ``sendgrid``: the official SDK (``SendGridAPIClient`` -> ``POST /v3/mail/send``, 202 expected).
  The SDK is synchronous (urllib), so each message is sent on a small dedicated thread pool,
  ``EMAIL_CONCURRENCY`` at a time. 5xx, 429, timeouts and connection errors are retryable; other
  4xx are not.

Every provider request is bounded by ``settings.provider_timeout_seconds``. Provider calls go
through a circuit breaker; failures that belong to one message (a refused address, a 4xx from
SendGrid) do not count against the provider.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import urllib.error
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from email.message import EmailMessage as MimeMessage
from email.utils import format_datetime, make_msgid, parseaddr
from pathlib import Path
from typing import Any

import aiosmtplib
from python_http_client.exceptions import HTTPError as SendGridHTTPError
from sendgrid import SendGridAPIClient
from sendgrid.helpers.mail import CustomArg, From, Mail, To

from roomee.kit.breaker import CircuitBreaker, CircuitOpenError
from roomee.notification.channels import AttemptResult, EmailMessage

log = logging.getLogger("roomee.notification.email")

EMAIL_CONCURRENCY = 8
PROVIDER_TIMEOUT_SECONDS = 10.0
RESPONSE_LIMIT = 2000
SENDGRID_DEFAULT_URL = "https://api.sendgrid.com"
NOTIFICATION_HEADER = "X-Roomee-Notification-Id"


def _truncate(text: str | None) -> str | None:
    if text is None or len(text) <= RESPONSE_LIMIT:
        return text
    return text[:RESPONSE_LIMIT] + "..."


def _sender_domain(sender: str) -> str:
    address = parseaddr(sender)[1]
    return address.rpartition("@")[2] or "roomee.local"


def build_mime(message: EmailMessage, sender: str) -> MimeMessage:
    """The RFC 5322 message: multipart/alternative with the text part first, then the HTML."""
    mime = MimeMessage()
    mime["From"] = sender
    mime["To"] = message.to
    mime["Subject"] = message.subject
    mime["Date"] = format_datetime(datetime.now(timezone.utc))
    mime["Message-ID"] = make_msgid(domain=_sender_domain(sender))
    mime[NOTIFICATION_HEADER] = message.notification_id
    mime.set_content(message.text)
    mime.add_alternative(message.html, subtype="html")
    return mime


def _result(
    provider: str,
    message: EmailMessage,
    *,
    error: str | None = None,
    retryable: bool = True,
    response: str | None = None,
    provider_message_id: str | None = None,
) -> AttemptResult:
    if error is not None:
        log.warning(
            "email to %s failed (%s): %s",
            message.to,
            provider,
            error,
            extra={"notification_id": message.notification_id, "retryable": retryable},
        )
    return AttemptResult(
        channel="email",
        provider=provider,
        status="failed" if error is not None else "sent",
        recipients=[message.to],
        response=_truncate(response),
        error=error,
        retryable=retryable if error is not None else True,
        provider_message_id=provider_message_id,
    )


# -- file --------------------------------------------------------------------------------------


class FileEmail:
    """Embedded default: each message becomes an ``.eml`` file in ``directory`` (and a log line)."""

    provider = "file"

    def __init__(self, directory: Path, *, sender: str) -> None:
        self.directory = Path(directory)
        self.sender = sender

    @classmethod
    def from_settings(cls, settings: Any) -> "FileEmail":
        return cls(Path(settings.data_dir) / "mail", sender=settings.email_from)

    async def send(self, messages: list[EmailMessage]) -> list[AttemptResult]:
        if not messages:
            return []
        return await asyncio.to_thread(self._write_all, messages)

    def _write_all(self, messages: list[EmailMessage]) -> list[AttemptResult]:
        self.directory.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
        results = []
        for message in messages:
            path = self.directory / f"{stamp}-{message.notification_id}-{uuid.uuid4().hex[:8]}.eml"
            readable = f"From: {self.sender}\nTo: {message.to}\nSubject: {message.subject}\n\n{message.text}"
            try:
                path.with_suffix(".txt").write_text(readable, encoding="utf-8")
                path.write_bytes(bytes(build_mime(message, self.sender)))
            except OSError as exc:
                results.append(_result(self.provider, message, error=f"cannot write {path}: {exc}"))
                continue
            log.info(
                "email to %s: %s -> %s",
                message.to,
                message.subject,
                path,
                extra={"notification_id": message.notification_id},
            )
            results.append(_result(self.provider, message, response=str(path), provider_message_id=path.name))
        return results

    async def aclose(self) -> None:
        return None


# -- SMTP --------------------------------------------------------------------------------------


def _smtp_permanent(outcome: object) -> bool:
    """A 5xx reply about this message (not about the server or our credentials)."""
    if isinstance(outcome, aiosmtplib.SMTPRecipientsRefused):
        return all(refused.code >= 500 for refused in outcome.recipients)
    if isinstance(outcome, (aiosmtplib.SMTPRecipientRefused, aiosmtplib.SMTPSenderRefused, aiosmtplib.SMTPDataError)):
        return outcome.code >= 500
    return False


def _smtp_is_failure(outcome: object) -> bool:
    return isinstance(outcome, BaseException) and not _smtp_permanent(outcome)


class _Unreachable(Exception):
    pass


def smtp_tls_context(ca_file: str | Path) -> ssl.SSLContext:
    """A client TLS context that trusts only the CAs in ``ca_file`` (PEM) and checks the host name.

    Built once when the backend is created: a wrong path is a start-up error, not a failure of
    every email.
    """
    try:
        return ssl.create_default_context(cafile=str(ca_file))
    except OSError as exc:  # also ssl.SSLError: a file that holds no PEM certificate
        raise ValueError(f"ROOMEE_SMTP_CA_FILE={ca_file} is not a readable PEM CA bundle: {exc}") from exc


class SmtpEmail:
    """SMTP through aiosmtplib, one connection per batch."""

    provider = "smtp"

    def __init__(
        self,
        *,
        host: str,
        port: int,
        sender: str,
        username: str | None = None,
        password: str | None = None,
        starttls: bool = False,
        implicit_tls: bool = False,
        timeout: float = PROVIDER_TIMEOUT_SECONDS,
        breaker: CircuitBreaker | None = None,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        """``implicit_tls``: TLS from the first byte (SMTPS) instead of a STARTTLS upgrade;
        ``tls_context``: trust and verification for either (default: the system CAs)."""
        if starttls and implicit_tls:
            raise ValueError("SMTP: starttls and implicit_tls are exclusive")
        self.host = host
        self.port = port
        self.sender = sender
        self.username = username
        self.password = password
        self.starttls = starttls
        self.implicit_tls = implicit_tls
        self.timeout = timeout
        self.tls_context = tls_context
        self.breaker = breaker or CircuitBreaker("notification", "smtp", is_failure=_smtp_is_failure)

    @classmethod
    def from_settings(cls, settings: Any, **kwargs: Any) -> "SmtpEmail":
        """Raises ``ValueError`` for a configuration that could not send any email."""
        if settings.smtp_starttls and settings.smtp_implicit_tls:
            raise ValueError(
                "ROOMEE_SMTP_STARTTLS and ROOMEE_SMTP_IMPLICIT_TLS are exclusive: set ROOMEE_SMTP_IMPLICIT_TLS "
                "for a server that speaks TLS from the first byte (port 465), ROOMEE_SMTP_STARTTLS for one "
                "that upgrades a plain connection (port 587)"
            )
        if settings.smtp_ca_file is not None:
            if not (settings.smtp_starttls or settings.smtp_implicit_tls):
                # Likely a forgotten TLS switch: mail would go out in clear despite the CA.
                log.warning("ROOMEE_SMTP_CA_FILE is set but neither STARTTLS nor implicit TLS is: SMTP is unencrypted")
            kwargs.setdefault("tls_context", smtp_tls_context(settings.smtp_ca_file))
        kwargs.setdefault("timeout", settings.provider_timeout_seconds)
        kwargs.setdefault(
            "breaker", CircuitBreaker.from_settings(settings, "notification", "smtp", is_failure=_smtp_is_failure)
        )
        return cls(
            host=settings.smtp_host,
            port=settings.smtp_port,
            sender=settings.email_from,
            username=settings.smtp_username,
            password=settings.smtp_password,
            starttls=settings.smtp_starttls,
            implicit_tls=settings.smtp_implicit_tls,
            **kwargs,
        )

    async def _connect(self) -> aiosmtplib.SMTP:
        smtp = aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            username=self.username or None,
            password=self.password or None,
            use_tls=self.implicit_tls,
            start_tls=self.starttls,
            timeout=self.timeout,
            tls_context=self.tls_context,
        )
        await smtp.connect()
        return smtp

    async def send(self, messages: list[EmailMessage]) -> list[AttemptResult]:
        results: list[AttemptResult] = []
        smtp: aiosmtplib.SMTP | None = None
        try:
            for position, message in enumerate(messages):
                try:
                    result, smtp = await self._send_one(smtp, message)
                except _Unreachable as exc:
                    # The server cannot be reached: the rest of the batch would fail the same way.
                    results.extend(_result(self.provider, rest, error=str(exc)) for rest in messages[position:])
                    smtp = None
                    break
                results.append(result)
        finally:
            if smtp is not None:
                try:
                    await smtp.quit()
                except (aiosmtplib.SMTPException, OSError):
                    smtp.close()
        return results

    async def _send_one(
        self, smtp: aiosmtplib.SMTP | None, message: EmailMessage
    ) -> tuple[AttemptResult, aiosmtplib.SMTP | None]:
        mime = build_mime(message, self.sender)
        for attempt in (1, 2):
            if smtp is None or not smtp.is_connected:
                try:
                    smtp = await self.breaker.call(self._connect)
                except CircuitOpenError as exc:
                    raise _Unreachable(f"circuit open (retry in {exc.retry_after:.1f} s)") from None
                except (aiosmtplib.SMTPException, OSError) as exc:
                    raise _Unreachable(f"cannot connect to {self.host}:{self.port}: {exc}") from None
            try:
                errors, reply = await self.breaker.call(smtp.send_message, mime)
            except CircuitOpenError as exc:
                return _result(self.provider, message, error=f"circuit open (retry in {exc.retry_after:.1f} s)"), smtp
            except aiosmtplib.SMTPServerDisconnected as exc:
                smtp = None
                if attempt == 1:
                    continue  # the server dropped an idle connection: reconnect once
                return _result(self.provider, message, error=f"disconnected: {exc}"), None
            except aiosmtplib.SMTPRecipientsRefused as exc:
                detail = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in exc.recipients)
                return _result(self.provider, message, error=f"refused: {detail}", retryable=not _smtp_permanent(exc)), smtp
            except aiosmtplib.SMTPResponseException as exc:
                return (
                    _result(self.provider, message, error=f"{exc.code} {exc.message}", retryable=not _smtp_permanent(exc)),
                    smtp,
                )
            except (aiosmtplib.SMTPException, OSError) as exc:
                if smtp is not None:
                    smtp.close()
                return _result(self.provider, message, error=f"{type(exc).__name__}: {exc}"), None
            if errors:
                detail = "; ".join(f"{address}: {response}" for address, response in errors.items())
                return _result(self.provider, message, error=f"refused: {detail}", retryable=False), smtp
            log.info("email to %s sent over SMTP", message.to, extra={"notification_id": message.notification_id})
            return _result(self.provider, message, response=reply, provider_message_id=mime["Message-ID"]), smtp
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        return None


# -- SendGrid ----------------------------------------------------------------------------------


class _SendGridRetryable(Exception):
    def __init__(self, error: SendGridHTTPError) -> None:
        super().__init__(f"SendGrid answered {error.status_code}")
        self.error = error


def _body_text(body: Any) -> str | None:
    if body is None:
        return None
    if isinstance(body, bytes):
        return body.decode("utf-8", "replace")
    return str(body)


class SendGridEmail:
    """SendGrid v3 ``mail/send`` through the official SDK, on a bounded thread pool."""

    provider = "sendgrid"

    def __init__(
        self,
        *,
        api_key: str,
        sender: str,
        url: str | None = None,
        concurrency: int = EMAIL_CONCURRENCY,
        timeout: float = PROVIDER_TIMEOUT_SECONDS,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self.client = SendGridAPIClient(api_key=api_key, host=(url or SENDGRID_DEFAULT_URL).rstrip("/"))
        # The SDK's HTTP client has no timeout unless told; every child client inherits this one.
        self.client.client.timeout = timeout
        name, address = parseaddr(sender)
        self.sender = From(address, name or None)
        self.breaker = breaker or CircuitBreaker("notification", "sendgrid")
        self._executor = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="sendgrid")
        self._semaphore = asyncio.Semaphore(concurrency)

    @classmethod
    def from_settings(cls, settings: Any, **kwargs: Any) -> "SendGridEmail":
        if not settings.sendgrid_api_key:
            raise ValueError("email_backend=sendgrid needs ROOMEE_SENDGRID_API_KEY")
        kwargs.setdefault("timeout", settings.provider_timeout_seconds)
        kwargs.setdefault("breaker", CircuitBreaker.from_settings(settings, "notification", "sendgrid"))
        return cls(api_key=settings.sendgrid_api_key, sender=settings.email_from, url=settings.sendgrid_url, **kwargs)

    def mail(self, message: EmailMessage) -> Mail:
        mail = Mail(
            from_email=self.sender,
            to_emails=To(message.to),
            subject=message.subject,
            plain_text_content=message.text,
            html_content=message.html,
        )
        mail.custom_arg = CustomArg("notification_id", message.notification_id)
        return mail

    def _post(self, mail: Mail) -> Any:
        try:
            return self.client.send(mail)
        except SendGridHTTPError as exc:
            if exc.status_code >= 500 or exc.status_code == 429:
                raise _SendGridRetryable(exc) from None
            return exc  # a 4xx is about this message: the provider itself is fine

    async def _in_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _send_one(self, message: EmailMessage) -> AttemptResult:
        mail = self.mail(message)
        async with self._semaphore:
            try:
                outcome = await self.breaker.call(self._in_thread, self._post, mail)
            except CircuitOpenError as exc:
                return _result(self.provider, message, error=f"circuit open (retry in {exc.retry_after:.1f} s)")
            except _SendGridRetryable as exc:
                return _result(
                    self.provider, message, error=f"HTTP {exc.error.status_code}", response=_body_text(exc.error.body)
                )
            except (urllib.error.URLError, socket.timeout, OSError) as exc:
                return _result(self.provider, message, error=f"connection error: {exc}")
        if isinstance(outcome, SendGridHTTPError):
            return _result(
                self.provider,
                message,
                error=f"HTTP {outcome.status_code}",
                retryable=False,
                response=_body_text(outcome.body),
            )
        headers = outcome.headers
        message_id = headers.get("X-Message-Id") if headers is not None else None
        log.info("email to %s sent through SendGrid", message.to, extra={"notification_id": message.notification_id})
        return _result(
            self.provider,
            message,
            response=f"{outcome.status_code} {_body_text(outcome.body) or ''}".strip(),
            provider_message_id=message_id,
        )

    async def send(self, messages: list[EmailMessage]) -> list[AttemptResult]:
        return list(await asyncio.gather(*(self._send_one(message) for message in messages)))

    async def aclose(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
