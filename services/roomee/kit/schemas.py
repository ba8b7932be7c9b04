"""Wire conventions shared by every service: camelCase JSON and cursor pages."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import datetime
from functools import lru_cache
from types import UnionType
from typing import Annotated, Any, Generic, TypeVar, Union, get_args, get_origin
from zoneinfo import available_timezones

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError
from pydantic.alias_generators import to_camel

from roomee.kit.clock import as_utc
from roomee.kit.errors import Unprocessable

T = TypeVar("T")


def _is_bool_field(annotation: Any) -> bool:
    """``bool`` or ``bool | None``."""
    return annotation is bool or (get_origin(annotation) in (Union, UnionType) and set(get_args(annotation)) == {bool, type(None)})


def _strict_boolean(value: Any) -> Any:
    if value is None or isinstance(value, bool):
        return value
    raise PydanticCustomError("bool_type", "Input should be a valid boolean (true or false)")


class CamelModel(BaseModel):
    """camelCase on the wire; a boolean is ``true`` or ``false`` only (not ``0``, ``1``, ``"yes"``,
    ``"no"``, which pydantic's lax mode would take), as the documents' ``boolean`` says.

    The check is a before-validator of the boolean fields only, added when a model is defined: one on
    every field cost a Python call per field of every model validated (a page of 20 articles: 400 calls,
    most of the response's validation time)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, from_attributes=True)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        changed = False
        for field in cls.model_fields.values():
            if _is_bool_field(field.annotation) and not any(
                    getattr(m, "func", None) is _strict_boolean for m in field.metadata):
                field.metadata.append(BeforeValidator(_strict_boolean))
                changed = True
        if changed:
            cls.model_rebuild(force=True)


@lru_cache(maxsize=1)
def _time_zones() -> frozenset[str]:
    return frozenset(available_timezones())


def is_time_zone(name: str) -> bool:
    """An IANA time zone name known to this process (tzdata)."""
    return name in _time_zones()


def _known_time_zone(name: str) -> str:
    if not is_time_zone(name):
        raise ValueError(f"unknown time zone {name!r}: use an IANA name such as Europe/Paris")
    return name


TimeZone = Annotated[
    str,
    Field(max_length=64, description="IANA time zone name.", examples=["Europe/Paris"]),
    AfterValidator(_known_time_zone),
]


class Page(CamelModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = None


# A cursor is "<version>.<payload>.<mac>": the version lets the format change without reading old
# cursors wrongly, and the MAC makes every cursor the platform did not produce answer 422.
CURSOR_VERSION = "c1"
_MAC_BYTES = 16
_cursor_key: bytes | None = None


def use_cursor_key(secret: str) -> None:
    """Sign cursors with ``secret`` in this process (every replica of a service needs the same one)."""
    global _cursor_key
    _cursor_key = hashlib.sha256(b"roomee-cursor:" + secret.encode()).digest()


def _key() -> bytes:
    if _cursor_key is None:
        from roomee.kit.settings import get_settings

        use_cursor_key(get_settings().resolved_cursor_secret())
    assert _cursor_key is not None
    return _cursor_key


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(signed: str) -> str:
    return _b64(hmac.new(_key(), signed.encode(), hashlib.sha256).digest()[:_MAC_BYTES])


def encode_cursor(*values: Any) -> str:
    payload = _b64(json.dumps(values, default=str, separators=(",", ":")).encode())
    signed = f"{CURSOR_VERSION}.{payload}"
    return f"{signed}.{_mac(signed)}"


def invalid_cursor() -> Unprocessable:
    return Unprocessable("invalid cursor: pass back a nextCursor this list returned", code="invalid_cursor")


def decode_cursor(cursor: str | None) -> list[Any] | None:
    """The values of a cursor :func:`encode_cursor` produced; 422 ``invalid_cursor`` for anything else."""
    if not cursor:
        return None
    version, _, rest = cursor.partition(".")
    payload, _, mac = rest.partition(".")
    if version != CURSOR_VERSION or not payload or not hmac.compare_digest(mac.encode(), _mac(f"{version}.{payload}").encode()):
        raise invalid_cursor()
    try:
        values = json.loads(_unb64(payload))
    except ValueError:
        raise invalid_cursor() from None
    if not isinstance(values, list):
        raise invalid_cursor()
    return values


def decode_time_cursor(cursor: str | None) -> tuple[datetime, str] | None:
    """A ``(timestamp, id)`` position of a list ordered by time then id; 422 ``invalid_cursor`` otherwise."""
    values = decode_cursor(cursor)
    if values is None:
        return None
    if len(values) != 2 or not all(isinstance(v, str) for v in values):
        raise invalid_cursor()
    try:
        return as_utc(datetime.fromisoformat(values[0])), values[1]
    except ValueError:
        raise invalid_cursor() from None
