"""Work that must wait for the end of a transaction: socket emits after the commit (a client told
about a notification can read it).

Callbacks are coroutine functions stored on the session; SQLAlchemy's session events run them,
in commit order and one at a time, as tasks of the running event loop. ``drain()`` waits for
those still running (shutdown, tests).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

log = logging.getLogger("roomee.notification")

Callback = Callable[[], Awaitable[None]]

_AFTER_COMMIT = "roomee.notification.after_commit"
_pending: set[asyncio.Task] = set()
_order: dict[asyncio.AbstractEventLoop, asyncio.Lock] = {}


def cancelled_from_outside() -> bool:
    """Whether the running task is really being cancelled: aio-pika (through python-socketio) also
    raises CancelledError for a closed channel, which is a failure to handle, not a cancellation."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def after_commit(session: AsyncSession, callback: Callback) -> None:
    """Run ``callback`` once the session's transaction has committed (dropped on rollback)."""
    session.sync_session.info.setdefault(_AFTER_COMMIT, []).append(callback)


def _schedule(callbacks: list[Callback]) -> None:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        log.error("transaction hook outside an event loop; %d callbacks dropped", len(callbacks))
        return
    lock = _order.setdefault(loop, asyncio.Lock())

    async def run() -> None:
        async with lock:  # FIFO: callbacks of successive transactions keep their order
            for callback in callbacks:
                try:
                    await callback()
                except asyncio.CancelledError:
                    if cancelled_from_outside():
                        raise
                    # A library's CancelledError (aio-pika's closed channel): a failure of this
                    # callback only; the transactions after it still get their turn.
                    log.error("after-transaction callback was cancelled by a library")
                except Exception:
                    log.exception("after-transaction callback failed")

    task = loop.create_task(run(), name="roomee-notification-after-tx")
    _pending.add(task)
    task.add_done_callback(_pending.discard)


@event.listens_for(Session, "after_commit")
def _on_commit(session: Session) -> None:
    callbacks = session.info.pop(_AFTER_COMMIT, None)
    if callbacks:
        _schedule(callbacks)


@event.listens_for(Session, "after_rollback")
def _on_rollback(session: Session) -> None:
    session.info.pop(_AFTER_COMMIT, None)


async def drain(timeout: float = 10.0) -> None:
    """Wait (bounded) for the callbacks already scheduled."""
    deadline = asyncio.get_running_loop().time() + timeout
    while _pending:
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            break
        await asyncio.wait(set(_pending), timeout=remaining)
