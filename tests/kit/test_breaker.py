"""The rolling-window circuit breaker, driven by a fake clock (no sleeps)."""

from __future__ import annotations

import asyncio
import logging

import pytest
from prometheus_client import REGISTRY

from roomee.kit.breaker import BreakerState, CallTimeoutError, CircuitBreaker, CircuitOpenError
from roomee.kit.settings import Settings


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Boom(Exception):
    pass


class Target:
    """An async function that counts its calls and fails on demand."""

    def __init__(self) -> None:
        self.calls = 0

    async def ok(self, value: str = "ok") -> str:
        self.calls += 1
        return value

    async def fail(self) -> str:
        self.calls += 1
        raise Boom("down")


def make(clock: FakeClock, name: str, **options) -> CircuitBreaker:
    defaults = dict(
        error_threshold_percentage=50,
        reset_timeout_ms=10_000,
        rolling_window_ms=10_000,
        volume_threshold=5,
        clock=clock,
    )
    defaults.update(options)
    return CircuitBreaker("tests", name, **defaults)


def gauge(name: str) -> float | None:
    return REGISTRY.get_sample_value("circuit_breaker_state", {"service": "tests", "target": name})


async def succeed(breaker: CircuitBreaker, target: Target, times: int) -> None:
    for _ in range(times):
        assert await breaker.call(target.ok) == "ok"


async def fail(breaker: CircuitBreaker, target: Target, times: int) -> None:
    for _ in range(times):
        with pytest.raises(Boom):
            await breaker.call(target.fail)


async def trip(breaker: CircuitBreaker, target: Target) -> None:
    await fail(breaker, target, breaker.volume_threshold)
    assert breaker.state is BreakerState.OPEN


async def test_stays_closed_below_volume_threshold():
    breaker, target = make(FakeClock(), "volume"), Target()
    await fail(breaker, target, 4)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.stats.calls == 4 and breaker.stats.failures == 4
    assert gauge("volume") == 0


async def test_opens_on_error_percentage_once_volume_reached():
    clock = FakeClock()
    breaker, target = make(clock, "percentage"), Target()
    await succeed(breaker, target, 2)
    await fail(breaker, target, 2)
    assert breaker.state is BreakerState.CLOSED  # 4 calls: under the volume threshold
    await fail(breaker, target, 1)  # 3/5 = 60 %
    assert breaker.state is BreakerState.OPEN
    assert gauge("percentage") == 2


async def test_stays_closed_under_the_error_percentage():
    breaker, target = make(FakeClock(), "healthy"), Target()
    await succeed(breaker, target, 6)
    await fail(breaker, target, 5)  # 5/11 = 45 %
    assert breaker.state is BreakerState.CLOSED
    await fail(breaker, target, 1)  # 6/12 = 50 %: the threshold is reached
    assert breaker.state is BreakerState.OPEN


async def test_open_fails_fast_without_calling():
    clock = FakeClock()
    breaker, target = make(clock, "fastfail"), Target()
    await trip(breaker, target)
    calls = target.calls
    clock.advance(9.9)
    with pytest.raises(CircuitOpenError) as raised:
        await breaker.call(target.ok)
    assert target.calls == calls
    assert raised.value.retry_after == pytest.approx(0.1)
    assert breaker.state is BreakerState.OPEN


async def test_half_open_after_reset_timeout_then_closes_on_trial_success():
    clock = FakeClock()
    breaker, target = make(clock, "recover"), Target()
    await trip(breaker, target)
    clock.advance(10.0)
    assert breaker.state is BreakerState.HALF_OPEN
    assert gauge("recover") == 1
    assert await breaker.call(target.ok, "trial") == "trial"
    assert breaker.state is BreakerState.CLOSED
    assert gauge("recover") == 0
    assert breaker.stats.calls == 0  # fresh statistics
    await fail(breaker, target, 4)
    assert breaker.state is BreakerState.CLOSED


async def test_half_open_allows_exactly_one_trial():
    clock = FakeClock()
    breaker, target = make(clock, "onetrial"), Target()
    await trip(breaker, target)
    clock.advance(10.0)
    release = asyncio.Event()

    async def slow() -> str:
        target.calls += 1
        await release.wait()
        return "done"

    trial = asyncio.create_task(breaker.call(slow))
    await asyncio.sleep(0)
    calls = target.calls
    with pytest.raises(CircuitOpenError):
        await breaker.call(target.ok)
    assert target.calls == calls
    release.set()
    assert await trial == "done"
    assert breaker.state is BreakerState.CLOSED


async def test_trial_failure_reopens_with_new_timer():
    clock = FakeClock()
    breaker, target = make(clock, "reopen"), Target()
    await trip(breaker, target)
    clock.advance(10.0)
    await fail(breaker, target, 1)
    assert breaker.state is BreakerState.OPEN
    assert gauge("reopen") == 2
    clock.advance(5.0)
    with pytest.raises(CircuitOpenError):
        await breaker.call(target.ok)
    clock.advance(5.0)
    assert breaker.state is BreakerState.HALF_OPEN


async def test_cancelled_trial_lets_the_next_call_try():
    clock = FakeClock()
    breaker, target = make(clock, "cancelled"), Target()
    await trip(breaker, target)
    clock.advance(10.0)
    trial = asyncio.create_task(breaker.call(asyncio.sleep, 60))
    await asyncio.sleep(0)
    trial.cancel()
    with pytest.raises(asyncio.CancelledError):
        await trial
    assert breaker.state is BreakerState.HALF_OPEN
    assert await breaker.call(target.ok) == "ok"
    assert breaker.state is BreakerState.CLOSED


async def test_buckets_roll_off_after_the_window():
    clock = FakeClock()
    breaker, target = make(clock, "rolling"), Target()
    await fail(breaker, target, 4)
    clock.advance(5.0)
    await succeed(breaker, target, 4)
    assert breaker.stats.calls == 8
    clock.advance(5.0)  # the 4 failures are now 10 s old: out of the window
    assert breaker.stats.calls == 4 and breaker.stats.failures == 0
    await fail(breaker, target, 1)  # 1/5 = 20 %
    assert breaker.state is BreakerState.CLOSED
    clock.advance(10.0)
    assert breaker.stats.calls == 0


async def test_failures_in_separate_windows_do_not_add_up():
    clock = FakeClock()
    breaker, target = make(clock, "separate"), Target()
    await fail(breaker, target, 4)
    clock.advance(10.0)
    await fail(breaker, target, 4)
    assert breaker.state is BreakerState.CLOSED  # a consecutive-failure breaker would be open


async def test_is_failure_policy_decides_on_results_and_exceptions():
    clock = FakeClock()
    breaker = make(
        clock,
        "policy",
        is_failure=lambda outcome: outcome == "bad" or isinstance(outcome, Boom),
    )
    calls = 0

    async def answer(value: str) -> str:
        nonlocal calls
        calls += 1
        return value

    async def harmless() -> None:
        raise KeyError("not a failure")

    for _ in range(5):
        with pytest.raises(KeyError):
            await breaker.call(harmless)
    assert breaker.state is BreakerState.CLOSED
    for _ in range(5):
        assert await breaker.call(answer, "bad") == "bad"  # returned, yet counted
    assert breaker.state is BreakerState.OPEN


async def test_timeout_counts_as_failure():
    breaker = make(FakeClock(), "timeout", volume_threshold=1, timeout_ms=10)
    with pytest.raises(CallTimeoutError):
        await breaker.call(asyncio.sleep, 1)
    assert breaker.state is BreakerState.OPEN


async def test_transitions_are_logged(caplog):
    caplog.set_level(logging.INFO, logger="roomee.breaker")
    clock = FakeClock()
    breaker, target = make(clock, "logged"), Target()
    await trip(breaker, target)
    clock.advance(10.0)
    await breaker.call(target.ok)
    states = [r.breaker_state for r in caplog.records if getattr(r, "target", None) == "logged"]
    assert states == ["open", "half_open", "closed"]


def test_from_settings_reads_breaker_settings():
    settings = Settings(
        breaker_error_threshold_percentage=30,
        breaker_reset_timeout_ms=2000,
        breaker_rolling_window_ms=5000,
        breaker_volume_threshold=7,
    )
    breaker = CircuitBreaker.from_settings(settings, "tests", "settings", timeout_ms=100)
    assert (breaker.error_threshold_percentage, breaker.reset_timeout_ms) == (30, 2000)
    assert (breaker.rolling_window_ms, breaker.volume_threshold, breaker.timeout_ms) == (5000, 7, 100)
    assert breaker.bucket_count == 10
