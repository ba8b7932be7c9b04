"""The app factory's conventions: health, readiness, metrics, request ids, the error model."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures.events import event_tap
from tests.fixtures.platform import BACKEND
from tests.fixtures.people import invite_and_join, make_admin


def _sample(text: str, name: str, **labels: str) -> float | None:
    """The sum of the samples called ``name`` whose labels include ``labels``."""
    values = [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    ]
    return sum(values) if values else None


async def test_health_ready_and_error_model(platform):
    async with platform.client() as client:
        health = await client.get("/health")
        assert health.status_code == 200 and health.json()["status"] == "ok"
        ready = await client.get("/health/ready")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {"database:auth": "ok", "database:members": "ok", "broker": "ok",
                                          "workers": "running"} | {
            k: "ok" for k in ready.json()["checks"] if k.startswith("database:")
        }
        missing = await client.get("/no/such/route", headers={"X-Request-ID": "req-123"})
        assert missing.status_code == 404
        assert missing.json() == {"error": "not_found", "detail": "Not Found"}
        assert missing.headers["x-request-id"] == "req-123"
        assert len((await client.get("/health")).headers["x-request-id"]) == 32


async def test_text_postgresql_cannot_store_is_a_client_error(platform):
    """A NUL character (schemathesis found it in path parameters and bodies on PostgreSQL, which refuses it
    while SQLite stores it) is refused before any route runs, on both backends alike."""
    refused = {"error": "invalid_text", "detail": "text must not contain NUL (U+0000) characters"}
    async with platform.client() as client:
        admin = await make_admin(platform, client, "nul@example.com")
        answers = [
            await client.get("/members/a%00b", headers=admin.headers),
            await client.get("/members/", params={"cursor": "a\x00b"}, headers=admin.headers),
            await client.post("/api/v1/pages", content=b'{"pageType": "feed", "title": "a\\u0000b"}',
                              headers=admin.headers | {"Content-Type": "application/json"}),
            await client.post("/oauth/token", data={"grant_type": "client_credentials", "client_id": "a\x00b",
                                                    "client_secret": "x"}),
        ]
        for answer in answers:
            assert answer.status_code == 422, answer.text
            assert answer.json() == refused
        # An escaped backslash followed by "u0000" is text without NUL, stored as such.
        escaped = await client.post("/api/v1/pages", content=b'{"pageType": "feed", "title": "a\\\\u0000b"}',
                                    headers=admin.headers | {"Content-Type": "application/json"})
        assert escaped.status_code == 201, escaped.text
        assert escaped.json()["title"] == "a\\u0000b"
        assert (await client.get(f"/members/{admin.member_id}", headers=admin.headers)).status_code == 200


async def test_a_database_that_cannot_be_reached_answers_503(platform, monkeypatch):
    """A connection refused or lost while a request runs is the database's outage, not a bug: 503 with
    Retry-After, and the service answers again once it is back."""
    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

    from tests.fixtures.platform import free_port

    db = platform.platform.services["members"].db
    # A PostgreSQL address where nothing listens, on both backends: the driver's connect is refused.
    stopped = create_async_engine(f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/test")
    async with platform.client() as client:
        admin = await make_admin(platform, client, "outage@example.com")
        with monkeypatch.context() as patched:
            patched.setattr(db, "read_sessionmaker", async_sessionmaker(stopped))
            patched.setattr(db, "sessionmaker", async_sessionmaker(stopped))
            if db.hot_pool is not None:  # the hot reads' own connections (roomee.kit.hot) are refused too
                patched.setattr(db.hot_pool, "_connect_args", lambda: {"host": "127.0.0.1", "port": stopped.url.port,
                                                                       "user": "postgres", "database": "test"})
            else:  # on SQLite the hot reads use the engine itself, which stays reachable here
                patched.setattr(platform.app.state.hot_routes, "enabled", False)
            read = await client.get(f"/members/{admin.member_id}", headers=admin.headers)
            write = await client.patch(f"/members/{admin.member_id}", json={"firstName": "Ada"}, headers=admin.headers)
        for answer in (read, write):
            assert answer.status_code == 503, answer.text
            assert answer.json()["error"] == "database_unavailable"
            assert int(answer.headers["retry-after"]) > 0
        assert (await client.get(f"/members/{admin.member_id}", headers=admin.headers)).status_code == 200
    await stopped.dispose()


async def test_no_pooled_connection_free_in_time_answers_503(platform, monkeypatch):
    """Every connection of the pool busy past the pool's timeout: 503 with Retry-After, not 500."""
    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

    db = platform.platform.services["members"].db
    tiny = create_async_engine(db.url, pool_size=1, max_overflow=0, pool_timeout=0.1)
    async with platform.client() as client, tiny.connect() as held:
        admin = await make_admin(platform, client, "busy@example.com")
        await held.exec_driver_sql("SELECT 1")  # the pool's one connection, kept by the test
        with monkeypatch.context() as patched:
            patched.setattr(db, "read_sessionmaker", async_sessionmaker(tiny))
            patched.setattr(platform.app.state.hot_routes, "enabled", False)  # the engine's pool, not the hot reads'
            busy = await client.get(f"/members/{admin.member_id}", headers=admin.headers)
        assert busy.status_code == 503, busy.text
        assert busy.json()["error"] == "database_unavailable" and int(busy.headers["retry-after"]) > 0
    await tiny.dispose()


async def test_a_connection_lost_during_a_request_answers_503(platform, monkeypatch):
    """A pooled PostgreSQL connection terminated by the server (a restart, a failover) fails its request with
    503 rather than 500; the pool replaces it for the next one."""
    import pytest
    import sqlalchemy as sa

    if BACKEND != "real":
        pytest.skip("SQLite has no server connection to lose")
    db = platform.platform.services["members"].db
    async with platform.client() as client:
        admin = await make_admin(platform, client, "lost@example.com")
        original = db.read_sessionmaker

        def terminated_first():
            session = original()

            @sa.event.listens_for(session.sync_session, "after_begin", once=True)
            def terminate(_session, _transaction, connection):
                pid = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar()
                with db.engine.sync_engine.connect() as other:
                    other.exec_driver_sql(f"SELECT pg_terminate_backend({int(pid)})")

            return session

        with monkeypatch.context() as patched:
            patched.setattr(db, "read_sessionmaker", terminated_first)
            patched.setattr(platform.app.state.hot_routes, "enabled", False)  # the engine's pool: see test_hot_reads
            lost = await client.get(f"/members/{admin.member_id}", headers=admin.headers)
        assert lost.status_code == 503, lost.text
        assert lost.json()["error"] == "database_unavailable" and int(lost.headers["retry-after"]) > 0
        assert (await client.get(f"/members/{admin.member_id}", headers=admin.headers)).status_code == 200


async def test_metrics_after_traffic(platform):
    async with platform.client() as client, event_tap(platform) as tap:
        admin = await make_admin(platform, client, "admin@example.com")
        await invite_and_join(client, tap, admin, "staff@example.com")
        await client.get(f"/members/{admin.member_id}", headers=admin.headers)
        text = (await client.get("/metrics")).text

    assert _sample(text, "http_request_duration_seconds_count", service="all", endpoint="/users/signIn",
                   method="POST", status="200") >= 2
    # Route templates, never raw ids, in the endpoint label.
    assert _sample(text, "http_request_duration_seconds_count", endpoint="/members/{member_id}", method="GET") >= 1
    assert admin.member_id not in text
    # auth -> members at every sign-in (the seed's matrix), seen by the caller.
    assert _sample(text, "http_client_request_duration_seconds_count", service="auth", target="members",
                   endpoint="/members/get/with/{email}", status="200") >= 2
    assert _sample(text, "http_client_request_duration_seconds_bucket", service="auth", target="members", le="+Inf") >= 2
    assert _sample(text, "amqp_messages_total", service="members", routing_key="roomee.notification.member.onboarding",
                   direction="publish", status="ok") >= 1
    assert _sample(text, "amqp_messages_total", service="auth", routing_key="roomee.notification.member.registered",
                   direction="publish", status="ok") >= 1
    # Samples, not just the HELP lines: auth's breaker towards members is closed (0), members' outbox drained.
    assert _sample(text, "circuit_breaker_state", service="auth", target="members") == 0
    assert _sample(text, "outbox_backlog", service="members") is not None


async def _served_app_with_a_failing_route(settings):
    """The platform's app (no targets) with one route that fails unexpectedly."""
    import uvicorn

    from roomee.kit.app import create_app

    app = create_app(settings, [])

    async def boom():
        raise RuntimeError("boom")

    app.fastapi.add_api_route("/boom", boom)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=settings.port, log_config=None))
    return server


async def _exchange(reader, writer, request: bytes) -> tuple[int, bytes]:
    writer.write(request)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
    return int(head.split(b" ")[1]), await reader.readexactly(length)


async def test_an_unhandled_error_is_logged_once_answered_and_keeps_the_connection(settings, caplog):
    import asyncio
    import json
    import logging

    server = await _served_app_with_a_failing_route(settings)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.02)
        caplog.set_level(logging.INFO)
        reader, writer = await asyncio.open_connection("127.0.0.1", settings.port)
        status, body = await _exchange(reader, writer, b"GET /boom HTTP/1.1\r\nHost: t\r\n\r\n")
        assert status == 500 and json.loads(body) == {"error": "internal_error", "detail": "an unexpected error occurred"}
        # The same keep-alive connection still answers.
        status, body = await _exchange(reader, writer, b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
        assert status == 200 and json.loads(body)["status"] == "ok"
        writer.close()
        tracebacks = [r for r in caplog.records if r.exc_info and "boom" in str(r.exc_info[1])]
        assert len(tracebacks) == 1 and tracebacks[0].name == "roomee.http.server"
    finally:
        server.should_exit = True
        await task


async def test_metric_labels_are_bounded(platform):
    import asyncio

    from roomee.kit.events import Message

    dead = {"service": "notification", "routing_key": "roomee.notification.#", "direction": "consume",
            "status": "dead"}
    async with platform.client() as client:
        before = _sample((await client.get("/metrics")).text, "amqp_messages_total", **dead) or 0
        # Anyone with broker access may publish any key: the consumer counts it under its binding.
        await platform.platform.broker.publish_batch([Message("roomee.notification.random-key-987", b"not json")])
        await client.request("PROPFIND", "/health")
        await client.get("/members/some-raw-id-123")
        for _ in range(100):
            text = (await client.get("/metrics")).text
            if (_sample(text, "amqp_messages_total", **dead) or 0) > before:
                break
            await asyncio.sleep(0.1)
    assert "PROPFIND" not in text and "some-raw-id-123" not in text and "random-key-987" not in text
    assert _sample(text, "http_request_duration_seconds_count", method="OTHER") >= 1
    assert _sample(text, "amqp_messages_total", **dead) == before + 1


async def test_readiness_follows_the_databases_not_the_broker(platform, monkeypatch):
    from roomee.kit.events import BrokerUnavailable

    async def broker_down():
        raise BrokerUnavailable("AMQP connection lost; reconnecting")

    monkeypatch.setattr(platform.platform.broker, "ping", broker_down)
    async with platform.client() as client:
        ready = await client.get("/health/ready")
        text = (await client.get("/metrics")).text
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["broker"] == "unavailable: AMQP connection lost; reconnecting"
    assert ready.json()["checks"]["database:members"] == "ok"
    assert _sample(text, "broker_connected", service="all") == 0


async def test_readiness_says_when_migrations_are_pending(tmp_path):
    from tests.fixtures.platform import make_settings, running_platform

    settings = make_settings(tmp_path, auto_migrate=False)
    async with running_platform(settings, target="members") as running, running.client() as client:
        pending = await client.get("/health/ready")
        assert pending.status_code == 503
        assert pending.json()["checks"]["migrations:members"].startswith("pending: at nothing, head ")
        await running.platform.migrate()
        await running.platform.wait_started()  # start-up polls the revision and starts the workers at head
        ready = await client.get("/health/ready")
        assert ready.status_code == 200 and "migrations:members" not in ready.json()["checks"]
        assert ready.json()["checks"]["workers"] == "running"


def _timestamps(document, path: str = "") -> dict[str, str]:
    """Every ``...At`` string of a JSON document, by its path."""
    found = {}
    if isinstance(document, dict):
        for key, value in document.items():
            if key.endswith("At") and isinstance(value, str):
                found[f"{path}.{key}"] = value
            found |= _timestamps(value, f"{path}.{key}")
    elif isinstance(document, list):
        for n, value in enumerate(document):
            found |= _timestamps(value, f"{path}[{n}]")
    return found


async def test_every_timestamp_on_the_wire_carries_its_zone(platform):
    """On SQLite too (it keeps no zone): DELETE /hotel/{id} answered createdAt without one, from the row
    as read back; the kit's SQLite DateTime reads every DateTime(timezone=True) as UTC."""
    from datetime import datetime

    from tests.hotel.support import add_hotel, hotel_body, wait_for_status

    async with platform.client() as client:
        operator = await platform.service_headers("operator")
        hotel_id = await add_hotel(client, operator, hotel_body())
        await wait_for_status(client, operator, hotel_id, statuses=("ready",))
        answers = {"get": (await client.get(f"/hotel/{hotel_id}", headers=operator)).json(),
                   "provisioning": (await client.get(f"/hotel/{hotel_id}/provisioning", headers=operator)).json()}
        deleted = await client.delete(f"/hotel/{hotel_id}", headers=operator)
        assert deleted.status_code == 202, deleted.text
        answers["delete"] = deleted.json()
    stamps = _timestamps(answers)
    assert {".delete.createdAt", ".delete.updatedAt"} <= set(stamps), stamps
    for where, value in stamps.items():
        assert datetime.fromisoformat(value.replace("Z", "+00:00")).tzinfo is not None, (where, value)
