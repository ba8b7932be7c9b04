"""One line for a person, not a traceback, for the failures a command can expect: a peer that does
not answer, a peer that answers an error, settings that do not parse. Exit codes (README):
1 the platform answered an error, 2 bad usage or settings, 3 a peer could not be reached."""

from __future__ import annotations

import httpx
from pydantic import ValidationError

from roomee import targets

FAILED, BAD_SETTINGS, UNREACHABLE = 1, 2, 3


def answer_error(response: httpx.Response) -> str:
    """``POST <url> answered 500 internal_error: <detail>``: the status and the service's error code."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "error" in body:
        detail = body.get("detail")
        reason = f"{body['error']}: {detail}" if isinstance(detail, str) else str(body["error"])
    else:
        reason = " ".join(response.text.split())[:200] or response.reason_phrase
    return f"{response.request.method} {response.request.url} answered {response.status_code} {reason}"


def _setting_for(url: str) -> str:
    """The setting that decides where ``url`` goes: a service's own URL setting when set, else the public URL."""
    try:
        from roomee.kit.settings import Settings

        settings = Settings()
    except ValidationError:
        return "ROOMEE_PUBLIC_URL"
    for name in targets.TARGETS:
        own = getattr(settings, f"{name}_url", None)
        if own and url.startswith(own.rstrip("/")):
            return f"ROOMEE_{name.upper()}_URL"
    if settings.public_url is None:
        return f"ROOMEE_PUBLIC_URL (not set: {settings.base_url} is the default)"
    return "ROOMEE_PUBLIC_URL"


def explain(exc: BaseException) -> tuple[int, str] | None:
    """``(exit code, one line)`` for an expected failure; ``None`` for a bug (its traceback is wanted)."""
    if isinstance(exc, httpx.HTTPStatusError):
        return FAILED, answer_error(exc.response)
    if isinstance(exc, httpx.TransportError):
        try:
            url = str(exc.request.url)
        except RuntimeError:  # no request attached
            return UNREACHABLE, f"could not reach the platform ({type(exc).__name__}: {exc})"
        reason = str(exc) or type(exc).__name__
        return UNREACHABLE, (f"could not reach {url} ({reason}): is the platform running there? "
                             f"Set {_setting_for(url)} to where it runs")
    if isinstance(exc, ValidationError) and exc.title == "Settings":
        problems = "; ".join(f"ROOMEE_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors())
        return BAD_SETTINGS, f"invalid settings: {problems}"
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return UNREACHABLE, f"could not connect ({type(exc).__name__}: {exc}); check the database and broker URLs"
    return None
