"""Delivery channels of the notification service: Socket.IO, push (OneSignal) and email.

The pipeline (processor, delivery consumers) decides who gets what; the channels only speak to
the outside world and report what happened. One interface per channel, a backend chosen by
settings (push: ``log`` | ``onesignal``; email: ``file`` | ``smtp`` | ``sendgrid``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Literal, Protocol

# "logged": handled by a backend that delivers nothing (the log push backend).
AttemptStatus = Literal["sent", "logged", "failed"]

# Socket.IO event names (the seed's ``notification:new``; the counter update beside it).
NOTIFICATION_NEW = "notification:new"
UNREAD_COUNTERS = "notification:unread"


@dataclass(frozen=True)
class PushMessage:
    """One notification in one language, for a set of device subscriptions."""

    notification_id: str
    workspace_id: str
    title: str
    body: str
    data: dict[str, Any]
    subscription_ids: list[str]
    locale: str = "fr"


@dataclass(frozen=True)
class EmailMessage:
    notification_id: str
    member_id: str | None
    to: str
    subject: str
    text: str
    html: str


@dataclass
class AttemptResult:
    """What one provider request did; becomes ``delivery_attempt`` rows."""

    channel: Literal["push", "email", "socket"]
    provider: str
    status: AttemptStatus
    recipients: list[str] = field(default_factory=list)  # subscription ids, or email addresses
    response: str | None = None
    error: str | None = None
    retryable: bool = True
    # Added: the provider's id for the request (OneSignal notification id, SendGrid X-Message-Id,
    # SMTP queue reply, file path), and recipients the provider reported as invalid/unsubscribed
    # (OneSignal ``errors.invalid_player_ids``): the pipeline may deactivate those subscriptions.
    provider_message_id: str | None = None
    invalid_recipients: list[str] = field(default_factory=list)


class PushChannel(Protocol):
    provider: str

    async def send(self, message: PushMessage, *, idempotency_key: str) -> list[AttemptResult]:
        """Send in batches of at most 2 000 subscriptions; one result per provider request."""


class EmailChannel(Protocol):
    provider: str

    async def send(self, messages: list[EmailMessage]) -> list[AttemptResult]:
        """Send each message; one result per message."""


class SocketChannel(Protocol):
    async def to_members(self, member_ids: list[str], event: str, payload: dict[str, Any]) -> None:
        """Emit to the rooms ``member:{id}``."""

    async def to_members_many(self, emits: Sequence[tuple[str, dict[str, Any], Iterable[str]]]) -> None:
        """Several ``(event, payload, member_ids)`` emits, in order, at the cost of about one."""

    async def to_workspace(
        self, workspace_id: str, event: str, payload: dict[str, Any], *, skip_member_ids: list[str] = ()
    ) -> None:
        """Emit once to the room ``workspace:{id}``, leaving out the given members' sockets."""

    async def to_sid(self, sid: str, event: str, payload: dict[str, Any]) -> None:
        """Emit to one socket (added: e.g. the unread counter right after it connects)."""

    def on_member_connect(self, listener: Callable[[str, Any], Awaitable[None]]) -> None:
        """Added: call ``await listener(sid, principal)`` after a member's socket joined its rooms."""


@dataclass
class Channels:
    """The three delivery channels of one notification service context."""

    socket: SocketChannel
    push: PushChannel
    email: EmailChannel

    async def aclose(self) -> None:
        """Release the providers' connections and threads (the socket server closes with the target)."""
        for channel in (self.push, self.email):
            close = getattr(channel, "aclose", None)
            if close is not None:
                await close()


def build_push(settings: Any) -> PushChannel:
    """The push backend named by ``settings.push_backend`` (``log`` | ``onesignal``)."""
    from roomee.notification.channels.push import LogPush, OneSignalPush

    if settings.push_backend == "onesignal":
        return OneSignalPush.from_settings(settings)
    if settings.push_backend == "log":
        return LogPush()
    raise ValueError(f"unknown push backend {settings.push_backend!r}")


def build_email(settings: Any) -> EmailChannel:
    """The email backend named by ``settings.email_backend`` (``file`` | ``smtp`` | ``sendgrid``)."""
    from roomee.notification.channels.email import FileEmail, SendGridEmail, SmtpEmail

    if settings.email_backend == "smtp":
        return SmtpEmail.from_settings(settings)
    if settings.email_backend == "sendgrid":
        return SendGridEmail.from_settings(settings)
    if settings.email_backend == "file":
        return FileEmail.from_settings(settings)
    raise ValueError(f"unknown email backend {settings.email_backend!r}")


def build_channels(ctx: Any) -> Channels:
    """The channels of the notification service context, backends chosen by ``ctx.settings``.

    Idempotent per context (kept in ``ctx.state["channels"]``); the socket channel is the
    target's Socket.IO server (created here if the target was not mounted, e.g. a worker-only
    process: its emits still reach other replicas through RabbitMQ). Closing the providers is
    closed by ``ctx.on_stop``.
    """
    channels = ctx.state.get("channels")
    if channels is None:
        from roomee.notification.realtime.server import socket_server

        channels = Channels(socket=socket_server(ctx), push=build_push(ctx.settings), email=build_email(ctx.settings))
        ctx.state["channels"] = channels
        ctx.on_stop(channels.aclose)
    return channels
