import re
from datetime import datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from roomee.kit.events import Envelope, build_envelope


def test_envelope_is_the_seed_shape():
    envelope = build_envelope(
        "page.created",
        workspace_id="abc123",
        hotel_id="hotel456",
        workspace_name="Mon Workspace",
        payload={"id": "page789", "title": "Nouvelle politique RH", "parent": {"id": "feed123"}},
        actor={"id": "member123", "name": "John Doe", "type": "member"},
        receiver_ids=["member456", "member789"],
        event_id="5f0c1a9e-0000-4000-8000-000000000001",
        timestamp=datetime(2025, 10, 31, 12, 0, 0, 123456, tzinfo=timezone.utc),
    )
    assert envelope == {
        "id": "5f0c1a9e-0000-4000-8000-000000000001",
        "type": "page.created",
        "workspaceId": "abc123",
        "ecosystemId": "hotel456",
        "workspaceName": "Mon Workspace",
        "payload": {"id": "page789", "title": "Nouvelle politique RH", "parent": {"id": "feed123"}},
        "channels": ["push", "socket"],
        "metadata": {
            "timestamp": "2025-10-31T12:00:00.123Z",
            "actor": {"id": "member123", "name": "John Doe", "type": "member"},
            "receiverIds": ["member456", "member789"],
        },
    }
    assert list(envelope) == ["id", "type", "workspaceId", "ecosystemId", "workspaceName", "payload", "channels", "metadata"]


def test_envelope_defaults():
    before = datetime.now(timezone.utc)
    envelope = build_envelope("hotel.created", workspace_id=None, payload={"hotelId": 1}, channels=("socket",))
    assert re.fullmatch(r"[0-9a-f-]{36}", envelope["id"])
    assert envelope["channels"] == ["socket"]
    assert envelope["metadata"]["actor"] is None
    assert envelope["metadata"]["receiverIds"] == []
    stamp = envelope["metadata"]["timestamp"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", stamp)
    parsed = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    assert before - timedelta(seconds=1) <= parsed <= datetime.now(timezone.utc)


def test_naive_and_offset_timestamps_become_utc():
    naive = build_envelope("x", workspace_id="w", payload={}, timestamp=datetime(2025, 1, 1, 8, 30))
    assert naive["metadata"]["timestamp"] == "2025-01-01T08:30:00.000Z"
    offset = build_envelope(
        "x", workspace_id="w", payload={}, timestamp=datetime(2025, 1, 1, 10, 30, tzinfo=timezone(timedelta(hours=2)))
    )
    assert offset["metadata"]["timestamp"] == "2025-01-01T08:30:00.000Z"


def test_envelope_model_round_trip():
    envelope = build_envelope(
        "comment.created",
        workspace_id="w1",
        payload={"pageId": "p1"},
        actor={"id": 42, "name": "Ann", "type": "member"},
        receiver_ids=[7, "m8"],
    )
    model = Envelope.model_validate(envelope)
    assert model.workspace_id == "w1"
    assert model.metadata.actor.id == "42"
    assert model.metadata.receiver_ids == ["7", "m8"]
    assert model.model_dump(by_alias=True, mode="json") == envelope


def test_envelope_model_rejects_missing_id_or_type():
    with pytest.raises(ValidationError):
        Envelope.model_validate({"type": "page.created"})
    with pytest.raises(ValidationError):
        Envelope.model_validate({"id": "x"})
