"""A circuit breaker with opossum semantics (ARCHITECTURE §3).

Unlike the usual Python breakers, which count *consecutive* failures, this one keeps a rolling
window of ``rolling_window_ms`` split into buckets (10, as opossum does) and opens when, with at
least ``volume_threshold`` calls in the window, the error percentage reaches
``error_threshold_percentage``. A call that exceeds ``timeout_ms`` counts as an error.

States:

- CLOSED: calls go through and their outcomes are counted.
- OPEN: calls fail fast with :class:`CircuitOpenError` (the function is not called) until
  ``reset_timeout_ms`` has elapsed since the circuit opened.
- HALF_OPEN: exactly one trial call goes through; concurrent calls fail fast. A successful trial
  closes the circuit with fresh statistics, a failed one opens it again with a new reset timer.

The OPEN -> HALF_OPEN transition is evaluated lazily (on the next call or when ``state`` is read),
so the clock is the only source of time and tests need no sleeps. The state is published to the
``circuit_breaker_state`` gauge (0 closed, 1 half-open, 2 open) and every transition is logged.

The breaker is meant for one asyncio event loop (its bookkeeping is not thread-safe).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from roomee.kit.metrics import circuit_breaker_state

log = logging.getLogger("roomee.breaker")

T = TypeVar("T")

DEFAULT_BUCKETS = 10


class BreakerState(enum.IntEnum):
    """The value published to the ``circuit_breaker_state`` gauge."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitOpenError(Exception):
    """The circuit is open (or a half-open trial is already running): the call was not made."""

    def __init__(self, service: str, target: str, retry_after: float) -> None:
        super().__init__(f"circuit {service}->{target} is open")
        self.service = service
        self.target = target
        self.retry_after = retry_after


class CallTimeoutError(TimeoutError):
    """The call exceeded the breaker's ``timeout_ms``; it counts as a failure."""

    def __init__(self, service: str, target: str, timeout_ms: int) -> None:
        super().__init__(f"call {service}->{target} timed out after {timeout_ms} ms")
        self.service = service
        self.target = target
        self.timeout_ms = timeout_ms


@dataclass(frozen=True)
class WindowStats:
    """What the rolling window holds right now."""

    calls: int
    failures: int

    @property
    def successes(self) -> int:
        return self.calls - self.failures

    @property
    def error_percentage(self) -> float:
        return 100.0 * self.failures / self.calls if self.calls else 0.0


class _Bucket:
    __slots__ = ("index", "calls", "failures")

    def __init__(self, index: int) -> None:
        self.index = index
        self.calls = 0
        self.failures = 0


def default_is_failure(outcome: object) -> bool:
    """Exceptions are failures, returned values are successes."""
    return isinstance(outcome, BaseException)


class CircuitBreaker:
    """Rolling-window circuit breaker guarding calls from ``service`` to ``target``."""

    def __init__(
        self,
        service: str,
        target: str,
        *,
        error_threshold_percentage: float = 50,
        reset_timeout_ms: int = 10_000,
        rolling_window_ms: int = 10_000,
        volume_threshold: int = 5,
        buckets: int = DEFAULT_BUCKETS,
        timeout_ms: int | None = None,
        is_failure: Callable[[object], bool] | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if rolling_window_ms <= 0 or buckets <= 0:
            raise ValueError("rolling_window_ms and buckets must be positive")
        if not 0 <= error_threshold_percentage <= 100:
            raise ValueError("error_threshold_percentage must be between 0 and 100")
        self.service = service
        self.target = target
        self.error_threshold_percentage = error_threshold_percentage
        self.reset_timeout_ms = reset_timeout_ms
        self.rolling_window_ms = rolling_window_ms
        self.volume_threshold = volume_threshold
        self.bucket_count = buckets
        self.timeout_ms = timeout_ms
        self._bucket_seconds = rolling_window_ms / 1000 / buckets
        self._is_failure = is_failure or default_is_failure
        self._clock = clock or time.monotonic
        self._buckets: list[_Bucket] = []
        self._state = BreakerState.CLOSED
        self._opened_at = 0.0
        self._trial_running = False
        # Bumped on every transition: a call that started under an earlier state does not
        # count in the statistics of the new one.
        self._generation = 0
        self._gauge = circuit_breaker_state.labels(service=service, target=target)
        self._gauge.set(int(BreakerState.CLOSED))

    @classmethod
    def from_settings(cls, settings: Any, service: str, target: str, **overrides: Any) -> "CircuitBreaker":
        """A breaker configured by the ``breaker_*`` settings; keyword arguments override them."""
        options: dict[str, Any] = {
            "error_threshold_percentage": settings.breaker_error_threshold_percentage,
            "reset_timeout_ms": settings.breaker_reset_timeout_ms,
            "rolling_window_ms": settings.breaker_rolling_window_ms,
            "volume_threshold": settings.breaker_volume_threshold,
        }
        options.update(overrides)
        return cls(service, target, **options)

    # -- state ---------------------------------------------------------------------------------

    @property
    def state(self) -> BreakerState:
        """The current state (moves OPEN -> HALF_OPEN once the reset timeout has elapsed)."""
        if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self.reset_timeout_ms / 1000:
            self._transition(BreakerState.HALF_OPEN)
        return self._state

    @property
    def stats(self) -> WindowStats:
        """Calls and failures in the rolling window."""
        self._prune(self._current_index())
        return WindowStats(
            calls=sum(b.calls for b in self._buckets),
            failures=sum(b.failures for b in self._buckets),
        )

    def retry_after(self) -> float:
        """Seconds until an open circuit lets a trial call through (0 when not open)."""
        if self.state is not BreakerState.OPEN:
            return 0.0
        return max(0.0, self._opened_at + self.reset_timeout_ms / 1000 - self._clock())

    def is_failure(self, outcome: object) -> bool:
        """Policy hook: does this raised exception or returned value count as a failure?"""
        return self._is_failure(outcome)

    def reset(self) -> None:
        """Force the circuit closed with empty statistics."""
        self._buckets.clear()
        self._trial_running = False
        if self._state is not BreakerState.CLOSED:
            self._transition(BreakerState.CLOSED)

    # -- calls ---------------------------------------------------------------------------------

    async def call(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """Call ``await fn(*args, **kwargs)`` through the breaker.

        Raises :class:`CircuitOpenError` without calling ``fn`` when the circuit is open or a
        half-open trial is already running. Exceptions from ``fn`` are re-raised unchanged; a
        call exceeding ``timeout_ms`` raises :class:`CallTimeoutError`.
        """
        state = self.state
        trial = False
        if state is BreakerState.OPEN or (state is BreakerState.HALF_OPEN and self._trial_running):
            raise CircuitOpenError(self.service, self.target, self.retry_after())
        if state is BreakerState.HALF_OPEN:
            self._trial_running = True
            trial = True
        generation = self._generation
        try:
            result = await self._invoke(fn, args, kwargs)
        except BaseException as exc:
            if isinstance(exc, Exception):
                self._record(generation, trial, failed=self.is_failure(exc))
            elif trial and self._generation == generation:
                # Cancelled trial: no verdict, let the next call try again.
                self._trial_running = False
            raise
        self._record(generation, trial, failed=self.is_failure(result))
        return result

    async def _invoke(self, fn: Callable[..., Awaitable[T]], args: tuple, kwargs: dict) -> T:
        if self.timeout_ms is None:
            return await fn(*args, **kwargs)
        deadline = asyncio.timeout(self.timeout_ms / 1000)
        try:
            async with deadline:
                return await fn(*args, **kwargs)
        except TimeoutError as exc:
            if deadline.expired():
                raise CallTimeoutError(self.service, self.target, self.timeout_ms) from exc
            raise

    def _record(self, generation: int, trial: bool, *, failed: bool) -> None:
        if generation != self._generation:
            return  # started before the last transition: stale
        if trial:
            self._trial_running = False
            if failed:
                self._open(reason="half-open trial failed")
            else:
                self._buckets.clear()
                self._transition(BreakerState.CLOSED)
            return
        if self._state is not BreakerState.CLOSED:
            return
        index = self._current_index()
        self._prune(index)
        if not self._buckets or self._buckets[-1].index != index:
            self._buckets.append(_Bucket(index))
        bucket = self._buckets[-1]
        bucket.calls += 1
        if not failed:
            return
        bucket.failures += 1
        stats = self.stats
        if stats.calls >= self.volume_threshold and stats.error_percentage >= self.error_threshold_percentage:
            self._open(
                reason=f"{stats.failures}/{stats.calls} calls failed ({stats.error_percentage:.0f}%)",
            )

    # -- internals -----------------------------------------------------------------------------

    def _current_index(self) -> int:
        return math.floor(self._clock() / self._bucket_seconds)

    def _prune(self, index: int) -> None:
        oldest = index - self.bucket_count + 1
        while self._buckets and self._buckets[0].index < oldest:
            self._buckets.pop(0)

    def _open(self, *, reason: str) -> None:
        self._opened_at = self._clock()
        self._trial_running = False
        self._transition(BreakerState.OPEN, reason=reason)

    def _transition(self, new: BreakerState, *, reason: str | None = None) -> None:
        old = self._state
        self._state = new
        self._generation += 1
        if new is not BreakerState.HALF_OPEN:
            self._trial_running = False
        if new is BreakerState.CLOSED:
            self._buckets.clear()
        self._gauge.set(int(new))
        level = logging.WARNING if new is BreakerState.OPEN else logging.INFO
        log.log(
            level,
            "circuit %s -> %s: %s -> %s%s",
            self.service,
            self.target,
            old.name.lower(),
            new.name.lower(),
            f" ({reason})" if reason else "",
            extra={
                "service": self.service,
                "target": self.target,
                "breaker_state": new.name.lower(),
                "previous_state": old.name.lower(),
            },
        )
