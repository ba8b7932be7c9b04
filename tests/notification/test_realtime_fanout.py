"""Socket.IO fan-out by room between replicas (RabbitMQ): a replica receives only the emits for the
rooms it holds sockets of, and the replica holding them delivers each once, in order.

Three ``SocketServer`` replicas of one deployment on one broker: replica 1 holds the sockets of
workspace ``wA``, replica 2 those of ``wB``, and a third one with no socket emits (as the notification
dispatcher of another process does). What a replica's queue brought is counted by its manager.
"""

from __future__ import annotations

import asyncio
import time

import aio_pika
import pytest

from roomee.notification.channels import NOTIFICATION_NEW
from roomee.notification.realtime.fanout import ALL_KEY, EXCHANGE_SUFFIX
from roomee.notification.realtime.server import SocketServer
from tests.fixtures.fakes import FakeServiceContext
from tests.fixtures.platform import AMQP_URL, BACKEND, make_settings
from tests.notification.test_socket_server import Inbox, running_socket

pytestmark = pytest.mark.skipif(BACKEND != "real", reason="replicas share rooms through RabbitMQ (ROOMEE_TEST_BACKEND=real)")

END = "end"  # a marker: emitted last, its arrival means every emit before it from the same replica arrived


async def until(check, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.02)


async def test_a_replica_receives_only_the_emits_of_the_rooms_it_holds_sockets_of(tmp_path):
    settings = make_settings(tmp_path, broker_url=AMQP_URL)
    ctx_1, ctx_2 = FakeServiceContext(settings), FakeServiceContext(settings)
    sender = SocketServer(ctx_1.platform.verifier, broker_url=AMQP_URL, exchange=settings.exchange)
    events = (NOTIFICATION_NEW, "comment:new", END)
    inboxes: list[Inbox] = []

    async def connect(url: str, member: str, workspace: str) -> Inbox:
        inbox = await Inbox(*events).connect(url, auth={"token": ctx_1.issue(member, workspace)})
        inboxes.append(inbox)
        return inbox

    try:
        await sender.start()
        async with running_socket(ctx_1) as (url_1, replica_1), running_socket(ctx_2) as (url_2, replica_2):
            a1, a2 = await connect(url_1, "a1", "wA"), await connect(url_1, "a2", "wA")
            b1 = await connect(url_2, "b1", "wB")
            first, second = replica_1.manager, replica_2.manager
            assert {"workspace.wA", "member.a1", "member.a2", ALL_KEY} <= first.bound
            assert "workspace.wA" not in second.bound and "member.a1" not in second.bound
            received_1, received_2 = first.received_messages, second.received_messages

            # hotel A's traffic: a dispatcher batch, a workspace broadcast leaving a2 out, a single emit
            await sender.to_members_many(
                [(NOTIFICATION_NEW, {"id": f"n{i}"}, ["a1"]) for i in range(10)]
                + [(NOTIFICATION_NEW, {"id": "both"}, ["a1", "a2"])]
            )
            await sender.to_workspace("wA", "comment:new", {"c": 1}, skip_member_ids=["a2"])
            await sender.to_members(["a2"], NOTIFICATION_NEW, {"id": "last"})
            await sender.to_members(["a1", "a2", "b1"], END, {})
            for inbox in (a1, a2, b1):
                await inbox.wait(END)

            # replica 2 got the marker (its member's room) and nothing of A before it
            assert second.received_messages - received_2 == 1
            assert b1.received[NOTIFICATION_NEW] == [] and b1.received["comment:new"] == []
            # replica 1 got each of the four messages once (the batch names two of its rooms)
            assert first.received_messages - received_1 == 4
            assert a1.received[NOTIFICATION_NEW] == [{"id": f"n{i}"} for i in range(10)] + [{"id": "both"}]
            assert a1.received["comment:new"] == [{"c": 1}]
            assert a2.received[NOTIFICATION_NEW] == [{"id": "both"}, {"id": "last"}]
            assert a2.received["comment:new"] == []  # left out on the replica that holds its socket

            # a socket of hotel A joining replica 2 later: replica 2 starts receiving A's emits
            a3 = await connect(url_2, "a3", "wA")
            assert "workspace.wA" in second.bound and "member.a3" in second.bound
            received_2 = second.received_messages
            await sender.to_workspace("wA", "comment:new", {"c": 2})
            await sender.to_members(["a3"], NOTIFICATION_NEW, {"id": "for-a3"})
            await sender.to_members(["a1", "a3"], END, {})
            await a3.wait(END)
            await a1.wait(END, 2)
            assert a3.received["comment:new"] == [{"c": 2}]
            assert a3.received[NOTIFICATION_NEW] == [{"id": "for-a3"}]
            assert a1.received["comment:new"] == [{"c": 1}, {"c": 2}]
            assert second.received_messages - received_2 == 3

            # and stops when the last socket of A on replica 2 leaves
            await a3.close()
            inboxes.remove(a3)
            await until(lambda: "workspace.wA" not in second.bound and "member.a3" not in second.bound,
                        "replica 2 kept its bindings of hotel A")
            received_2 = second.received_messages
            await sender.to_workspace("wA", "comment:new", {"c": 3})
            await sender.to_members(["b1"], END, {})
            await b1.wait(END, 2)
            assert second.received_messages - received_2 == 1
            await a1.wait("comment:new", 3)
    finally:
        for inbox in inboxes:
            await inbox.close()
        await sender.close()
        connection = await aio_pika.connect(AMQP_URL)
        async with connection:
            await (await connection.channel()).exchange_delete(f"{settings.exchange}{EXCHANGE_SUFFIX}")


async def test_an_emit_to_a_socket_id_goes_only_to_the_replicas_of_its_member(tmp_path):
    settings = make_settings(tmp_path, broker_url=AMQP_URL)
    ctx_1, ctx_2 = FakeServiceContext(settings), FakeServiceContext(settings)
    try:
        async with running_socket(ctx_1) as (url_1, replica_1), running_socket(ctx_2) as (url_2, replica_2):
            a1 = await Inbox("greeting", END).connect(url_1, auth={"token": ctx_1.issue("a1", "wA")})
            b1 = await Inbox(END).connect(url_2, auth={"token": ctx_1.issue("b1", "wB")})
            try:
                received_2 = replica_2.manager.received_messages
                (sid,) = replica_1.member_sids("a1")
                await replica_1.to_sid(sid, "greeting", {"hello": 1})
                assert await a1.wait("greeting") == [{"hello": 1}]
                await replica_1.to_members(["b1"], END, {})
                await b1.wait(END)
                assert replica_2.manager.received_messages - received_2 == 1  # the marker only
                assert a1.received["greeting"] == [{"hello": 1}]
            finally:
                await a1.close()
                await b1.close()
    finally:
        connection = await aio_pika.connect(AMQP_URL)
        async with connection:
            await (await connection.channel()).exchange_delete(f"{settings.exchange}{EXCHANGE_SUFFIX}")


async def test_a_binding_that_failed_is_tried_again_until_the_room_is_bound(tmp_path, monkeypatch):
    """A robust connection restores its queue in place after a broker outage, so nothing restarts the
    listener to bind what is wanted: a failed bind is tried again by itself."""
    settings = make_settings(tmp_path, broker_url=AMQP_URL)
    ctx = FakeServiceContext(settings)
    sender = SocketServer(ctx.platform.verifier, broker_url=AMQP_URL, exchange=settings.exchange)
    try:
        await sender.start()
        async with running_socket(ctx) as (url, replica):
            queue_class = type(replica.manager._listener_queue)
            real_bind, failures = queue_class.bind, []

            async def failing_bind(queue, exchange, key, *args, **kwargs):
                if key == "member.a1" and len(failures) < 2:
                    failures.append(key)
                    raise aio_pika.exceptions.AMQPConnectionError("the broker is away")
                return await real_bind(queue, exchange, key, *args, **kwargs)

            monkeypatch.setattr(queue_class, "bind", failing_bind)
            a1 = await Inbox(NOTIFICATION_NEW).connect(url, auth={"token": ctx.issue("a1", "wA")})
            try:
                assert "member.a1" not in replica.manager.bound
                await until(lambda: "member.a1" in replica.manager.bound, "the failed binding was never tried again")
                assert failures == ["member.a1", "member.a1"]
                await sender.to_members(["a1"], NOTIFICATION_NEW, {"id": "after"})
                assert await a1.wait(NOTIFICATION_NEW) == [{"id": "after"}]
            finally:
                await a1.close()
    finally:
        await sender.close()
        connection = await aio_pika.connect(AMQP_URL)
        async with connection:
            await (await connection.channel()).exchange_delete(f"{settings.exchange}{EXCHANGE_SUFFIX}")
