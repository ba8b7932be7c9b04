"""Push channel: the OneSignal backend against a recording fake, checked against the official SDK."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

import onesignal
import pytest
from onesignal.api import default_api
from onesignal.model.notification import Notification
from pydantic import ValidationError

from roomee.kit.breaker import CircuitBreaker
from roomee.notification.channels import PushMessage, build_push
from roomee.notification.channels.push import (
    MAX_BATCH,
    LogPush,
    OneSignalPush,
    batch_idempotency_key,
    batches,
    onesignal_language,
)
from tests.fixtures.fakes import onesignal_fake
from tests.fixtures.platform import free_port, make_settings

APP_ID = "3c1f8a2e-1b7d-4c59-9a8e-6f2b0d4e5a71"
API_KEY = "os_v2_app_test_key"


def message(subscriptions: list[str], **overrides) -> PushMessage:
    values = dict(
        notification_id="notif-1",
        workspace_id="ws-1",
        title="Nouvel article",
        body="Camille a publié « Planning »",
        data={"pageId": "page-1", "type": "page.created"},
        subscription_ids=subscriptions,
        locale="fr",
    )
    values.update(overrides)
    return PushMessage(**values)


def subscriptions(n: int) -> list[str]:
    return [str(uuid.UUID(int=i + 1)) for i in range(n)]


def push_for(url: str, **kwargs) -> OneSignalPush:
    return OneSignalPush(url=url, app_id=APP_ID, api_key=API_KEY, **kwargs)


async def test_requests_have_the_official_sdk_shape():
    msg = message(subscriptions(3))
    async with onesignal_fake() as fake:
        push = push_for(fake.url)
        try:
            [result] = await push.send(msg, idempotency_key="event-1")
        finally:
            await push.aclose()
        ours = fake.requests[0]

        # The same notification through the official SDK.
        api = default_api.DefaultApi(onesignal.ApiClient(onesignal.Configuration(host=fake.url, rest_api_key=API_KEY)))
        await asyncio.to_thread(api.create_notification, Notification(**ours.json))
        sdk = fake.requests[1]

    assert result.status == "sent" and result.provider == "onesignal" and result.channel == "push"
    assert result.recipients == sorted(msg.subscription_ids)
    assert uuid.UUID(result.provider_message_id)
    for request in (ours, sdk):
        assert (request.method, request.path) == ("POST", "/notifications")
        assert request.header("authorization") == f"Key {API_KEY}"
        assert request.header("content-type") == "application/json"
        assert request.header("accept") == "application/json"
    assert ours.json == sdk.json
    body = ours.json
    assert body["app_id"] == APP_ID
    assert body["include_subscription_ids"] == sorted(msg.subscription_ids)
    assert body["contents"] == {"fr": msg.body, "en": msg.body}  # OneSignal requires "en"
    assert body["headings"] == {"fr": msg.title, "en": msg.title}
    assert body["data"] == {**msg.data, "notificationId": "notif-1", "workspaceId": "ws-1"}
    assert str(uuid.UUID(body["idempotency_key"])) == body["idempotency_key"]


async def test_4500_subscriptions_make_3_requests_of_at_most_2000():
    subs = subscriptions(4500)
    async with onesignal_fake() as fake:
        push = push_for(fake.url)
        try:
            results = await push.send(message(subs + subs[:10]), idempotency_key="event-2")
        finally:
            await push.aclose()
    assert len(fake.requests) == 3 and len(results) == 3
    sizes = sorted(len(r.json["include_subscription_ids"]) for r in fake.requests)
    assert sizes == [500, 2000, 2000] and max(sizes) <= MAX_BATCH
    sent = [s for r in fake.requests for s in r.json["include_subscription_ids"]]
    assert sorted(sent) == sorted(subs)  # each subscription once (duplicates dropped)
    assert len({r.json["idempotency_key"] for r in fake.requests}) == 3
    assert all(r.status == "sent" for r in results)
    assert sorted(s for r in results for s in r.recipients) == sorted(subs)


async def test_idempotency_keys_are_stable_for_a_retry_and_new_for_other_recipients():
    subs = subscriptions(4500)
    assert [batch_idempotency_key("k", i, b) for i, b in enumerate(batches(subs))] == [
        batch_idempotency_key("k", i, b) for i, b in enumerate(batches(list(reversed(subs))))
    ]
    first = batches(subs)
    retry_of_last = batches(first[2])  # only the failed batch is sent again: it becomes batch 0
    assert batch_idempotency_key("k", 0, retry_of_last[0]) != batch_idempotency_key("k", 0, first[0])
    assert batch_idempotency_key("k", 0, first[0]) != batch_idempotency_key("other", 0, first[0])


@pytest.mark.parametrize(
    ("status", "retryable"),
    [(500, True), (502, True), (503, True), (429, True), (400, False), (401, False), (403, False)],
)
async def test_provider_errors_fail_the_request_with_the_right_retry_hint(status, retryable):
    async with onesignal_fake() as fake:
        fake.fail_next(1, status=status)
        push = push_for(fake.url)
        try:
            [result] = await push.send(message(subscriptions(2)), idempotency_key="event-3")
            [again] = await push.send(message(subscriptions(2)), idempotency_key="event-3")
        finally:
            await push.aclose()
    assert result.status == "failed" and result.retryable is retryable
    assert result.error == f"HTTP {status}" and "injected" in result.response
    assert result.recipients == subscriptions(2)
    assert again.status == "sent"
    # The retry carries the same idempotency key: OneSignal will not send it twice.
    assert fake.requests[0].json["idempotency_key"] == fake.requests[1].json["idempotency_key"]


async def test_5xx_on_one_batch_fails_only_that_batch():
    async with onesignal_fake() as fake:
        answers = iter([(200, {"id": "a", "errors": None}), (503, {"errors": ["busy"]}), (200, {"id": "c"})])
        fake.respond_with("POST", "/notifications", lambda _request: next(answers))
        push = push_for(fake.url, concurrency=1)
        try:
            results = await push.send(message(subscriptions(4500)), idempotency_key="event-4")
        finally:
            await push.aclose()
    assert [r.status for r in results] == ["sent", "failed", "sent"]
    assert results[1].retryable and len(results[1].recipients) == 2000


async def test_connection_error_and_timeout_are_retryable():
    push = push_for(f"http://127.0.0.1:{free_port()}")
    try:
        [refused] = await push.send(message(subscriptions(1)), idempotency_key="event-5")
    finally:
        await push.aclose()
    assert refused.status == "failed" and refused.retryable and refused.error.startswith("connection error")

    async with onesignal_fake() as fake:
        fake.delay = 0.5
        push = push_for(fake.url, timeout=0.1)
        try:
            [slow] = await push.send(message(subscriptions(1)), idempotency_key="event-6")
        finally:
            await push.aclose()
    assert slow.status == "failed" and slow.retryable and slow.error.startswith("timeout")


async def test_provider_timeout_setting_bounds_each_onesignal_request(tmp_path):
    async with onesignal_fake() as fake:
        fake.delay = 0.6
        push = build_push(
            make_settings(tmp_path, push_backend="onesignal", onesignal_app_id=APP_ID, onesignal_api_key=API_KEY,
                          onesignal_url=fake.url, provider_timeout_seconds=0.2)
        )
        try:
            assert push.timeout == 0.2
            started = time.monotonic()
            [slow] = await push.send(message(subscriptions(1)), idempotency_key="event-12")
            elapsed = time.monotonic() - started
        finally:
            await push.aclose()
    assert slow.status == "failed" and slow.retryable and slow.error.startswith("timeout")
    assert elapsed < 0.5


def test_provider_timeout_must_be_positive(tmp_path):
    for invalid in (0, -1):
        with pytest.raises(ValidationError, match="provider_timeout_seconds"):
            make_settings(tmp_path, provider_timeout_seconds=invalid)


async def test_200_without_id_is_not_sent_and_invalid_ids_are_reported():
    async with onesignal_fake() as fake:
        fake.respond("POST", "/notifications", 200, {"id": "", "errors": ["All included players are not subscribed"]})
        push = push_for(fake.url)
        try:
            [nobody] = await push.send(message(subscriptions(2)), idempotency_key="event-7")
            invalid = subscriptions(2)[1]
            fake.respond("POST", "/notifications", 200, {"id": "n-9", "errors": {"invalid_player_ids": [invalid]}})
            [partial] = await push.send(message(subscriptions(2)), idempotency_key="event-8")
        finally:
            await push.aclose()
    assert nobody.status == "failed" and not nobody.retryable and "not subscribed" in nobody.error
    assert partial.status == "sent" and partial.provider_message_id == "n-9"
    assert partial.invalid_recipients == [invalid]


async def test_open_circuit_fails_fast_without_calling_onesignal():
    breaker = CircuitBreaker("notification", "onesignal-test", volume_threshold=2, reset_timeout_ms=60_000)
    async with onesignal_fake() as fake:
        fake.fail_next(2, status=500)
        push = push_for(fake.url, breaker=breaker)
        try:
            for key in ("e1", "e2"):
                [failed] = await push.send(message(subscriptions(1)), idempotency_key=key)
                assert failed.error == "HTTP 500"
            [blocked] = await push.send(message(subscriptions(1)), idempotency_key="e3")
        finally:
            await push.aclose()
    assert len(fake.requests) == 2
    assert blocked.status == "failed" and blocked.retryable and blocked.error.startswith("circuit open")


async def test_english_member_and_message_without_title():
    async with onesignal_fake() as fake:
        push = push_for(fake.url)
        try:
            await push.send(message(subscriptions(1), locale="en-GB", title=""), idempotency_key="event-9")
        finally:
            await push.aclose()
    body = fake.requests[0].json
    assert body["contents"] == {"en": "Camille a publié « Planning »"} and "headings" not in body
    assert onesignal_language("zh-hant-TW") == "zh-Hant" and onesignal_language("pt_BR") == "pt"


async def test_log_backend_logs_and_reports_one_logged_result_per_batch(caplog):
    push = LogPush()
    with caplog.at_level(logging.INFO, logger="roomee.notification.push"):
        results = await push.send(message(subscriptions(2001)), idempotency_key="event-10")
    assert [len(r.recipients) for r in results] == [2000, 1]
    assert all(r.status == "logged" and r.provider == "log" for r in results)  # nothing was delivered
    assert sum("Nouvel article" in record.getMessage() for record in caplog.records) == 2
    assert await push.send(message([]), idempotency_key="event-11") == []


async def test_backend_is_chosen_by_settings(tmp_path):
    assert isinstance(build_push(make_settings(tmp_path)), LogPush)
    with pytest.raises(ValueError, match="ROOMEE_ONESIGNAL_APP_ID"):
        build_push(make_settings(tmp_path, push_backend="onesignal", onesignal_api_key="k"))
    configured = build_push(
        make_settings(tmp_path, push_backend="onesignal", onesignal_app_id=APP_ID, onesignal_api_key=API_KEY,
                      onesignal_url="http://127.0.0.1:9/")
    )
    try:
        assert isinstance(configured, OneSignalPush) and configured.url == "http://127.0.0.1:9"
        assert configured.breaker.target == "onesignal"
        assert configured.timeout == 10.0  # the provider_timeout_seconds default
    finally:
        await configured.aclose()
