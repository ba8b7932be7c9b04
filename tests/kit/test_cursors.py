"""The one cursor codec: what it produced reads back; anything else answers 422 ``invalid_cursor``."""

from __future__ import annotations

import base64
import json

import pytest

from roomee.kit.errors import Unprocessable
from roomee.kit.schemas import decode_cursor, encode_cursor, use_cursor_key


def _unsigned(values) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


@pytest.fixture(autouse=True)
def _key():
    use_cursor_key("test-cursor-key")


def test_a_cursor_reads_back_its_values():
    cursor = encode_cursor("2026-01-01T00:00:00+00:00", "abc", 42)
    assert decode_cursor(cursor) == ["2026-01-01T00:00:00+00:00", "abc", 42]
    assert decode_cursor(None) is None and decode_cursor("") is None


@pytest.mark.parametrize(
    "forged",
    [
        "WyJ4IiwgInkiXQ",  # the unsigned base64 JSON the platform used to accept
        _unsigned([10**400, "x"]),
        "garbage!",
        "c1.",
        "c1..",
        "c1.%%%.%%%",
        "c1.é.é",
        "c9." + _unsigned(["x", "y"]) + ".AAAA",
    ],
)
def test_anything_the_platform_did_not_produce_is_refused(forged):
    with pytest.raises(Unprocessable) as refused:
        decode_cursor(forged)
    assert refused.value.code == "invalid_cursor" and refused.value.status_code == 422


def test_a_tampered_payload_or_a_cursor_of_another_key_is_refused():
    version, payload, mac = encode_cursor("a", "b").split(".")
    tampered = f"{version}.{_unsigned(['a', 'c'])}.{mac}"
    with pytest.raises(Unprocessable):
        decode_cursor(tampered)
    use_cursor_key("another-key")
    with pytest.raises(Unprocessable):
        decode_cursor(f"{version}.{payload}.{mac}")
