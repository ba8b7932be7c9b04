"""The kit's saga engine on the run's database (SQLite, or PostgreSQL with ROOMEE_TEST_BACKEND=real):
order, intent before calls, reverse compensation, retried compensations, leases between processes,
and waits on an open circuit that spend no attempt."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa

from roomee.kit.db import Database
from roomee.kit.errors import BadRequest, ServiceUnavailable, UpstreamError
from roomee.kit.migrations import ensure_schema
from roomee.kit.saga import (
    COMPENSATING,
    FAILED,
    SUCCEEDED,
    WAITING,
    SagaDefinition,
    SagaEngine,
    SagaPolicy,
    SagaStep,
    StepResult,
    add_saga_tables,
)
from tests.fixtures.platform import make_settings

POLICY = SagaPolicy(lease_seconds=10, max_attempts=3, backoff_base_seconds=0.01, backoff_max_seconds=0.05,
                    poll_interval_seconds=0.05)


@pytest.fixture
async def db(tmp_path):
    metadata = sa.MetaData()
    tables = add_saga_tables(metadata)
    database = Database("sagatest", make_settings(tmp_path))
    await ensure_schema(database)
    async with database.engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    yield database, tables
    await database.dispose()


class Recorder:
    """Steps a, b, c whose behaviour each test programs; every call and compensation is recorded."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, bool]] = []
        self.compensated: list[str] = []
        self.failures: dict[str, list[Exception]] = {}
        self.compensation_failures: dict[str, int] = {}
        self.closed: list[tuple[str, str | None]] = []

    def action(self, name: str):
        async def act(run):
            self.calls.append((name, run.attempt, run.resumed))
            queued = self.failures.get(name)
            if queued:
                raise queued.pop(0)
            return StepResult(external_id=f"{name}-{run.key}", data={name: True})

        return act

    def compensation(self, name: str):
        async def undo(run):
            if self.compensation_failures.get(name):
                self.compensation_failures[name] -= 1
                raise UpstreamError("still down")
            self.compensated.append(name)

        return undo

    def definition(self) -> SagaDefinition:
        async def closed(_session, key, _data, error):
            self.closed.append((key, error))

        return SagaDefinition("test", tuple(SagaStep(n, self.action(n), self.compensation(n)) for n in "abc"),
                              on_succeeded=closed, on_failed=closed)


async def start(engine: SagaEngine, db: Database, key: str) -> None:
    async with db.transaction() as session:
        await engine.start(session, key, {})


async def status_of(engine: SagaEngine, db: Database, key: str) -> tuple[str, list[dict]]:
    async with db.transaction() as session:
        saga, steps = await engine.state(session, key)
    return saga["status"], steps


async def settle(engine: SagaEngine, db: Database, key: str, timeout: float = 60.0) -> tuple[str, list[dict]]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        status, steps = await status_of(engine, db, key)
        if status in (SUCCEEDED, FAILED):
            return status, steps
        assert asyncio.get_running_loop().time() < deadline, (status, steps)
        await asyncio.sleep(0.02)


async def test_steps_run_in_order_and_transient_failures_are_retried(db):
    database, tables = db
    recorder = Recorder()
    recorder.failures["b"] = [UpstreamError("500"), sa.exc.DBAPIError("INSERT", {}, Exception("too many clients"))]
    engine = SagaEngine(database, recorder.definition(), tables, POLICY)
    await start(engine, database, "k1")
    await engine.run("k1")
    status, steps = await settle(engine, database, "k1")
    await engine.stop()
    assert status == SUCCEEDED and recorder.closed == [("k1", None)]
    assert recorder.calls == [("a", 1, False), ("b", 1, False), ("b", 2, True), ("b", 3, True), ("c", 1, False)]
    assert [(s["name"], s["status"], s["attempts"], s["external_id"]) for s in steps] == [
        ("a", "succeeded", 1, "a-k1"), ("b", "succeeded", 3, "b-k1"), ("c", "succeeded", 1, "c-k1")]


async def test_permanent_failure_compensates_in_reverse_order_until_done(db):
    database, tables = db
    recorder = Recorder()
    recorder.failures["c"] = [BadRequest("refused")]
    recorder.compensation_failures["a"] = 2
    engine = SagaEngine(database, recorder.definition(), tables, POLICY)
    await start(engine, database, "k2")
    await engine.run("k2")
    status, steps = await settle(engine, database, "k2")
    await engine.stop()
    assert status == FAILED
    # The failed step's own call may have taken effect: it is compensated first.
    assert recorder.compensated == ["c", "b", "a"]
    assert [s["status"] for s in steps] == ["compensated", "compensated", "failed"]
    assert recorder.closed == [("k2", "c: bad_request: refused")]
    assert [s["compensation_attempts"] for s in steps] == [3, 1, 1]


async def test_an_open_circuit_waits_without_spending_attempts(db):
    database, tables = db
    recorder = Recorder()
    open_circuit = ServiceUnavailable("circuit open", headers={"Retry-After": "0.05"})
    recorder.failures["a"] = [open_circuit] * 5
    engine = SagaEngine(database, recorder.definition(), tables, POLICY)
    await start(engine, database, "k3")
    await engine.run("k3")
    status, steps = await settle(engine, database, "k3")
    await engine.stop()
    assert status == SUCCEEDED
    assert steps[0]["attempts"] == 1 and len([c for c in recorder.calls if c[0] == "a"]) == 6


async def test_a_held_lease_keeps_other_processes_out_until_it_expires(db):
    database, tables = db
    first, second = Recorder(), Recorder()
    blocked = asyncio.Event()

    async def stuck(run):
        blocked.set()
        await asyncio.sleep(3600)  # the process "dies" here: it never writes again

    crashed = SagaDefinition("test", (SagaStep("a", stuck),) + second.definition().steps[1:])
    short_lease = SagaPolicy(**{**POLICY.__dict__, "lease_seconds": 0.5})
    dead = SagaEngine(database, crashed, tables, short_lease, owner="dead")
    alive = SagaEngine(database, second.definition(), tables, short_lease, owner="alive")
    await start(dead, database, "k4")
    dead.kick("k4")
    await asyncio.wait_for(blocked.wait(), 5)
    await alive.run("k4")  # the lease is held: nothing happens
    assert second.calls == []
    await dead.stop()  # the crash: the lease stays until it expires
    worker = asyncio.create_task(alive.worker())
    try:
        status, _ = await settle(alive, database, "k4")
    finally:
        await alive.stop()
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)
    assert status == SUCCEEDED
    # The survivor knows step a had started (its intent was recorded) and looks before creating.
    assert second.calls[0] == ("a", 2, True) and first.calls == []
    _, steps = await status_of(alive, database, "k4")
    assert steps[0]["attempts"] == 2


async def test_compensating_sagas_resume_after_a_crash(db):
    database, tables = db
    recorder = Recorder()
    engine = SagaEngine(database, recorder.definition(), tables, POLICY)
    await start(engine, database, "k5")
    async with database.transaction() as session:
        # A process died while compensating after b succeeded and c failed.
        run_table, step_table = tables
        await session.execute(sa.update(run_table).values(status=COMPENSATING, lease_owner="dead",
                                                          lease_expires_at=sa.func.current_timestamp()))
        for name, status in (("a", "succeeded"), ("b", "succeeded"), ("c", "failed")):
            await session.execute(sa.update(step_table).where(step_table.c.name == name).values(status=status,
                                                                                                 attempts=1))
    worker = asyncio.create_task(engine.worker())
    try:
        status, _ = await settle(engine, database, "k5")
    finally:
        await engine.stop()
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)
    assert status == FAILED and recorder.compensated == ["c", "b", "a"] and recorder.calls == []


async def until(engine: SagaEngine, db: Database, key: str, wanted: str, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while (await status_of(engine, db, key))[0] != wanted:
        assert asyncio.get_running_loop().time() < deadline, await status_of(engine, db, key)
        await asyncio.sleep(0.02)


def waiting_definition(recorder: Recorder, waits: list, resumes: list) -> SagaDefinition:
    base = recorder.definition()

    async def on_waiting(_session, key, _data, error):
        waits.append((key, error))

    async def on_resumed(_session, key, _data, _error):
        resumes.append(key)

    return SagaDefinition(base.name, base.steps, on_succeeded=base.on_succeeded, on_failed=base.on_failed,
                          retry_later=True, on_waiting=on_waiting, on_resumed=on_resumed)


RETRY_LATER = SagaPolicy(lease_seconds=10, max_attempts=3, backoff_base_seconds=0.01, backoff_max_seconds=0.05,
                         poll_interval_seconds=0.05, retry_later_base_seconds=0.1, retry_later_max_seconds=0.2,
                         retry_later_limit_seconds=3600)


async def test_an_outage_longer_than_the_attempts_waits_and_resumes_with_a_fresh_budget(db):
    database, tables = db
    recorder, waits, resumes = Recorder(), [], []
    recorder.failures["b"] = [UpstreamError("down")] * 7  # two budgets of 3, then one more
    engine = SagaEngine(database, waiting_definition(recorder, waits, resumes), tables, RETRY_LATER)
    await start(engine, database, "w1")
    await engine.run("w1")
    await until(engine, database, "w1", WAITING)
    worker = asyncio.create_task(engine.worker())
    status, steps = await settle(engine, database, "w1")
    await engine.stop()
    worker.cancel()
    assert status == SUCCEEDED and recorder.compensated == []
    assert [key for key, _ in waits] == ["w1", "w1"] and resumes == ["w1", "w1"]
    assert steps[1]["attempts"] == 8
    # The attempt that found the call's intent recorded looks for its effect first, across waits too.
    assert [c for c in recorder.calls if c[0] == "b"][-1] == ("b", 8, True)


async def test_past_the_limit_a_waiting_saga_compensates(db):
    database, tables = db
    recorder, waits, resumes = Recorder(), [], []
    recorder.failures["b"] = [UpstreamError("down")] * 100
    policy = SagaPolicy(**{**RETRY_LATER.__dict__, "retry_later_limit_seconds": 0.15})
    engine = SagaEngine(database, waiting_definition(recorder, waits, resumes), tables, policy)
    await start(engine, database, "w2")
    await engine.run("w2")
    worker = asyncio.create_task(engine.worker())
    status, steps = await settle(engine, database, "w2")
    await engine.stop()
    worker.cancel()
    assert status == FAILED and recorder.compensated == ["b", "a"] and len(waits) >= 1
    assert recorder.closed == [("w2", "b: upstream_error: down")]


async def test_a_waiting_saga_is_brought_forward_abandoned_or_restarted(db):
    database, tables = db
    recorder, waits, resumes = Recorder(), [], []
    recorder.failures["b"] = [UpstreamError("down")] * 3
    slow = SagaPolicy(**{**RETRY_LATER.__dict__, "retry_later_base_seconds": 3600, "retry_later_max_seconds": 3600})
    engine = SagaEngine(database, waiting_definition(recorder, waits, resumes), tables, slow)
    for key in ("f1", "f2"):
        await start(engine, database, key)
        await engine.run(key)
        await until(engine, database, key, WAITING)
        recorder.failures["b"] = [UpstreamError("down")] * 3
    async with database.transaction() as session:
        assert await engine.retry_now(session, "f1")
        assert await engine.abandon(session, "f2", "abandoned: deleted")
        assert not await engine.retry_now(session, "f2") and not await engine.abandon(session, "f2", "again")
    recorder.failures["b"] = []
    await engine.run("f1")
    await until(engine, database, "f1", SUCCEEDED)
    await engine.run("f2")  # abandoned: never runs again, nothing compensated
    status, _ = await status_of(engine, database, "f2")
    assert status == FAILED and recorder.compensated == []

    # A compensated saga runs again from its undone steps, with new data.
    recorder.failures["c"] = [BadRequest("refused")]
    await start(engine, database, "f3")
    await engine.run("f3")
    assert (await settle(engine, database, "f3"))[0] == FAILED
    async with database.transaction() as session:
        assert await engine.restart(session, "f3", {"generation": 1})
        assert not await engine.restart(session, "f3", {"generation": 2})
    await engine.run("f3")
    status, steps = await settle(engine, database, "f3")
    await engine.stop()
    assert status == SUCCEEDED and [s["attempts"] for s in steps] == [1, 1, 1]
    async with database.transaction() as session:
        saga, _ = await engine.state(session, "f3")
    assert saga["data"]["generation"] == 1


def test_retry_later_delays_grow_and_are_capped():
    policy = SagaPolicy(retry_later_base_seconds=60, retry_later_max_seconds=1800)
    for round_, upper in ((1, 60), (2, 120), (5, 960), (6, 1800), (20, 1800)):
        delay = policy.retry_later_delay(round_)
        assert upper / 2 <= delay <= upper, (round_, delay)


class Settling(Recorder):
    """Steps a, b, c, d where b only starts its effect: ``settle_b`` waits for it before d, while c runs.
    ``log`` holds every action and settle in order, with b's status as c saw it."""

    def __init__(self, db: Database) -> None:
        super().__init__()
        self.db = db
        self.engine: SagaEngine | None = None
        self.log: list[str] = []
        self.settle_failures: list[Exception] = []

    def action(self, name: str):
        act = super().action(name)

        async def logged(run):
            if name == "c":
                _status, steps = await status_of(self.engine, self.db, run.key)
                self.log.append(f"c (b {steps[1]['status']})")
            else:
                self.log.append(name)
            return await act(run)

        return logged

    def definition(self) -> SagaDefinition:
        async def settle_b(run):
            self.log.append("settle b")
            if self.settle_failures:
                raise self.settle_failures.pop(0)
            return StepResult(data={"settled": run.external_id})

        async def closed(_session, key, _data, error):
            self.closed.append((key, error))

        steps = [SagaStep(n, self.action(n), self.compensation(n)) for n in "abcd"]
        steps[1] = SagaStep("b", self.action("b"), self.compensation("b"), settle=settle_b, settle_before="d")
        return SagaDefinition("test", tuple(steps), on_succeeded=closed, on_failed=closed)


async def run_settling(database, tables, recorder: Settling, key: str) -> tuple[str, list[dict], dict]:
    engine = recorder.engine = SagaEngine(database, recorder.definition(), tables, POLICY)
    await start(engine, database, key)
    await engine.run(key)
    status, steps = await settle(engine, database, key)
    await engine.stop()
    async with database.transaction() as session:
        saga, _ = await engine.state(session, key)
    return status, steps, saga["data"]


async def test_a_settling_step_stays_running_while_the_next_steps_run(db):
    database, tables = db
    recorder = Settling(database)
    status, steps, data = await run_settling(database, tables, recorder, "s1")
    assert status == SUCCEEDED and recorder.closed == [("s1", None)]
    assert recorder.log == ["a", "b", "c (b running)", "settle b", "d"]
    assert [(s["name"], s["status"], s["attempts"]) for s in steps] == [
        ("a", "succeeded", 1), ("b", "succeeded", 1), ("c", "succeeded", 1), ("d", "succeeded", 1)]
    assert data["settled"] == "b-s1" and data["c"] is True


async def test_a_failure_while_settling_waits_for_the_effect_then_compensates_in_reverse(db):
    database, tables = db
    recorder = Settling(database)
    recorder.failures["c"] = [BadRequest("refused")]
    status, steps, _data = await run_settling(database, tables, recorder, "s2")
    assert status == FAILED
    # b's effect is known to exist before anything is undone: its compensation then removes it.
    assert recorder.log == ["a", "b", "c (b running)", "settle b"]
    assert recorder.compensated == ["c", "b", "a"]
    assert [s["status"] for s in steps] == ["compensated", "compensated", "failed", "pending"]


async def test_a_settle_that_keeps_failing_fails_its_step_and_undoes_the_steps_run_meanwhile(db):
    database, tables = db
    recorder = Settling(database)
    recorder.settle_failures = [UpstreamError("not there yet")] * POLICY.max_attempts
    status, steps, _data = await run_settling(database, tables, recorder, "s3")
    assert status == FAILED and recorder.closed == [("s3", "b: upstream_error: not there yet")]
    # Each retry takes b up again (resumed: its effect is looked for, not made again); c is done once.
    assert recorder.calls == [("a", 1, False), ("b", 1, False), ("c", 1, False), ("b", 2, True), ("b", 3, True)]
    assert recorder.compensated == ["c", "b", "a"]
    assert [(s["name"], s["status"], s["attempts"]) for s in steps] == [
        ("a", "compensated", 1), ("b", "failed", 3), ("c", "compensated", 1), ("d", "pending", 0)]
