"""Sagas with persisted step state (ARCHITECTURE §6): one engine for every multi-service operation.

A saga is an ordered list of :class:`SagaStep` run for one business key (a hotel id, say). Its
state lives in the service's own database (``saga_run`` and ``saga_step``, added to the service's
metadata by :func:`add_saga_tables`), so any process of the service can carry it on:

- Before a step calls out, its row is marked ``running`` with ``attempts + 1`` and committed: the
  intent is recorded, so a step whose answer was lost is *found* on the next attempt (``run.resumed``)
  rather than repeated. Every step is idempotent for its key.
- A process works on a saga only while it holds the saga's lease (``lease_owner``,
  ``lease_expires_at``); every write checks it. A crashed process's lease expires and the
  :meth:`SagaEngine.worker` of any process resumes the saga at the step that had not finished.
- A transient failure (:data:`TRANSIENT_ERRORS`, or :class:`RetryStep`) is retried with
  exponential backoff up to ``max_attempts``; a permanent failure (any other exception, or attempts
  exhausted) compensates the steps in reverse order, the failed step included (its call may have
  taken effect). A failing compensation is retried, with backoff, until it succeeds: no orphan.
- A definition with ``retry_later`` does not give up on a transient failure that outlasts the
  step's attempts (a provider down for minutes): the saga *waits* (status ``waiting``, hook
  ``on_waiting``) and is taken up again later with capped exponential backoff
  (``retry_later_base_seconds`` doubling up to ``retry_later_max_seconds``), each time with a fresh
  budget of attempts, until ``retry_later_limit_seconds`` after it first waited; only then does it
  compensate. :meth:`SagaEngine.retry_now` brings a waiting saga's next attempt forward,
  :meth:`SagaEngine.restart` runs a compensated one again from its first undone step, and
  :meth:`SagaEngine.abandon` ends a waiting one without running it (its owner undoes it otherwise).
- A step's local effects (``StepResult.apply`` or ``StepRun.remember``) commit in the same
  transaction as its state, so "done" and its effect cannot disagree.
- A step whose effect shows later elsewhere (an event another service applies) may ``settle``: its
  action starts the effect, the step stays ``running`` while the steps before its ``settle_before``
  run, and its settle waits for the effect just before that step, or before a failure of one of
  them is handled (nothing is undone while the effect is on its way). After a crash the step is
  taken up again like any unfinished one (its action, resumed, finds its effect started).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncSession

from roomee.kit import errors
from roomee.kit.clock import as_utc, utcnow
from roomee.kit.db import Database
from roomee.kit.events import BrokerUnavailable
from roomee.kit.metrics import saga_step_duration_seconds, saga_steps_total, sagas_failed_total, sagas_in_flight
from roomee.kit.observability import RetryNotice

log = logging.getLogger("roomee.saga")

# Saga statuses.
RUNNING, COMPENSATING, SUCCEEDED, FAILED = "running", "compensating", "succeeded", "failed"
# A transient failure outlasted the step's attempts: taken up again at ``next_attempt_at``.
WAITING = "waiting"
# Keys of the saga's data the engine keeps for waiting: when it first waited, how often, and the
# attempt count each step's fresh budget starts from.
WAITING_SINCE, WAITING_ROUNDS, BUDGET_FROM = "waitingSince", "waitingRounds", "attemptsBudgetFrom"
# Step statuses (the wire contract of provisioning endpoints).
PENDING, STEP_RUNNING, STEP_SUCCEEDED, STEP_FAILED = "pending", "running", "succeeded", "failed"
STEP_COMPENSATING, STEP_COMPENSATED = "compensating", "compensated"
# Outcomes of one step attempt (the ``outcome`` label of saga_steps_total).
STEP_OUTCOMES = ("succeeded", "retry", "failed", "waiting", "compensated", "compensation_retry")

# Failures that say "try again later": the callee is down, slow, overloaded, or the broker is.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    errors.ServiceUnavailable,
    errors.UpstreamError,
    errors.TooManyRequests,
    httpx.TransportError,
    TimeoutError,
    ConnectionError,
    BrokerUnavailable,
)


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: a callee or the broker down or slow, or the database unreachable or full
    (not a constraint, data or SQL error, which would fail the same way again)."""
    if isinstance(exc, (*TRANSIENT_ERRORS, RetryStep)):
        return True
    if isinstance(exc, (sa_exc.IntegrityError, sa_exc.DataError, sa_exc.ProgrammingError)):
        return False
    return isinstance(exc, (sa_exc.DBAPIError, sa_exc.TimeoutError))


class RetryStep(Exception):
    """Raised by a step that is waiting for something (a quota created by an event, say)."""


class LeaseLost(Exception):
    """Another process took the saga over (this one was too slow); stop without writing."""


def add_saga_tables(metadata: sa.MetaData) -> tuple[sa.Table, sa.Table]:
    """Add ``saga_run`` and ``saga_step`` to a service's metadata (idempotent)."""
    if "saga_run" in metadata.tables:
        return metadata.tables["saga_run"], metadata.tables["saga_step"]
    run = sa.Table(
        "saga_run",
        metadata,
        sa.Column("saga", sa.String(64), primary_key=True),
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("data", sa.JSON, nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Index("ix_saga_run_due", "status", "next_attempt_at"),
    )
    step = sa.Table(
        "saga_step",
        metadata,
        sa.Column("saga", sa.String(64), primary_key=True),
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("compensation_attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("external_id", sa.String(255), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("compensated_at", sa.DateTime(timezone=True), nullable=True),
    )
    return run, step


Apply = Callable[[AsyncSession], Awaitable[None]]


@dataclass
class StepResult:
    """What a step produced: its ``external_id``, values merged into the saga's ``data``, and
    ``apply(session)``, local writes committed with the step's success."""

    external_id: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    apply: Apply | None = None


@dataclass
class StepRun:
    """One attempt at a step (or its compensation)."""

    engine: "SagaEngine"
    key: str
    name: str
    attempt: int
    external_id: str | None
    data: dict[str, Any]
    # The intent was recorded by an earlier attempt: its effect may exist; look for it first.
    resumed: bool

    async def remember(self, external_id: str, apply: Apply | None = None) -> None:
        """Persist ``external_id`` (and run ``apply``) now, before the step finishes: a local effect
        such as an emitted event is then made exactly once, whatever happens next."""
        async with self.engine.transaction(self.key) as session:
            await session.execute(
                sa.update(self.engine.step_table)
                .where(*self.engine.step_where(self.key, self.name))
                .values(external_id=external_id)
            )
            if apply is not None:
                await apply(session)
        self.external_id = external_id


StepAction = Callable[[StepRun], Awaitable[StepResult | None]]
Compensation = Callable[[StepRun], Awaitable[None]]
Hook = Callable[[AsyncSession, str, dict[str, Any], str | None], Awaitable[None]]


@dataclass(frozen=True)
class SagaStep:
    """``settle``: the step's action only starts an effect that shows later elsewhere (an event a
    consumer applies); the steps before ``settle_before`` (None: the rest) run meanwhile and
    ``settle`` waits for the effect (idempotent, as the action; raises as an action does)."""

    name: str
    action: StepAction
    compensation: Compensation | None = None
    settle: StepAction | None = None
    settle_before: str | None = None


@dataclass
class _Settling:
    """A step whose action ran and whose effect is waited for later (``settle_before``)."""

    step: SagaStep
    run: StepRun
    attempt: int
    started: float
    before: str | None


@dataclass(frozen=True)
class SagaDefinition:
    """``on_succeeded(session, key, data, None)`` and ``on_failed(session, key, data, error)`` run in
    the transaction that closes the saga. ``compensate=False``: a failing step is retried forever
    (a deletion, which must finish, is such a saga)."""

    name: str
    steps: tuple[SagaStep, ...]
    on_succeeded: Hook | None = None
    on_failed: Hook | None = None
    compensate: bool = True
    # Wait and retry later (see the module docstring) instead of compensating after a long outage:
    # ``on_waiting(session, key, data, error)`` when it starts waiting, ``on_resumed(session, key, data,
    # None)`` when it is taken up again; both in the transaction that changes the saga's status.
    retry_later: bool = False
    on_waiting: Hook | None = None
    on_resumed: Hook | None = None

    def step(self, name: str) -> SagaStep:
        return next(s for s in self.steps if s.name == name)


@dataclass(frozen=True)
class SagaPolicy:
    lease_seconds: float = 30.0
    max_attempts: int = 8
    backoff_base_seconds: float = 0.25
    backoff_max_seconds: float = 30.0
    poll_interval_seconds: float = 1.0
    concurrency: int = 50
    retry_later_base_seconds: float = 60.0
    retry_later_max_seconds: float = 1800.0
    retry_later_limit_seconds: float = 6 * 3600.0

    def backoff(self, attempt: int) -> float:
        """Exponential with full jitter on the upper half: ``base * 2^(attempt-1)``, capped."""
        return _jittered(self.backoff_base_seconds, self.backoff_max_seconds, attempt)

    def retry_later_delay(self, round_: int) -> float:
        """How long a waiting saga waits before its ``round_``-th retry (1, 2, …)."""
        return _jittered(self.retry_later_base_seconds, self.retry_later_max_seconds, round_)


def _jittered(base: float, cap: float, attempt: int) -> float:
    delay = min(cap, base * 2 ** max(0, attempt - 1))
    return delay * random.uniform(0.5, 1.0)


class SagaEngine:
    """Runs the sagas of one definition stored in ``db`` (see the module docstring)."""

    def __init__(self, db: Database, definition: SagaDefinition, tables: tuple[sa.Table, sa.Table],
                 policy: SagaPolicy | None = None, *, owner: str | None = None) -> None:
        self.db = db
        self.definition = definition
        self.run_table, self.step_table = tables
        self.policy = policy or SagaPolicy()
        self.owner = owner or f"{uuid.uuid4().hex[:12]}"
        self._active: set[str] = set()
        self._tasks: set[asyncio.Task] = set()
        self._slots = asyncio.Semaphore(self.policy.concurrency)
        self._stopping = False
        # Every series of this saga exists at 0 from start-up, so its first failure is an increase.
        sagas_failed_total.labels(definition.name)
        for step in definition.steps:
            for outcome in STEP_OUTCOMES:
                saga_steps_total.labels(definition.name, step.name, outcome)

    # -- starting --------------------------------------------------------------------------------

    async def start(self, session: AsyncSession, key: str, data: dict[str, Any],
                    done: dict[str, str | None] | None = None) -> None:
        """Record a new saga in the caller's transaction; ``done`` maps steps already completed by
        that transaction (the local create, say) to their external ids. Call :meth:`kick` after commit."""
        now = utcnow()
        done = done or {}
        await session.execute(sa.insert(self.run_table).values(
            saga=self.definition.name, key=key, status=RUNNING, data=data, next_attempt_at=now,
            created_at=now, updated_at=now,
        ))
        await session.execute(sa.insert(self.step_table), [
            {
                "saga": self.definition.name, "key": key, "name": step.name, "position": position,
                "status": STEP_SUCCEEDED if step.name in done else PENDING,
                "attempts": 1 if step.name in done else 0,
                "external_id": done.get(step.name),
                "started_at": now if step.name in done else None,
                "finished_at": now if step.name in done else None,
            }
            for position, step in enumerate(self.definition.steps)
        ])
        for name in done:
            saga_steps_total.labels(self.definition.name, name, "succeeded").inc()

    def kick(self, key: str, delay: float = 0.0) -> None:
        """Work on ``key`` in this process soon (after ``delay`` seconds)."""
        if self._stopping:
            return

        async def later() -> None:
            if delay:
                await asyncio.sleep(delay)
            await self.run(key)

        task = asyncio.create_task(later(), name=f"saga:{self.definition.name}:{key}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        self._stopping = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- reading ---------------------------------------------------------------------------------

    def step_where(self, key: str, name: str | None = None) -> list:
        where = [self.step_table.c.saga == self.definition.name, self.step_table.c.key == key]
        if name is not None:
            where.append(self.step_table.c.name == name)
        return where

    def _run_where(self, key: str) -> list:
        return [self.run_table.c.saga == self.definition.name, self.run_table.c.key == key]

    async def state(self, session: AsyncSession, key: str) -> tuple[dict, list[dict]] | None:
        """The saga row and its steps in order, or None."""
        found = (await session.execute(sa.select(self.run_table).where(*self._run_where(key)))).mappings().first()
        if found is None:
            return None
        steps = await session.execute(
            sa.select(self.step_table).where(*self.step_where(key)).order_by(self.step_table.c.position)
        )
        return dict(found), [dict(s) for s in steps.mappings()]

    # -- leases ----------------------------------------------------------------------------------

    def transaction(self, key: str, **run_values: Any):
        """A transaction that first renews this process's lease on ``key`` (or raises LeaseLost);
        ``run_values`` (the saga's ``data``, say) are written by the same statement."""
        engine = self

        class _Tx:
            async def __aenter__(self) -> AsyncSession:
                self._cm = engine.db.transaction()
                session = await self._cm.__aenter__()
                try:
                    renewed = await session.execute(
                        sa.update(engine.run_table)
                        .where(*engine._run_where(key), engine.run_table.c.lease_owner == engine.owner)
                        .values(lease_expires_at=utcnow() + timedelta(seconds=engine.policy.lease_seconds),
                                updated_at=utcnow(), **run_values)
                    )
                    if renewed.rowcount != 1:
                        raise LeaseLost(key)
                except BaseException as exc:
                    await self._cm.__aexit__(type(exc), exc, exc.__traceback__)
                    raise
                return session

            async def __aexit__(self, *exc_info):
                return await self._cm.__aexit__(*exc_info)

        return _Tx()

    async def _claim(self, session: AsyncSession, key: str) -> bool:
        now = utcnow()
        claimed = await session.execute(
            sa.update(self.run_table)
            .where(
                *self._run_where(key),
                self.run_table.c.status.in_((RUNNING, COMPENSATING, WAITING)),
                self.run_table.c.next_attempt_at <= now,
                sa.or_(
                    self.run_table.c.lease_owner.is_(None),
                    self.run_table.c.lease_owner == self.owner,
                    self.run_table.c.lease_expires_at < now,
                ),
            )
            .values(lease_owner=self.owner, lease_expires_at=now + timedelta(seconds=self.policy.lease_seconds))
        )
        return claimed.rowcount == 1

    async def _release(self, session: AsyncSession, key: str, delay: float | None, **values: Any) -> None:
        now = utcnow()
        await session.execute(
            sa.update(self.run_table).where(*self._run_where(key)).values(
                lease_owner=None, lease_expires_at=None, updated_at=now,
                next_attempt_at=now + timedelta(seconds=delay or 0), **values,
            )
        )

    # -- running ---------------------------------------------------------------------------------

    async def run(self, key: str) -> None:
        """Advance the saga ``key`` as far as it goes now (no-op when another process holds it)."""
        if key in self._active:
            return
        self._active.add(key)
        try:
            async with self._slots:
                async with self.db.transaction() as session:  # the claim and the state: one commit
                    found = await self.state(session, key) if await self._claim(session, key) else None
                if found is None:
                    return
                saga, steps = found
                if saga["status"] == WAITING:
                    if not await self._resume_waiting(key, saga):
                        return
                    saga["status"] = RUNNING
                if saga["status"] == RUNNING:
                    await self._forward(key, saga, steps)
                else:
                    await self._compensate(key, saga, steps)
        except LeaseLost:
            log.warning("saga lease lost", extra={"saga": self.definition.name, "key": key})
        except asyncio.CancelledError:
            raise
        except Exception:
            # A database hiccup: the lease expires and a worker takes the saga up again.
            log.exception("saga run failed", extra={"saga": self.definition.name, "key": key})
        finally:
            self._active.discard(key)

    def _step_run(self, key: str, saga: dict, row: dict, attempt: int, resumed: bool) -> StepRun:
        return StepRun(self, key, row["name"], attempt, row["external_id"], saga["data"], resumed)

    async def _mark_running(self, session: AsyncSession, key: str, row: dict) -> None:
        """Record the intent: the step is about to call out (committed before the call)."""
        await session.execute(
            sa.update(self.step_table).where(*self.step_where(key, row["name"])).values(
                status=STEP_RUNNING, attempts=row["attempts"] + 1, started_at=row["started_at"] or utcnow(),
            )
        )

    async def _forward(self, key: str, saga: dict, steps: list[dict]) -> None:
        """Run the unfinished steps in order. A step's success, its local effects and the next step's
        intent commit in one transaction (one commit per step).

        A step with a ``settle`` is left ``running`` once its action has started the effect: the steps
        up to its ``settle_before`` run meanwhile, and its settle (the wait for the effect) runs just
        before that step, or before a failure of one of them is handled (so nothing is undone while
        the effect is on its way), and commits the step's success."""
        todo = [row for row in steps if row["status"] != STEP_SUCCEEDED]
        async with self.transaction(key) as session:
            if todo:
                await self._mark_running(session, key, todo[0])
            else:
                await self._finish(session, key, saga)
        settling: _Settling | None = None
        for index, row in enumerate(todo):
            step = self.definition.step(row["name"])
            if settling is not None and (step.name == settling.before or step.settle is not None):
                if not await self._settle(key, saga, settling, then=row):
                    return
                settling = None
            attempt = row["attempts"] + 1
            run = self._step_run(key, saga, row, attempt, resumed=row["attempts"] > 0)
            started = time.perf_counter()
            try:
                result = await step.action(run) or StepResult()
            except LeaseLost:
                raise
            except Exception as exc:  # classified below: transient → retry, anything else → compensate
                outcome = "retry" if is_transient(exc) else "failed"
                self._observe(step.name, outcome, started)
                if settling is not None:
                    await self._settle(key, saga, settling, then=None, before_failure=True)
                await self._step_failed(key, saga, step, attempt, exc, transient=outcome == "retry")
                return
            saga["data"].update(result.data)
            following = todo[index + 1] if index + 1 < len(todo) else None
            run.external_id = result.external_id or run.external_id
            if step.settle is not None:
                settling = _Settling(step, run, attempt, started, step.settle_before)
                done = False
            else:
                self._observe(step.name, "succeeded", started)
                done = True
            if following is not None and settling is not None and following["name"] == settling.before:
                following = None  # marked running by the settle's commit
            async with self.transaction(key, data=dict(saga["data"])) as session:
                await session.execute(
                    sa.update(self.step_table).where(*self.step_where(key, step.name)).values(
                        external_id=run.external_id,
                        **({"status": STEP_SUCCEEDED, "finished_at": utcnow(), "last_error": None} if done else {}),
                    )
                )
                if result.apply is not None:
                    await result.apply(session)
                if following is not None:
                    await self._mark_running(session, key, following)
                elif index + 1 == len(todo) and settling is None:
                    await self._finish(session, key, saga)
        if settling is not None and not await self._settle(key, saga, settling, then=None):
            return
        log.info("saga succeeded", extra={"saga": self.definition.name, "key": key})

    async def _finish(self, session: AsyncSession, key: str, saga: dict) -> None:
        await self._release(session, key, None, status=SUCCEEDED, finished_at=utcnow())
        if self.definition.on_succeeded is not None:
            await self.definition.on_succeeded(session, key, saga["data"], None)

    async def _settle(self, key: str, saga: dict, settling: "_Settling", then: dict | None,
                      before_failure: bool = False) -> bool:
        """Wait for the effect of a step left running; on success commit the step's success with
        ``then``'s intent (None: the end of the saga, unless ``before_failure``). False when the wait
        failed (handled as the step's failure, except ``before_failure``: the other step's is)."""
        step, run = settling.step, settling.run
        try:
            result = await step.settle(run) or StepResult()
        except LeaseLost:
            raise
        except Exception as exc:
            outcome = "retry" if is_transient(exc) else "failed"
            self._observe(step.name, outcome, settling.started)
            if not before_failure:
                await self._step_failed(key, saga, step, settling.attempt, exc, transient=outcome == "retry")
            return False
        self._observe(step.name, "succeeded", settling.started)
        saga["data"].update(result.data)
        async with self.transaction(key, data=dict(saga["data"])) as session:
            await session.execute(
                sa.update(self.step_table).where(*self.step_where(key, step.name)).values(
                    status=STEP_SUCCEEDED, finished_at=utcnow(), last_error=None,
                    external_id=result.external_id or run.external_id,
                )
            )
            if result.apply is not None:
                await result.apply(session)
            if then is not None:
                await self._mark_running(session, key, then)
            elif not before_failure:
                await self._finish(session, key, saga)
        return True

    async def _step_failed(self, key: str, saga: dict, step: SagaStep, attempt: int, exc: Exception,
                           *, transient: bool) -> None:
        error = _describe(exc)
        # An open circuit refused the call without making it: wait, but do not spend an attempt
        # (a burst of sagas behind one breaker would otherwise use them all in seconds).
        not_made = isinstance(exc, errors.ServiceUnavailable) and _retry_after(exc) > 0
        budget_used = attempt - saga["data"].get(BUDGET_FROM, {}).get(step.name, 0)
        retry = transient and (not_made or budget_used < self.policy.max_attempts or not self.definition.compensate)
        log.warning("saga step %s failed (attempt %d): %s", step.name, attempt, error,
                    extra={"saga": self.definition.name, "key": key, "step": step.name, "retry": retry})
        if retry:
            delay = max(self.policy.backoff(attempt), _retry_after(exc))
            async with self.transaction(key) as session:
                await session.execute(
                    sa.update(self.step_table).where(*self.step_where(key, step.name))
                    .values(last_error=error, attempts=attempt - 1 if not_made else attempt)
                )
                await self._release(session, key, delay)
            self.kick(key, delay)
            return
        saga["error"] = f"{step.name}: {error}"
        if transient and self.definition.retry_later and await self._wait(key, saga, step, attempt, error):
            return
        async with self.transaction(key) as session:
            await session.execute(
                sa.update(self.step_table).where(*self.step_where(key, step.name)).values(
                    status=STEP_FAILED, last_error=error, finished_at=utcnow(),
                )
            )
            await session.execute(
                sa.update(self.run_table).where(*self._run_where(key)).values(
                    status=COMPENSATING, error=saga["error"],
                )
            )
        async with self.db.transaction() as session:
            saga, steps = await self.state(session, key)
        await self._compensate(key, saga, steps)

    async def _compensate(self, key: str, saga: dict, steps: list[dict]) -> None:
        for row in reversed(steps):
            step = self.definition.step(row["name"])
            touched = row["status"] in (STEP_SUCCEEDED, STEP_RUNNING, STEP_FAILED, STEP_COMPENSATING)
            if not touched or row["compensated_at"] is not None:
                continue
            attempt = row["compensation_attempts"] + 1
            failed_step = row["status"] == STEP_FAILED
            async with self.transaction(key) as session:
                await session.execute(
                    sa.update(self.step_table).where(*self.step_where(key, step.name)).values(
                        status=STEP_FAILED if failed_step else STEP_COMPENSATING, compensation_attempts=attempt,
                    )
                )
            started = time.perf_counter()
            if step.compensation is not None:
                try:
                    await step.compensation(self._step_run(key, saga, row, attempt, resumed=True))
                except LeaseLost:
                    raise
                except Exception as exc:  # retried until it succeeds: nothing may be left behind
                    self._observe(step.name, "compensation_retry", started)
                    delay = max(self.policy.backoff(min(attempt, 8)), _retry_after(exc))
                    error = _describe(exc)
                    log.warning("saga compensation of %s failed (attempt %d): %s", step.name, attempt, error,
                                extra={"saga": self.definition.name, "key": key, "step": step.name})
                    async with self.transaction(key) as session:
                        await session.execute(
                            sa.update(self.step_table).where(*self.step_where(key, step.name))
                            .values(last_error=f"compensation: {error}")
                        )
                        await self._release(session, key, delay)
                    self.kick(key, delay)
                    return
            self._observe(step.name, "compensated", started)
            async with self.transaction(key) as session:
                await session.execute(
                    sa.update(self.step_table).where(*self.step_where(key, step.name)).values(
                        status=STEP_FAILED if failed_step else STEP_COMPENSATED, compensated_at=utcnow(),
                    )
                )
        async with self.transaction(key) as session:
            await self._release(session, key, None, status=FAILED, finished_at=utcnow())
            if self.definition.on_failed is not None:
                await self.definition.on_failed(session, key, saga["data"], saga.get("error"))
        sagas_failed_total.labels(self.definition.name).inc()
        log.warning("saga failed and compensated", extra={"saga": self.definition.name, "key": key})

    async def _wait(self, key: str, saga: dict, step: SagaStep, attempt: int, error: str) -> bool:
        """Park the saga until a later retry (False once the limit since it first waited is past)."""
        data, now = dict(saga["data"]), utcnow()
        since = data.get(WAITING_SINCE)
        if self.policy.retry_later_limit_seconds <= 0:
            return False
        if since is not None and (now - as_utc(datetime.fromisoformat(since))).total_seconds() >= self.policy.retry_later_limit_seconds:
            log.warning("saga gives up retrying later after %.0f s", self.policy.retry_later_limit_seconds,
                        extra={"saga": self.definition.name, "key": key, "step": step.name})
            return False
        data[WAITING_SINCE] = since or now.isoformat()
        data[WAITING_ROUNDS] = data.get(WAITING_ROUNDS, 0) + 1
        delay = self.policy.retry_later_delay(data[WAITING_ROUNDS])
        async with self.transaction(key) as session:
            await session.execute(
                sa.update(self.step_table).where(*self.step_where(key, step.name))
                .values(last_error=error, attempts=attempt)
            )
            await self._release(session, key, delay, status=WAITING, error=saga["error"], data=data)
            if self.definition.on_waiting is not None:
                await self.definition.on_waiting(session, key, data, saga["error"])
        saga["data"] = data
        saga_steps_total.labels(self.definition.name, step.name, "waiting").inc()
        log.warning("saga waits %.1f s before retrying %s (round %d): %s", delay, step.name, data[WAITING_ROUNDS],
                    error, extra={"saga": self.definition.name, "key": key, "step": step.name})
        return True

    async def _resume_waiting(self, key: str, saga: dict) -> bool:
        """Take a waiting saga up again, each step with a fresh budget of attempts (False: it was
        abandoned meanwhile)."""
        async with self.transaction(key) as session:
            steps = await session.execute(sa.select(self.step_table.c.name, self.step_table.c.attempts)
                                          .where(*self.step_where(key)))
            data = {**saga["data"], BUDGET_FROM: {name: attempts for name, attempts in steps.all()}}
            resumed = await session.execute(
                sa.update(self.run_table).where(*self._run_where(key), self.run_table.c.status == WAITING)
                .values(status=RUNNING, error=None, data=data)
            )
            if resumed.rowcount != 1:
                return False
            if self.definition.on_resumed is not None:
                await self.definition.on_resumed(session, key, data, None)
        saga["data"] = data
        log.info("saga taken up again after waiting", extra={"saga": self.definition.name, "key": key})
        return True

    # -- waiting sagas: brought forward, abandoned, or (compensated) run again --------------------

    async def retry_now(self, session: AsyncSession, key: str) -> bool:
        """Bring a waiting saga's next attempt forward to now (in the caller's transaction; kick after
        commit). False when the saga is not waiting."""
        moved = await session.execute(
            sa.update(self.run_table).where(*self._run_where(key), self.run_table.c.status == WAITING)
            .values(next_attempt_at=utcnow())
        )
        return moved.rowcount == 1

    async def abandon(self, session: AsyncSession, key: str, reason: str) -> bool:
        """End a waiting saga without running or compensating it (its owner undoes its effects, a
        deletion say). False when it is not waiting (a worker took it up: it runs on)."""
        ended = await session.execute(
            sa.update(self.run_table).where(*self._run_where(key), self.run_table.c.status == WAITING)
            .values(status=FAILED, error=reason, finished_at=utcnow(), lease_owner=None, lease_expires_at=None)
        )
        return ended.rowcount == 1

    async def restart(self, session: AsyncSession, key: str, data_changes: dict[str, Any]) -> bool:
        """Run a failed (compensated) saga again from its first step that had to be undone: those
        steps start afresh (attempts 0, no external id); ``data_changes`` merge into its data. In the
        caller's transaction; kick after commit. False when the saga is not failed."""
        found = await self.state(session, key)
        if found is None or found[0]["status"] != FAILED:
            return False
        saga, steps = found
        data = {k: v for k, v in saga["data"].items() if k not in (WAITING_SINCE, WAITING_ROUNDS, BUDGET_FROM)}
        now = utcnow()
        restarted = await session.execute(
            sa.update(self.run_table).where(*self._run_where(key), self.run_table.c.status == FAILED).values(
                status=RUNNING, error=None, finished_at=None, next_attempt_at=now, updated_at=now,
                lease_owner=None, lease_expires_at=None, data={**data, **data_changes},
            )
        )
        if restarted.rowcount != 1:
            return False
        undone = [row["name"] for row in steps if row["status"] != STEP_SUCCEEDED]
        await session.execute(
            sa.update(self.step_table).where(*self.step_where(key), self.step_table.c.name.in_(undone)).values(
                status=PENDING, attempts=0, compensation_attempts=0, last_error=None, external_id=None,
                started_at=None, finished_at=None, compensated_at=None,
            )
        )
        return True

    def _observe(self, step: str, outcome: str, started: float) -> None:
        saga_steps_total.labels(self.definition.name, step, outcome).inc()
        saga_step_duration_seconds.labels(self.definition.name, step, outcome).observe(time.perf_counter() - started)

    # -- the worker ------------------------------------------------------------------------------

    async def due(self, limit: int = 200) -> list[str]:
        """Keys of unfinished sagas nobody holds (or whose holder died) that are due now."""
        now = utcnow()
        async with self.db.transaction() as session:
            rows = await session.execute(
                sa.select(self.run_table.c.key)
                .where(
                    self.run_table.c.saga == self.definition.name,
                    self.run_table.c.status.in_((RUNNING, COMPENSATING, WAITING)),
                    self.run_table.c.next_attempt_at <= now,
                    sa.or_(self.run_table.c.lease_owner.is_(None), self.run_table.c.lease_expires_at < now),
                )
                .order_by(self.run_table.c.next_attempt_at)
                .limit(limit)
            )
            in_flight = await session.execute(
                sa.select(sa.func.count()).select_from(self.run_table).where(
                    self.run_table.c.saga == self.definition.name,
                    self.run_table.c.status.in_((RUNNING, COMPENSATING)),
                )
            )
            sagas_in_flight.labels(self.definition.name).set(in_flight.scalar_one())
        return list(rows.scalars())

    async def worker(self) -> None:
        """Resume unfinished sagas forever (one per process; leases keep replicas from colliding)."""
        # A database outage: said once (with its traceback when unexpected), and its end once.
        name = self.definition.name
        notice = RetryNotice(log, f"the {name} saga worker's poll", extra={"saga": name})
        while not self._stopping:
            try:
                for key in await self.due():
                    if key not in self._active:
                        self.kick(key)
                notice.succeeded()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                notice.failed(exc, traceback=not isinstance(exc, (OSError, sa_exc.DBAPIError)))
            await asyncio.sleep(self.policy.poll_interval_seconds)


def _retry_after(exc: BaseException) -> float:
    """The callee's (or its open circuit's) ``Retry-After``, in seconds; 0 when it gave none."""
    headers = getattr(exc, "headers", None) or {}
    try:
        return float(headers.get("Retry-After", 0))
    except (TypeError, ValueError):
        return 0.0


def _describe(exc: BaseException) -> str:
    if isinstance(exc, errors.RoomeeError):
        detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail, default=str)
        return f"{exc.code}: {detail}"[:1000]
    return f"{type(exc).__name__}: {exc}"[:1000]


def describe_step(row: dict) -> dict[str, Any]:
    """A step row in the provisioning shape."""
    return {
        "name": row["name"],
        "status": row["status"],
        "attempts": row["attempts"],
        "last_error": row["last_error"],
        "external_id": row["external_id"],
        "started_at": as_utc(row["started_at"]),
        "finished_at": as_utc(row["finished_at"]),
    }
