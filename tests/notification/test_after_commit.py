"""After-commit callbacks: a library's CancelledError (aio-pika's closed channel, through
python-socketio) fails one callback only; the next transactions' emits still run."""

from __future__ import annotations

import asyncio

from roomee.notification import hooks


async def test_a_library_cancelled_error_does_not_drop_the_next_callbacks():
    ran: list[str] = []

    async def broken_channel():
        ran.append("first")
        raise asyncio.CancelledError()  # what python-socketio raises for ChannelInvalidStateError

    async def later():
        ran.append("second")

    hooks._schedule([broken_channel, later])
    hooks._schedule([later])
    await hooks.drain(5)
    assert ran == ["first", "second", "second"]


async def test_a_real_cancellation_still_cancels():
    started = asyncio.Event()

    async def waits():
        started.set()
        await asyncio.sleep(30)

    hooks._schedule([waits])
    await started.wait()
    [task] = list(hooks._pending)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()
