"""Business rules of password reset (by email, a single-use link) and password change.

Both end sessions through the same feed as sign-out (``AuthService.end_sessions``): a reset every
session of the account, a change every session but the caller's, which gets fresh tokens.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from roomee.auth import events
from roomee.auth.repository import PasswordResetRepository
from roomee.auth.service import AuthService, hash_password, verify_password
from roomee.kit.auth import Principal
from roomee.kit.clock import as_utc, utcnow
from roomee.kit.errors import Forbidden, Gone, NotFound, RoomeeError, TooManyRequests
from roomee.kit.events.envelope import format_timestamp

RESET_LINK_SECONDS = 30 * 60
# POST /users/password/forgot: requests per window from one address, and for one email from one address
# (nothing keyed by the email alone: a stranger cannot stop the owner from asking).
RESET_WINDOW_SECONDS = 15 * 60
RESET_MAX_PER_ADDRESS = 20
RESET_MAX_PER_EMAIL_AND_ADDRESS = 3
# The answer to every request that is not throttled, whether the email has an account or not.
FORGOT_ANSWER = {
    "status": "accepted",
    "detail": "if an account uses this email, a link to choose a new password was sent to it; it works once, "
              "within 30 minutes",
}


def _hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class PasswordService(AuthService):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.resets = PasswordResetRepository(self.session)

    # --- reset ------------------------------------------------------------------------------

    async def forgot(self, email: str, ip: str) -> dict[str, str]:
        """Send a reset link if the email has an account; answer the same either way, after the same work
        (the same queries, the members call, a token made and hashed)."""
        email = email.strip().lower()
        now = utcnow()
        await self._throttle_forgot(email, ip, now)
        await self.resets.forget_requests_before(ip, now - timedelta(seconds=RESET_WINDOW_SECONDS))
        await self.resets.record_request(email, ip, now)
        user = await self.users.by_email(email)
        profile = await self._first_profile(email)
        token = secrets.token_urlsafe(32)
        token_hash = _hash_token(token)
        if user is not None:
            expires_at = now + timedelta(seconds=RESET_LINK_SECONDS)
            await self.resets.insert({"id": str(uuid.uuid4()), "user_id": user["id"], "token_hash": token_hash,
                                      "created_at": now, "expires_at": expires_at})
            link = f"{self.settings.reset_password_link_base}?{urlencode({'token': token})}"
            await events.password_reset(self.session, user=user, profile=profile, link=link,
                                        expires_at=format_timestamp(expires_at))
        return FORGOT_ANSWER

    async def _throttle_forgot(self, email: str, ip: str, now: datetime) -> None:
        since = now - timedelta(seconds=RESET_WINDOW_SECONDS)
        for where, limit in ((dict(ip=ip), RESET_MAX_PER_ADDRESS),
                             (dict(ip=ip, email=email), RESET_MAX_PER_EMAIL_AND_ADDRESS)):
            count, oldest = await self.resets.requests_since(since, **where)
            if count >= limit:
                retry_after = int((as_utc(oldest) - since).total_seconds()) + 1 if oldest else RESET_WINDOW_SECONDS
                raise TooManyRequests("too many password reset requests; try again later", code="reset_throttled",
                                      headers={"Retry-After": str(max(retry_after, 1))})

    async def _first_profile(self, email: str) -> dict[str, Any] | None:
        """The account's first membership (for the email's locale), or None: members' trouble never changes
        the answer (that would tell which emails have an account)."""
        try:
            profiles = await self._profiles(email)
        except RoomeeError:
            return None
        return profiles[0] if profiles else None

    async def reset(self, token: str, password: str, ip: str) -> None:
        """Set a new password from a reset link (single use); every session of the account ends."""
        await self._throttle(ip)
        now, token_hash = utcnow(), _hash_token(token)
        # Read first: a failure is recorded in a transaction of its own, before this one writes anything.
        known = await self.resets.by_hash(token_hash)
        if known is None:
            await self._record_failure("password_reset", ip)
            raise NotFound("this password reset link is not valid; ask for a new one", code="invalid_reset_token")
        if known["used_at"] is None and as_utc(known["expires_at"]) <= now:
            raise Gone("this password reset link expired (links work for 30 minutes); ask for a new one",
                       code="reset_token_expired")
        link = await self.resets.use(token_hash, now) if known["used_at"] is None else None
        if link is None:  # used before, or by a request racing with this one
            raise Gone("this password reset link was used already (or a newer one was); ask for a new one",
                       code="reset_token_used")
        user = await self.users.by_id(link["user_id"])
        await self._set_password(user, password, keep_session=None, how="reset", now=now,
                                 profile=await self._first_profile(user["email"]))

    # --- change -----------------------------------------------------------------------------

    async def change(self, principal: Principal, current: str, new: str, ip: str) -> dict:
        """Change the caller's password: the other sessions end, this one gets fresh tokens."""
        user = await self._user_of(principal)
        await self._throttle(ip, user["email"])
        if not await verify_password(user["password_hash"], current):
            # A wrong current password is a password guess: it counts where sign-in guesses count.
            await self._record_failure("sign_in", ip, user["email"])
            raise Forbidden("the current password is not right", code="invalid_current_password")
        profiles = await self._profiles(user["email"])
        current_profile = next((p for p in profiles if p["id"] == principal.member_id), None)
        await self._set_password(user, new, keep_session=principal.session_id, how="change", now=utcnow(),
                                 profile=current_profile or (profiles[0] if profiles else None))
        return await self._open_session(user, profiles, principal.workspace_id, session_id=principal.session_id)

    async def _set_password(self, user: dict[str, Any], password: str, *, keep_session: str | None, how: str,
                            now: datetime, profile: dict[str, Any] | None) -> None:
        """The new password; every session but ``keep_session`` ends, every refresh token and reset link dies."""
        await self.users.update(user["id"], {"password_hash": await hash_password(password)})
        ending = [s for s in await self.sessions.live_of_user(user["id"]) if s != keep_session]
        await self.end_sessions(ending, f"password_{how}")
        await self.refresh_tokens.revoke_of_user(user["id"], now)
        await self.resets.void_others(user["id"], now)
        await events.password_changed(self.session, user=user, profile=profile, how=how,
                                      changed_at=format_timestamp(now))
