"""Request and response bodies of the notification service (camelCase on the wire)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from roomee.kit.clock import as_utc
from roomee.kit.schemas import CamelModel, TimeZone
from roomee.notification.catalog import CATEGORIES
from roomee.notification.preferences import parse_hhmm

HHMM = r"^([01]\d|2[0-3]):[0-5]\d$"


class Actor(CamelModel):
    id: str | None = None
    name: str | None = None
    type: str | None = None


class NotificationOut(CamelModel):
    """One notification as a member sees it (REST and the ``notification:new`` socket event)."""

    id: str | None = Field(description="Null for socket-only UI updates, which are not stored.")
    type: str
    category: str
    workspace_id: str | None
    title: str
    body: str
    data: dict[str, Any]
    actor: Actor | None
    created_at: datetime
    read_at: datetime | None = None

    @classmethod
    def of(cls, row: dict[str, Any], locale: str, *, read_at: datetime | None = None) -> "NotificationOut":
        renders = row["renders"] or {}
        render = renders.get(locale) or next(iter(renders.values()), {"title": "", "body": ""})
        actor = None
        if row.get("actor_id") or row.get("actor_name"):
            actor = Actor(id=row.get("actor_id"), name=row.get("actor_name"), type=row.get("actor_type"))
        return cls(
            id=row["id"],
            type=row["type"],
            category=row["category"],
            workspace_id=row["workspace_id"],
            title=render["title"],
            body=render["body"],
            data=row["data"] or {},
            actor=actor,
            created_at=as_utc(row["created_at"]),
            read_at=as_utc(read_at if read_at is not None else row.get("read_at")),
        )

    def wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


class ChannelPrefs(CamelModel):
    app: bool = Field(default=True, description="In-app list and real-time socket.")
    push: bool = True
    email: bool = True


class QuietHoursIn(CamelModel):
    start: str = Field(pattern=HHMM, description="Start of the quiet period, HH:MM local time.", examples=["22:00"])
    end: str = Field(pattern=HHMM, description="End of the quiet period (may be after midnight).", examples=["07:00"])
    timezone: TimeZone | None = Field(default=None, description="IANA timezone; default the member's timezone.")
    mode: Literal["skip", "defer"] = Field(
        default="skip", description="`skip`: push and email are dropped; `defer`: sent when the period ends."
    )

    @model_validator(mode="after")
    def _not_empty(self) -> "QuietHoursIn":
        if parse_hhmm(self.start) == parse_hhmm(self.end):
            raise ValueError("start and end must differ")
        return self


class PreferencesIn(CamelModel):
    is_global_silent: bool = False
    category_prefs: dict[str, ChannelPrefs] = Field(default_factory=dict)
    quiet_hours: QuietHoursIn | None = None

    @field_validator("category_prefs")
    @classmethod
    def _known_categories(cls, value: dict[str, ChannelPrefs]) -> dict[str, ChannelPrefs]:
        unknown = sorted(set(value) - set(CATEGORIES))
        if unknown:
            raise ValueError(f"unknown categories {unknown}; known: {list(CATEGORIES)}")
        return value


class PreferencesOut(CamelModel):
    member_id: str
    workspace_id: str
    is_global_silent: bool
    category_prefs: dict[str, ChannelPrefs]
    quiet_hours: QuietHoursIn | None
    updated_at: datetime | None


class Counters(CamelModel):
    workspace_id: str
    member_id: str
    unread: int


class ReadAllOut(CamelModel):
    workspace_id: str
    marked: int
    unread: int


class RecountOut(CamelModel):
    workspace_id: str
    corrected: int


class SubscriptionIn(CamelModel):
    workspace_id: str = Field(min_length=1, max_length=36)
    platform: Literal["ios", "android", "web"]
    subscription_id: str = Field(min_length=1, max_length=128, description="The OneSignal subscription id.")
    is_active: bool = True


class SubscriptionOut(CamelModel):
    id: str
    member_id: str
    workspace_id: str
    platform: str
    subscription_id: str
    is_active: bool
    created_at: datetime
    updated_at: datetime
