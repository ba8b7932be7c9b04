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
