"""The notification processor (seed Flow 6): event -> template -> preference filter -> rows ->
dispatch, in the consumer's transaction.

For one event, whatever its number of recipients: one query for the directory entries with their
preferences, one for the device subscriptions; one insert for the notification; one statement for
the receiver rows (``COPY`` for a large fan-out on PostgreSQL) and one for the unread counters; one
outbox insert for its delivery jobs. Socket emits wait for the commit.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy.ext.asyncio import AsyncSession

from roomee.kit.events import emit_many
from roomee.kit.metrics import notifications_sent_total
from roomee.notification import clock, directory
from roomee.notification.catalog import DIRECT_EMAILS, EventKind, kind_for, kind_of
from roomee.notification.dispatcher import SocketDispatcher, delivery_jobs, email_requests, push_requests
from roomee.notification.factory import NotificationFactory, Rendered, context_of, resolve_locale
from roomee.notification.preferences import SUPPORTED_CHANNELS, Decision, Preferences, decide
from roomee.notification.repository import (
    DirectoryRepository,
    NotificationRepository,
    SubscriptionRepository,
    preferences_of,
)
from roomee.notification.schemas import NotificationOut

log = logging.getLogger("roomee.notification")

NOTIFICATION_NAMESPACE = uuid.UUID("c2d5e0a4-1b7f-4f3e-8f0a-6b1d9e3c7a52")
# Never kept in a notification nor shown in the app: an invitation link lets its holder sign up.
SENSITIVE_KEYS = frozenset({"signupLink", "token", "invitationToken", "password"})


def notification_id_for(event_id: str) -> str:
    """The same event always makes the same notification (redelivery and replay are idempotent)."""
    return str(uuid.uuid5(NOTIFICATION_NAMESPACE, str(event_id)))


def sanitize(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: sanitize(v) for k, v in value.items() if k not in SENSITIVE_KEYS}
    if isinstance(value, list):
        return [sanitize(v) for v in value]
    return value


# Pushing members from which a fan-out's device lookup runs beside the row writes (PostgreSQL).
PARALLEL_LOOKUP_AT = 1000
# Events that change the local directory: handled one by one (see ``handle_batch``).
_DIRECTORY_PREFIXES = ("member.", "workspace.")


def _is_plain(envelope: dict[str, Any]) -> bool:
    """A notification for receivers of a known workspace that changes nothing else."""
    event_type = envelope.get("type")
    if not isinstance(event_type, str) or event_type.startswith(_DIRECTORY_PREFIXES) or kind_of(event_type) is None:
        return False
    if not envelope.get("workspaceId") or not envelope.get("id"):
        return False
    if not any(c in SUPPORTED_CHANNELS for c in envelope.get("channels") or ()):
        return False
    metadata = envelope.get("metadata")
    return isinstance(metadata, dict) and any(metadata.get("receiverIds") or ())


def _asks_email(kind: EventKind, channels: frozenset[str], prefs: dict[str, Any] | None) -> bool:
    """An article or a comment is emailed to a receiver whose preferences ask for it explicitly
    (``categoryPrefs[category].email: true``): one email per notification, quiet hours applying."""
    if not kind.email_opt_in or "email" in channels or not channels & {"push", "socket"} or not prefs:
        return False
    per_category = (prefs.get("category_prefs") or {}).get(kind.category)
    return isinstance(per_category, dict) and per_category.get("email") is True


def _removed_by(envelope: dict[str, Any]) -> list[str]:
    """Members an event removes (``member.deleted``, ``workspace.deleted``): they get no UI update of it."""
    payload = envelope.get("payload") if isinstance(envelope.get("payload"), dict) else {}
    if envelope.get("type") == "member.deleted" and isinstance(payload.get("member"), dict):
        return [str(payload["member"]["id"])] if payload["member"].get("id") else []
    if envelope.get("type") == "workspace.deleted":
        return [str(m) for m in payload.get("removedMemberIds") or () if m]
    return []


class Recipient(NamedTuple):
    """Who receives a notification, and on which channels (a tuple: one is built per receiver)."""

    member_id: str | None
    locale: str
    email: str | None
    decision: Decision


def push_data(notification: dict[str, Any]) -> dict[str, Any]:
    """What the app receives with a push, to open the right screen."""
    data = {
        "notificationId": notification["id"],
        "type": notification["type"],
        "category": notification["category"],
        "workspaceId": notification["workspace_id"],
    }
    entity = (notification.get("data") or {}).get("id")
    if entity is not None:
        data["entityId"] = str(entity)
    return data


@dataclass
class Planned:
    """Deliveries planned in one transaction: provider requests, emitted as few jobs (see
    ``delivery_jobs``), and deferred-delivery rows, written with one insert."""

    push: list[dict[str, Any]] = field(default_factory=list)
    email: list[dict[str, Any]] = field(default_factory=list)
    deferred: list[dict[str, Any]] = field(default_factory=list)

    def jobs(self) -> list[tuple[str, dict]]:
        return delivery_jobs("push", self.push) + delivery_jobs("email", self.email)


async def plan_deliveries(
    session: AsyncSession,
    notification: dict[str, Any],
    push_members_by_locale: dict[str, list[str]],
    emails_by_locale: dict[str, list[dict[str, Any]]],
    planned: Planned,
    active_subscriptions: dict[str, list[str]] | None = None,
) -> None:
    """Add to ``planned`` the push and email requests for these recipients: push only to the active
    device subscriptions registered for the notification's workspace (``active_subscriptions``:
    member id -> its active subscription ids in that workspace, when the caller looked them up)."""
    if any(push_members_by_locale.values()) and notification["workspace_id"]:
        by_locale: dict[str, list[str]] = defaultdict(list)
        if active_subscriptions is None:
            locale_of = {m: locale for locale, members in push_members_by_locale.items() for m in members}
            found = await SubscriptionRepository(session).active_for(list(locale_of), notification["workspace_id"])
            for member_id, subscription_id in found:
                by_locale[locale_of[member_id]].append(subscription_id)
        else:
            for locale, members in push_members_by_locale.items():
                for member_id in members:
                    by_locale[locale] += active_subscriptions.get(member_id, ())
        # ``push_requests`` sorts each locale's subscriptions: the lookup's order does not matter.
        planned.push += push_requests(notification, {k: v for k, v in by_locale.items() if v}, push_data(notification))
    planned.email += email_requests(notification, {k: v for k, v in emails_by_locale.items() if v})


class NotificationProcessor:
    def __init__(self, ctx, factory: NotificationFactory | None = None) -> None:
        self.ctx = ctx
        self.factory = factory or NotificationFactory()
        self.sockets = SocketDispatcher(ctx)

    async def handle_batch(self, session: AsyncSession, envelopes: list[dict[str, Any]]) -> None:
        """Several events in one transaction, with the effect of handling them one by one in
        delivery order.

        Runs of "plain" events (a notification type, a workspace, receivers; no directory change)
        are handled together, set-based: one query for each workspace, one for the directory
        entries with their preferences and one for the device subscriptions of the whole run, one
        insert for its notifications, one for its receiver rows, one counter upsert, one outbox
        insert, one after-commit socket callback. Any other event (directory updates, invitations,
        broadcasts, events without a workspace) is handled alone, between the runs, so later events
        see its changes.
        """
        run: list[dict[str, Any]] = []
        for envelope in envelopes:
            if _is_plain(envelope):
                run.append(envelope)
                continue
            if run:
                await self._handle_plain(session, run)
                run = []
            await self.handle(session, envelope)
        if run:
            await self._handle_plain(session, run)

    async def _handle_plain(self, session: AsyncSession, envelopes: list[dict[str, Any]]) -> None:
        now = clock.now(self.ctx)
        directory_repo = DirectoryRepository(session)
        events = []
        for envelope in envelopes:
            metadata = envelope.get("metadata") or {}
            events.append(
                (
                    envelope,
                    kind_for(envelope),
                    frozenset(c for c in envelope.get("channels") or () if c in SUPPORTED_CHANNELS),
                    str(envelope["workspaceId"]),
                    list(dict.fromkeys(str(r) for r in metadata.get("receiverIds") or () if r)),
                )
            )
        workspace_ids = sorted({e[3] for e in events})
        workspaces = {w: await directory_repo.workspace(w) for w in workspace_ids}
        members = await self._known_members(session, sorted({r for e in events for r in e[4]}), now)

        planned: list[tuple[dict[str, Any], list[Recipient]]] = []
        for envelope, kind, channels, workspace_id, receivers in events:
            payload = envelope.get("payload") if isinstance(envelope.get("payload"), dict) else {}
            workspace = workspaces[workspace_id] or {}
            recipients = self._select_recipients(
                receivers, members, workspace_id, kind, channels,
                workspace.get("locale") or payload.get("locale"), workspace.get("timezone"), now,
            )
            if recipients:
                row = self._notification_row(envelope, kind, context_of(envelope), workspace_id, recipients, now)
                planned.append((row, recipients))
        if planned:
            await self._store(session, planned, now)

    async def _store(
        self, session: AsyncSession, planned: list[tuple[dict[str, Any], list[Recipient]]], now: datetime
    ) -> None:
        """Store notifications with their recipients, plan their deliveries and queue the socket
        emits; a notification stored already (its event was handled) is skipped."""
        pushing: dict[str, set[str]] = defaultdict(set)
        for row, recipients in planned:
            pushing[row["workspace_id"]].update(r.member_id for r in recipients if r.decision.push and r.member_id)
        # On PostgreSQL a large fan-out looks its devices up on a connection of its own while this
        # one writes the rows (10 000 members: 40-130 ms saved); a small batch does it in its own
        # transaction, where it costs one statement rather than a connection's BEGIN and COMMIT.
        # On SQLite it follows the writes.
        parallel = self.ctx.db.is_postgres and sum(map(len, pushing.values())) >= PARALLEL_LOOKUP_AT
        lookup = asyncio.ensure_future(self._active_subscriptions(pushing, None)) if parallel else None
        try:
            await self._write(session, planned, now, pushing, lookup)
        finally:
            if lookup is not None:
                if not lookup.done():
                    lookup.cancel()
                await asyncio.gather(lookup, return_exceptions=True)  # an unused failure is not lost in a warning

    async def _active_subscriptions(
        self, pushing: dict[str, set[str]], session: AsyncSession | None
    ) -> dict[str, dict[str, list[str]]]:
        """Per workspace: member id -> its active device subscriptions there (``session``: the
        consumer's, or None for a transaction of its own)."""
        if session is None:
            async with self.ctx.db.transaction() as own:
                return await self._active_subscriptions(pushing, own)
        active: dict[str, dict[str, list[str]]] = {}
        for w, member_ids in pushing.items():
            active[w] = defaultdict(list)
            if member_ids:
                for member_id, subscription_id in await SubscriptionRepository(session).active_for(sorted(member_ids), w):
                    active[w][member_id].append(subscription_id)
        return active

    async def _write(
        self,
        session: AsyncSession,
        planned: list[tuple[dict[str, Any], list[Recipient]]],
        now: datetime,
        pushing: dict[str, set[str]],
        lookup: asyncio.Future | None,
    ) -> None:
        repo = NotificationRepository(session)
        inserted = await repo.insert_many([row for row, _ in planned])
        fresh = []
        for row, recipients in planned:
            if row["id"] in inserted:
                fresh.append((row, recipients, [r for r in recipients if r.decision.app and r.member_id]))
            else:
                log.info("notification for event %s exists already; skipped", row["event_id"])
        if not fresh:
            return
        counters = await repo.add_receivers(
            now,
            [
                (row["id"], r.member_id, row["workspace_id"], r.locale, r.decision.summary)
                for row, _, in_app in fresh
                for r in in_app
            ],
        )

        active = await lookup if lookup is not None else await self._active_subscriptions(pushing, session)
        deliveries = Planned()
        for row, recipients, _ in fresh:
            await self._deliveries(session, row, recipients, now, deliveries, active[row["workspace_id"]])
        await repo.insert_deferred(deliveries.deferred)
        await emit_many(session, deliveries.jobs())

        notices = []
        for row, _, in_app in fresh:
            if not in_app:
                continue
            members_by_locale: dict[str, list[str]] = defaultdict(list)
            for r in in_app:
                members_by_locale[r.locale].append(r.member_id)
            payloads = {locale: NotificationOut.of(row, locale).wire() for locale in members_by_locale}
            notices.append((payloads, dict(members_by_locale)))
        counters_by_workspace: dict[str, dict[str, int]] = defaultdict(dict)
        for (member_id, workspace_id), count in counters.items():
            counters_by_workspace[workspace_id][member_id] = count
        if notices:
            self.sockets.notify_many_after_commit(session, notices, dict(counters_by_workspace))

    async def handle(self, session: AsyncSession, envelope: dict[str, Any]) -> None:
        now = clock.now(self.ctx)
        await directory.apply_event(session, envelope, now)
        kind = kind_for(envelope)
        if kind is None:
            log.debug("no notification for event type %s", envelope.get("type"))
            return
        channels = frozenset(c for c in envelope.get("channels") or () if c in SUPPORTED_CHANNELS)
        if not channels:
            return
        metadata = envelope.get("metadata") or {}
        receivers = list(dict.fromkeys(str(r) for r in metadata.get("receiverIds") or () if r))
        workspace_id = envelope.get("workspaceId")
        if receivers and not workspace_id:
            workspace_id = await self._workspace_of(session, envelope, receivers)
            if workspace_id is None:
                receivers = []
        payload = envelope.get("payload") if isinstance(envelope.get("payload"), dict) else {}
        workspace = await DirectoryRepository(session).workspace(workspace_id) if workspace_id else None
        workspace_locale = (workspace or {}).get("locale") or payload.get("locale")
        workspace_timezone = (workspace or {}).get("timezone")
        context = context_of(envelope)

        invitation = kind.type in DIRECT_EMAILS  # an invitation, or an email about the recipient's account
        if invitation:
            if "email" in channels and payload.get("email"):
                locale = resolve_locale(payload.get("locale"), workspace_locale)
                await self._send_invitation(session, envelope, kind, context, workspace_id, locale, str(payload["email"]))
            # The inviter follows the invitation in the app; the email with the link is the invitee's alone.
            channels = channels - {"email", "push"}
        if not receivers:
            if channels == {"socket"} and workspace_id and not invitation:
                self._broadcast(session, envelope, kind, context, workspace_id, workspace_locale, now)
            return
        if not channels:
            return

        recipients = await self._recipients(
            session, receivers, workspace_id, kind, channels, workspace_locale, workspace_timezone, now
        )
        if not recipients:
            return
        await self._store(
            session, [(self._notification_row(envelope, kind, context, workspace_id, recipients, now), recipients)], now
        )

    async def _send_invitation(
        self,
        session: AsyncSession,
        envelope: dict[str, Any],
        kind: EventKind,
        context: dict[str, Any],
        workspace_id: str | None,
        locale: str,
        address: str,
    ) -> None:
        """The invitee's email, which holds the sign-up link: a delivery job whose outbox row is deleted
        once published; never in a notification's renders, another member's copy, or the logs."""
        email = self.factory.render_email(kind.templates, locale, context,
                                         self.factory.render(kind.templates, locale, context))
        message = {
            "id": notification_id_for(envelope["id"]),
            "workspace_id": workspace_id,
            "hotel_id": envelope.get("ecosystemId"),
            "renders": {locale: {"subject": email.subject, "text": email.text, "html": email.html}},
        }
        requests = email_requests(message, {locale: [{"memberId": None, "to": address}]})
        await emit_many(session, delivery_jobs("email", requests), sensitive=True)

    async def _workspace_of(self, session: AsyncSession, envelope: dict[str, Any], receivers: list[str]) -> str | None:
        """An event without ``workspaceId`` (a hotel event, say) belongs to its receivers' workspace,
        when the directory knows them all in one workspace."""
        members = await self._known_members(session, receivers, clock.now(self.ctx))
        workspaces = {entry.workspace_id for entry in members.values()}
        if len(members) == len(receivers) and len(workspaces) == 1:
            return workspaces.pop()
        log.warning("event %s names receivers but no workspace, and they are not all of one known workspace; "
                    "ignored", envelope.get("id"))
        return None

    async def _known_members(self, session: AsyncSession, member_ids: list[str], now: datetime) -> dict[str, Any]:
        """Directory entries of these members, after asking the members service about unknown ones."""
        repo = DirectoryRepository(session)
        members = await repo.members(member_ids)
        unknown = [m for m in member_ids if m not in members]
        if unknown:
            await directory.resolve_members(self.ctx, session, unknown, now)
            members |= await repo.members(unknown)
        return members

    async def _recipients(
        self,
        session: AsyncSession,
        receivers: list[str],
        workspace_id: str,
        kind: EventKind,
        channels: frozenset[str],
        workspace_locale: str | None,
        workspace_timezone: str | None,
        now: datetime,
    ) -> list[Recipient]:
        if not receivers:
            return []
        members = await self._known_members(session, receivers, now)
        return self._select_recipients(
            receivers, members, workspace_id, kind, channels, workspace_locale, workspace_timezone, now
        )

    def _select_recipients(
        self,
        receivers: list[str],
        members: dict[str, Any],
        workspace_id: str,
        kind: EventKind,
        channels: frozenset[str],
        workspace_locale: str | None,
        workspace_timezone: str | None,
        now: datetime,
    ) -> list[Recipient]:
        """Who gets what (``members``: directory entries with their preferences, see
        ``DirectoryRepository.members``; only those of this workspace receive)."""
        recipients = []
        # Most members share their preferences' effect (no row, same timezone): decide once for
        # each; and few locales: resolve each once.
        decided: dict[tuple[str | None, str | None], Decision] = {}
        locales: dict[str | None, str] = {}
        for member_id in receivers:
            entry = members.get(member_id)
            if entry is None or entry.deleted_at is not None or entry.workspace_id != workspace_id:
                # No such member, removed, or not of this workspace: the event's word is not enough.
                continue
            timezone = entry.timezone or workspace_timezone
            key = (member_id if entry.has_preferences else None, timezone)
            decision = decided.get(key)
            if decision is None:
                prefs = preferences_of(entry)
                decision = decided[key] = decide(
                    Preferences.from_row(prefs), category=kind.category,
                    channels=channels | {"email"} if _asks_email(kind, channels, prefs) else channels,
                    member_timezone=timezone, now=now,
                )
            if not decision.anything:
                continue
            locale = locales.get(entry.locale)
            if locale is None:
                locale = locales[entry.locale] = resolve_locale(entry.locale, workspace_locale)
            recipients.append(Recipient(member_id, locale, entry.email, decision))
        return recipients

    def _renders(
        self, kind: EventKind, context: dict[str, Any], recipients: list[Recipient]
    ) -> dict[str, dict[str, str]]:
        renders: dict[str, dict[str, str]] = {}
        for locale in sorted({r.locale for r in recipients}):
            rendered = self.factory.render(kind.templates, locale, context)
            renders[locale] = {"title": rendered.title, "body": rendered.body}
        emailing = {r.locale for r in recipients if r.decision.email or "email" in r.decision.deferred}
        for locale in sorted(emailing):
            rendered = Rendered(renders[locale]["title"], renders[locale]["body"])
            email = self.factory.render_email(kind.templates, locale, context, rendered)
            renders[locale].update(subject=email.subject, text=email.text, html=email.html)
        return renders

    def _notification_row(
        self,
        envelope: dict[str, Any],
        kind: EventKind,
        context: dict[str, Any],
        workspace_id: str | None,
        recipients: list[Recipient],
        now: datetime,
    ) -> dict[str, Any]:
        actor = (envelope.get("metadata") or {}).get("actor") or {}
        return {
            "id": notification_id_for(envelope["id"]),
            "event_id": str(envelope["id"]),
            "workspace_id": workspace_id,
            "hotel_id": envelope.get("ecosystemId"),
            "type": kind.type,
            "category": kind.category,
            "actor_id": actor.get("id"),
            "actor_name": actor.get("name"),
            "actor_type": actor.get("type"),
            "renders": self._renders(kind, context, recipients),
            "data": sanitize(envelope.get("payload") or {}),
            "created_at": now,
        }

    async def _deliveries(
        self,
        session: AsyncSession,
        notification: dict[str, Any],
        recipients: list[Recipient],
        now: datetime,
        planned: Planned,
        active_subscriptions: dict[str, list[str]],
    ) -> None:
        """Add to ``planned`` the deferred rows and the push and email requests of a notification."""
        deferred = [r for r in recipients if r.decision.deferred and r.member_id]
        if deferred:
            planned.deferred.extend(
                [
                    {
                        "id": str(uuid.uuid4()),
                        "notification_id": notification["id"],
                        "member_id": r.member_id,
                        "workspace_id": notification["workspace_id"],
                        "channels": ",".join(r.decision.deferred),
                        "locale": r.locale,
                        "release_at": r.decision.release_at,
                        "created_at": now,
                        "released_at": None,
                    }
                    for r in deferred
                ]
            )
            for channel in ("push", "email"):
                held = sum(1 for r in deferred if channel in r.decision.deferred)
                if held:
                    notifications_sent_total.labels(channel, "deferred").inc(held)

        push_members: dict[str, list[str]] = defaultdict(list)
        emails: dict[str, list[dict[str, Any]]] = defaultdict(list)
        unknown_addresses = 0
        for r in recipients:
            if r.decision.push and r.member_id:
                push_members[r.locale].append(r.member_id)
            if r.decision.email:
                if r.email:
                    emails[r.locale].append({"memberId": r.member_id, "to": r.email})
                else:
                    unknown_addresses += 1
        if unknown_addresses:
            log.warning("no email address known for %d member(s) (directory not synced yet?); their email is skipped",
                        unknown_addresses, extra={"notification_id": notification["id"]})
        await plan_deliveries(session, notification, dict(push_members), dict(emails), planned, active_subscriptions)

    def _broadcast(
        self,
        session: AsyncSession,
        envelope: dict[str, Any],
        kind: EventKind,
        context: dict[str, Any],
        workspace_id: str,
        workspace_locale: str | None,
        now: datetime,
    ) -> None:
        """A socket-only UI update (no receivers): one emit to the workspace room, without the actor."""
        locale = resolve_locale(workspace_locale)
        rendered = self.factory.render(kind.templates, locale, context)
        actor = (envelope.get("metadata") or {}).get("actor") or {}
        row = {
            "id": None,
            "type": kind.type,
            "category": kind.category,
            "workspace_id": workspace_id,
            "renders": {locale: {"title": rendered.title, "body": rendered.body}},
            "data": sanitize(envelope.get("payload") or {}),
            "actor_id": actor.get("id"),
            "actor_name": actor.get("name"),
            "actor_type": actor.get("type"),
            "created_at": now,
        }
        skip = [str(actor["id"])] if actor.get("id") and actor.get("type") != "system" else []
        skip += _removed_by(envelope)  # nobody is told of their own removal
        self.sockets.broadcast_after_commit(
            session, workspace_id=workspace_id, payload=NotificationOut.of(row, locale).wire(), skip_member_ids=skip
        )
