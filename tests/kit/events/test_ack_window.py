"""The AMQP consumer's acks (``_AckWindow``): deliveries settled together are acknowledged by one
``basic.ack(multiple)`` naming a tag still unacknowledged; one settled while an earlier delivery is still
being handled is acknowledged alone; a nacked tag is never the one a multiple ack names (RabbitMQ closes
the channel on an unknown delivery tag). The channel is a recorder of the frames aiormq would send."""

from __future__ import annotations

import asyncio

from roomee.kit.events.amqp import _AckWindow


class RecordingChannel:
    def __init__(self) -> None:
        self.is_closed = False
        self.sent: list[tuple[int, bool]] = []

    async def basic_ack(self, tag: int, multiple: bool = False, wait: bool = True) -> None:
        self.sent.append((tag, multiple))


async def _turn() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def test_a_batch_is_acknowledged_by_one_multiple_ack():
    channel = RecordingChannel()
    window = _AckWindow(channel, "q")
    for tag in (1, 2, 3, 4):
        window.ack(tag)
    await _turn()
    assert channel.sent == [(4, True)]


async def test_a_delivery_settled_before_an_earlier_one_is_acknowledged_alone():
    channel = RecordingChannel()
    window = _AckWindow(channel, "q")
    window.ack(2)
    window.ack(3)
    await _turn()
    assert channel.sent == [(2, False), (3, False)]  # tag 1 is still being handled: nothing waits for it
    window.ack(1)
    window.ack(4)
    await _turn()
    # 1 and 4 are still unacknowledged; 2 and 3 are not, and the multiple ack names 4.
    assert channel.sent[2:] == [(4, True)]


async def test_a_nacked_tag_is_never_named_by_a_multiple_ack():
    channel = RecordingChannel()
    window = _AckWindow(channel, "q")
    window.ack(1)
    window.settled_alone(2)  # nacked on the wire
    await _turn()
    assert channel.sent == [(1, True)]
    window.settled_alone(3)
    await _turn()
    assert channel.sent == [(1, True)]  # nothing left to acknowledge
    window.ack(4)
    await _turn()
    assert channel.sent[-1] == (4, True)


async def test_nothing_is_sent_on_a_closed_channel():
    channel = RecordingChannel()
    window = _AckWindow(channel, "q")
    window.ack(1)
    channel.is_closed = True
    await _turn()
    assert channel.sent == []
