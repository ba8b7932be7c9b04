"""The preference filter (seed Flow 6), as pure functions of a member's preferences and the time.

1. ``isGlobalSilent``: nothing at all.
2. ``categoryPrefs[category]``: ``app`` (in-app list + socket), ``push``, ``email``; a category or
   channel left out is allowed.
3. Quiet hours (``start``/``end`` as ``HH:MM`` in the quiet-hours timezone, else the member's; the
   window may span midnight): only the socket goes out; push and email are dropped (``skip``, the
   seed's behaviour) or held until the window ends (``defer``).
4. The event's own ``channels`` bound all of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from datetime import UTC, datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from roomee.kit.schemas import is_time_zone
from roomee.notification.catalog import CHANNEL_PREFS

QuietMode = Literal["skip", "defer"]
# Event channel -> preference key.
PREF_OF_CHANNEL = {"socket": "app", "push": "push", "email": "email"}
SUPPORTED_CHANNELS = tuple(PREF_OF_CHANNEL)


def parse_hhmm(value: str) -> time:
    hours, _, minutes = value.partition(":")
    if len(value) != 5 or not hours.isdigit() or not minutes.isdigit():
        raise ValueError(f"expected HH:MM, got {value!r}")
    return time(int(hours), int(minutes))


def zone(name: str | None) -> ZoneInfo:
    """The named timezone; UTC when unset or unknown (a stale directory must not stop delivery)."""
    return ZoneInfo(name if name and is_time_zone(name) else "UTC")


@dataclass(frozen=True)
class QuietHours:
    start: time
    end: time
    timezone: str | None = None
    mode: QuietMode = "skip"

    def window_at(self, now: datetime, member_timezone: str | None) -> datetime | None:
        """When the quiet period containing ``now`` ends (UTC), or None outside quiet hours."""
        tz = zone(self.timezone or member_timezone)
        local = now.astimezone(tz)
        current = local.time().replace(tzinfo=None)
        if self.start == self.end:
            return None
        if self.start < self.end:  # same-day window, e.g. 13:00-15:00
            inside = self.start <= current < self.end
            end_day = local.date()
        else:  # spans midnight, e.g. 22:00-07:00
            inside = current >= self.start or current < self.end
            end_day = local.date() + timedelta(days=1) if current >= self.start else local.date()
        if not inside:
            return None
        # Wall-clock end in the zone; zoneinfo resolves a DST gap or fold to a real instant.
        ends = datetime.combine(end_day, self.end, tzinfo=tz)
        return ends.astimezone(UTC)


@dataclass(frozen=True)
class Preferences:
    is_global_silent: bool = False
    category_prefs: dict[str, dict[str, bool]] = field(default_factory=dict)
    quiet_hours: QuietHours | None = None

    def allows(self, category: str, pref: str) -> bool:
        per_category = self.category_prefs.get(category) or {}
        value = per_category.get(pref)
        return True if value is None else bool(value)

    @classmethod
    def from_row(cls, row: dict[str, Any] | None) -> "Preferences":
        if row is None:
            return DEFAULT_PREFERENCES
        quiet = None
        if row.get("quiet_start") and row.get("quiet_end"):
            quiet = QuietHours(
                start=parse_hhmm(row["quiet_start"]),
                end=parse_hhmm(row["quiet_end"]),
                timezone=row.get("quiet_timezone"),
                mode=row.get("quiet_mode") or "skip",
            )
        return cls(
            is_global_silent=bool(row.get("is_global_silent")),
            category_prefs=dict(row.get("category_prefs") or {}),
            quiet_hours=quiet,
        )


DEFAULT_PREFERENCES = Preferences()


@dataclass(frozen=True)
class Decision:
    """What one recipient gets for one event."""

    app: bool = False  # in-app row, unread counter and socket
    push: bool = False  # now
    email: bool = False  # now
    deferred: tuple[str, ...] = ()  # "push"/"email" held until ``release_at``
    release_at: datetime | None = None

    @property
    def anything(self) -> bool:
        return self.app or self.push or self.email or bool(self.deferred)

    @property
    def sent_channels(self) -> list[str]:
        return [c for c, on in (("socket", self.app), ("push", self.push), ("email", self.email)) if on]

    @cached_property
    def summary(self) -> str:
        """What the receiver row records: ``socket,push`` or ``socket,push:deferred``."""
        return ",".join(self.sent_channels + [f"{c}:deferred" for c in self.deferred])


NOTHING = Decision()


def decide(
    prefs: Preferences,
    *,
    category: str,
    channels: set[str] | frozenset[str],
    member_timezone: str | None,
    now: datetime,
) -> Decision:
    if prefs.is_global_silent:
        return NOTHING
    wanted = {c for c in channels if c in PREF_OF_CHANNEL and prefs.allows(category, PREF_OF_CHANNEL[c])}
    if not wanted:
        return NOTHING
    app = "socket" in wanted
    loud = [c for c in ("push", "email") if c in wanted]
    if loud and prefs.quiet_hours is not None:
        release_at = prefs.quiet_hours.window_at(now, member_timezone)
        if release_at is not None:
            if prefs.quiet_hours.mode == "defer":
                return Decision(app=app, deferred=tuple(loud), release_at=release_at)
            return Decision(app=app)
    return Decision(app=app, push="push" in loud, email="email" in loud)


__all__ = [
    "CHANNEL_PREFS",
    "DEFAULT_PREFERENCES",
    "Decision",
    "Preferences",
    "QuietHours",
    "decide",
    "parse_hhmm",
    "zone",
]
