"""The service's clock: ``ctx.state["clock"]`` (a callable returning an aware datetime) is read on
every use, so tests can move time (quiet hours, deferred releases) on a running platform."""

from __future__ import annotations

from datetime import datetime

from roomee.kit.clock import as_utc, utcnow

CLOCK = "clock"


def install(ctx) -> None:
    ctx.state.setdefault(CLOCK, utcnow)


def now(ctx) -> datetime:
    """The current instant in UTC according to the service's clock."""
    return as_utc(ctx.state.get(CLOCK, utcnow)())
