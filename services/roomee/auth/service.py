"""Business rules of the auth service: accounts, sign-in, tokens, throttling."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import time
import uuid
from collections import OrderedDict
from datetime import timedelta
from typing import Any
from urllib.parse import quote

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerifyMismatchError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from roomee.auth import events
from roomee.auth.repository import LoginFailureRepository, RefreshTokenRepository, SessionRepository, UserRepository
from roomee.kit.auth import SESSION_ENDED, KeyStore, Principal, TokenIssuer, scopes_of
from roomee.kit.clock import as_utc, utcnow
from roomee.kit.errors import BadRequest, Conflict, Forbidden, NotFound, TooManyRequests, Unauthorized
from roomee.kit.http import raise_for_status
from roomee.kit.platform import ServiceContext

# Deterministic user ids per invitation make a retried sign-up land on the same account.
USER_NAMESPACE = uuid.UUID("6f1c2a52-3c1e-4a8e-9d8e-5b8f0c2f7a11")
log = logging.getLogger("roomee.auth")
_hasher = PasswordHasher()
_DUMMY_HASH = _hasher.hash("not-a-real-password")


async def setup(ctx: ServiceContext) -> None:
    """Load the signing keys and let this process verify tokens without a network hop."""
    keystore = KeyStore(ctx.settings)
    ctx.state["keystore"] = keystore
    ctx.state["issuer"] = TokenIssuer(keystore, ctx.settings)

    async def local_jwks() -> dict:
        return keystore.jwks()

    ctx.platform.jwks_loader = local_jwks
    recent = RecentProfiles()
    ctx.state["recent_profiles"] = recent
    ctx.platform.access_changes.listeners.append(recent.forget)


# /users/me's memberships are remembered briefly per email: an app asks for them on every screen, and each
# answer would otherwise cost a call to members. A removed member or changed permissions (an access change)
# forgets them at once; other changes (a new membership, a renamed workspace) show within these seconds.
RECENT_PROFILES_SECONDS = 2.0
RECENT_PROFILES_KEPT = 10_000


class RecentProfiles:
    """The member profiles of recently seen emails, for :meth:`AuthService.me` only (sign-in and refresh
    always ask members, since they put the memberships into a token)."""

    def __init__(self) -> None:
        self._entries: OrderedDict[str, tuple[float, list[dict[str, Any]]]] = OrderedDict()

    def get(self, email: str) -> list[dict[str, Any]] | None:
        entry = self._entries.get(email)
        return entry[1] if entry is not None and entry[0] > time.monotonic() else None

    def put(self, email: str, profiles: list[dict[str, Any]]) -> None:
        self._entries[email] = (time.monotonic() + RECENT_PROFILES_SECONDS, profiles)
        self._entries.move_to_end(email)
        if len(self._entries) > RECENT_PROFILES_KEPT:
            self._entries.popitem(last=False)

    async def forget(self, _changed_members: set[str]) -> None:
        self._entries.clear()


def session_ended() -> Unauthorized:
    return Unauthorized(SESSION_ENDED, code="session_revoked")


def _hash_refresh(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_hasher.hash, password)


async def verify_password(password_hash: str, password: str) -> bool:
    def check() -> bool:
        try:
            return _hasher.verify(password_hash, password)
        except (VerifyMismatchError, InvalidHashError):
            return False

    return await asyncio.to_thread(check)


def _membership(profile: dict[str, Any]) -> dict[str, Any]:
    return {
        "member_id": profile["id"],
        "workspace_id": profile["workspaceId"],
        "workspace_name": profile["workspaceName"],
        "hotel_id": profile["ecosystemId"],
        "role": profile["role"],
        "permissions": profile["permissions"],
    }


def _user_out(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "created_at": as_utc(row["created_at"])}


class AuthService:
    def __init__(self, session: AsyncSession, ctx: ServiceContext) -> None:
        self.session = session
        self.ctx = ctx
        self.settings = ctx.settings
        self.users = UserRepository(session)
        self.refresh_tokens = RefreshTokenRepository(session)
        self.failures = LoginFailureRepository(session)
        self.sessions = SessionRepository(session)
        self.members = ctx.client("members")

    @property
    def issuer(self) -> TokenIssuer:
        return self.ctx.state["issuer"]

    # --- service tokens ---------------------------------------------------------------------

    async def service_token(self, client_id: str, client_secret: str, scope: str | None, ip: str) -> dict[str, Any]:
        """Client credentials: each platform client has its own secret and gets only its own scopes."""
        await self._throttle(ip)
        allowed = scopes_of(client_id)
        expected = self.settings.client_secret_of(client_id or "-")
        valid = hmac.compare_digest(client_secret.encode(), expected.encode())
        if allowed is None or not valid:
            await self._record_failure("client", ip)
            raise Unauthorized("invalid client credentials", code="invalid_client")
        requested = tuple(sorted(set(scope.split()))) if scope else allowed
        refused = sorted(set(requested) - set(allowed))
        if refused:
            raise BadRequest(f"scope not allowed for this client: {' '.join(refused)}", code="invalid_scope")
        return {
            "access_token": self.issuer.service_token(client_id, requested),
            "expires_in": self.settings.service_token_ttl_seconds,
            "scope": " ".join(requested),
        }

    # --- throttling -------------------------------------------------------------------------

    async def _throttle(self, ip: str, email: str | None = None) -> None:
        """429 when this address, or this email from this address, failed too often.

        Nothing keyed by the account alone refuses anyone (OWASP ASVS 2.2.1: a stranger must not lock the
        owner out): past the softer per-email limit, that email is refused only from addresses that already
        failed for it, so a right password from an address that has not failed always gets through.
        """
        window_start = utcnow() - timedelta(seconds=self.settings.login_window_seconds)
        await self._refuse_past(window_start, self.settings.address_max_failures, ip=ip)
        if email is None:
            return
        await self._refuse_past(window_start, self.settings.login_max_failures, email=email, ip=ip)
        everywhere, _ = await self.failures.recent(window_start, email=email)
        if everywhere >= self.settings.login_max_failures_per_email:
            await self._refuse_past(window_start, 1, email=email, ip=ip)

    async def _refuse_past(self, window_start, limit: int, **where: str) -> None:
        count, oldest = await self.failures.recent(window_start, **where)
        if count >= limit:
            retry_after = int((as_utc(oldest) - window_start).total_seconds()) + 1 if oldest else 60
            raise TooManyRequests(
                "too many failed attempts; try again later",
                code="login_throttled",
                headers={"Retry-After": str(max(retry_after, 1))},
            )

    async def _record_failure(self, kind: str, ip: str, email: str = "") -> None:
        # Its own transaction: the failure must be kept although this request rolls back.
        async with self.ctx.db.transaction() as separate:
            await LoginFailureRepository(separate).record(kind, ip, utcnow(), email)

    # --- members service calls --------------------------------------------------------------

    async def _profiles(self, email: str) -> list[dict[str, Any]]:
        response = await self.members.get(
            f"/members/get/with/{quote(email, safe='')}", endpoint="/members/get/with/{email}"
        )
        raise_for_status(response)
        return response.json()

    # --- sessions ---------------------------------------------------------------------------

    async def _open_session(
        self, user: dict[str, Any], profiles: list[dict], workspace_id: str | None, family_id: str | None = None,
        session_id: str | None = None,
    ) -> dict:
        """Tokens for ``user`` in a workspace: of session ``session_id``, or of a new session."""
        if not profiles:
            raise Forbidden("this account has no active membership", code="no_membership")
        chosen = profiles[0]
        if workspace_id is not None:
            chosen = next((p for p in profiles if p["workspaceId"] == workspace_id), None)
            if chosen is None:
                raise Forbidden("you are not a member of this workspace", code="not_a_member")
        refresh = secrets.token_urlsafe(32)
        now = utcnow()
        token_id = str(uuid.uuid4())
        if session_id is None:
            session_id = str(uuid.uuid4())
            await self.sessions.insert({"id": session_id, "user_id": user["id"], "created_at": now})
        elif not await self.sessions.is_live(session_id):
            raise session_ended()
        access = self.issuer.access_token(
            user_id=user["id"],
            member_id=chosen["id"],
            workspace_id=chosen["workspaceId"],
            hotel_id=chosen["ecosystemId"],
            permissions=chosen["permissions"],
            email=user["email"],
            name=f"{chosen['firstName']} {chosen['lastName']}".strip() or user["email"],
            session_id=session_id,
        )
        await self.refresh_tokens.insert(
            {
                "id": token_id,
                "user_id": user["id"],
                "workspace_id": chosen["workspaceId"],
                "token_hash": _hash_refresh(refresh),
                "family_id": family_id or token_id,
                "session_id": session_id,
                "created_at": now,
                "expires_at": now + timedelta(seconds=self.settings.refresh_token_ttl_seconds),
            }
        )
        return {
            "access_token": access,
            "refresh_token": refresh,
            "expires_in": self.settings.access_token_ttl_seconds,
            "user": _user_out(user),
            "member": _membership(chosen),
            "memberships": [_membership(p) for p in profiles],
        }

    async def sign_up(self, data: dict[str, Any], ip: str) -> dict:
        await self._throttle(ip)
        response = await self.members.get(
            f"/members/invitations/{quote(data['token'], safe='')}", endpoint="/members/invitations/{token}"
        )
        if response.status_code in (404, 410):
            await self._record_failure("sign_up", ip)
        raise_for_status(response)
        invitation = response.json()
        email = invitation["email"]
        first_name = data.get("first_name") or invitation["firstName"]
        last_name = data.get("last_name") or invitation["lastName"]
        user = await self.users.by_email(email)
        created = user is None
        if user is not None:
            # Joining another workspace with an existing account: prove it is yours.
            if not await verify_password(user["password_hash"], data["password"]):
                await self._record_failure("sign_up", ip)
                raise Conflict("an account exists for this email; use its password", code="account_exists")
        else:
            user = {
                "id": str(uuid.uuid5(USER_NAMESPACE, invitation["id"])),
                "email": email,
                "password_hash": await hash_password(data["password"]),
                "first_name": first_name,
                "last_name": last_name,
                "created_at": utcnow(),
                "last_login_at": None,
            }
            try:
                async with self.session.begin_nested():
                    await self.users.insert(user)
            except IntegrityError:
                raise Conflict("an account exists for this email", code="account_exists") from None
        accepted = await self.members.post(
            "/members/invitations/accept",
            json={"token": data["token"], "userId": user["id"], "firstName": first_name, "lastName": last_name},
        )
        raise_for_status(accepted)
        body = accepted.json()
        member = body["member"]
        if created:
            await events.user_created(self.session, user=user, member=member)
        await events.member_registered(
            self.session, user=user, member=member, invited_by_member_id=body["invitedByMemberId"]
        )
        profiles = await self._profiles(email)
        return await self._open_session(user, profiles, member["workspaceId"])

    async def sign_in(self, data: dict[str, Any], ip: str) -> dict:
        email = data["email"].strip().lower()
        await self._throttle(ip, email)
        user = await self.users.by_email(email)
        valid = await verify_password(user["password_hash"] if user else _DUMMY_HASH, data["password"])
        if user is None or not valid:
            await self._record_failure("sign_in", ip, email)
            raise Unauthorized("invalid email or password", code="invalid_credentials")
        # Members is asked before the first write: concurrent sign-ins of one account then hold the user's
        # row lock for the two last statements only, not across the call.
        profiles = await self._profiles(email)
        await self.failures.clear(email, ip)
        await self.users.update(user["id"], {"last_login_at": utcnow()})
        return await self._open_session(user, profiles, data.get("workspace_id"))

    async def refresh(self, refresh_token: str, ip: str) -> dict:
        await self._throttle(ip)
        now, token_hash = utcnow(), _hash_refresh(refresh_token)
        live = await self.refresh_tokens.is_live(token_hash, now)
        found = await self.refresh_tokens.revoke_active(token_hash, now) if live else None
        if found is None:
            if not live and await self._of_ended_session(token_hash):
                raise session_ended()
            if not live:
                # A used token presented again was stolen or leaked (RFC 9700 §4.14.2): end its whole family.
                # Its own transaction, kept although this request fails.
                async with self.ctx.db.transaction() as separate:
                    await RefreshTokenRepository(separate).revoke_family_of_used(token_hash, now)
                await self._record_failure("refresh", ip)
            raise Unauthorized("refresh token invalid, used or expired", code="invalid_refresh_token")
        user = await self.users.by_id(found["user_id"])
        profiles = await self._profiles(user["email"])
        active = [p for p in profiles if p["workspaceId"] == found["workspace_id"]]
        return await self._open_session(user, active or profiles, None, family_id=found["family_id"] or found["id"],
                                        session_id=found["session_id"])

    async def _of_ended_session(self, token_hash: str) -> bool:
        """A genuine refresh token whose session ended (not a used token presented again)."""
        token = await self.refresh_tokens.by_hash(token_hash)
        ended = await self.sessions.get(token["session_id"]) if token and token["session_id"] else None
        return ended is not None and ended["revoked_at"] is not None

    async def sign_out(self, refresh_token: str | None, principal: Principal | None) -> None:
        """End the session of the access token and/or of the refresh token, on every service (the feed)."""
        if principal is not None and principal.is_service:
            raise Forbidden("a member token is required")
        ended = {principal.session_id} if principal is not None and principal.session_id else set()
        if refresh_token:
            token = await self.refresh_tokens.by_hash(_hash_refresh(refresh_token))
            if token is not None and token["session_id"]:
                ended.add(token["session_id"])
            elif token is not None:  # a token from before sessions: only itself
                await self.refresh_tokens.revoke_active(_hash_refresh(refresh_token), utcnow())
        await self.end_sessions(sorted(ended), "sign_out")

    async def end_sessions(self, session_ids: list[str], reason: str) -> list[dict]:
        """End sessions now: their refresh tokens are refused here at once, their access tokens and sockets on
        every service within one poll of the feed (``access_changes_poll_seconds``)."""
        now = utcnow()
        ended = await self.sessions.revoke(session_ids, now, reason)
        if ended:
            await self.sessions.forget_revocations_before(now - self._revocations_kept())
            log.info("sessions ended", extra={"reason": reason, "sessions": len(ended)})
        return ended

    def _revocations_kept(self) -> timedelta:
        return timedelta(seconds=self.settings.access_token_ttl_seconds + 60)

    async def session_revocations(self, after: int | None, limit: int) -> dict:
        """The feed: sessions ended within one access-token lifetime (older ones' tokens have expired)."""
        since = utcnow() - self._revocations_kept()
        rows, position = await self.sessions.revocations(after=after or 0, since=since, limit=limit)
        items = [{"session_id": r["session_id"], "user_id": r["user_id"], "revoked_at": as_utc(r["revoked_at"])}
                 for r in rows]
        return {"items": items, "position": position}

    async def switch_workspace(self, principal: Principal, workspace_id: str) -> dict:
        """The same session (sign-out still ends it), in another workspace."""
        user = await self._user_of(principal)
        return await self._open_session(user, await self._profiles(user["email"]), workspace_id,
                                        session_id=principal.session_id)

    async def me(self, principal: Principal) -> dict:
        user = await self._user_of(principal)
        recent: RecentProfiles = self.ctx.state["recent_profiles"]
        profiles = recent.get(user["email"]) or []
        current = next((p for p in profiles if p["id"] == principal.member_id), None)
        if current is None:  # not remembered, or remembered before this membership began
            profiles = await self._profiles(user["email"])
            recent.put(user["email"], profiles)
            current = next((p for p in profiles if p["id"] == principal.member_id), None)
        if current is None:
            raise Forbidden("your membership of this workspace ended", code="no_membership")
        return {"user": _user_out(user), "member": _membership(current), "memberships": [_membership(p) for p in profiles]}

    async def _user_of(self, principal: Principal) -> dict:
        if principal.is_service:
            raise Forbidden("a member token is required")
        user = await self.users.by_id(principal.subject)
        if user is None:
            raise NotFound("user not found")
        return user
