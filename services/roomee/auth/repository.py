"""All SQL of the auth service."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from roomee.auth.models import (
    login_failure,
    password_reset,
    password_reset_request,
    refresh_token,
    revocation_counter,
    session_revocation,
    user,
    user_session,
)

# Statements built once with bound parameters (a hot read compiles each once: roomee.kit.hot).
_USER_BY_ID = sa.select(user).where(user.c.id == sa.bindparam("user_id"))


class UserRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def by_email(self, email: str) -> dict | None:
        row = (await self.session.execute(sa.select(user).where(user.c.email == email))).mappings().first()
        return dict(row) if row else None

    async def by_id(self, user_id: str) -> dict | None:
        row = (await self.session.execute(_USER_BY_ID, {"user_id": user_id})).mappings().first()
        return dict(row) if row else None

    async def insert(self, values: dict[str, Any]) -> None:
        await self.session.execute(sa.insert(user).values(**values))

    async def update(self, user_id: str, values: dict[str, Any]) -> None:
        await self.session.execute(sa.update(user).where(user.c.id == user_id).values(**values))


class RefreshTokenRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def insert(self, values: dict[str, Any]) -> None:
        await self.session.execute(sa.insert(refresh_token).values(**values))

    async def is_live(self, token_hash: str, when: datetime) -> bool:
        found = await self.session.execute(
            sa.select(refresh_token.c.id).where(
                refresh_token.c.token_hash == token_hash,
                refresh_token.c.revoked_at.is_(None),
                refresh_token.c.expires_at > when,
            )
        )
        return found.first() is not None

    async def revoke_active(self, token_hash: str, when: datetime) -> dict | None:
        """Revoke a live token and return it; None if unknown, revoked or expired (single use)."""
        row = await self.session.execute(
            sa.update(refresh_token)
            .where(
                refresh_token.c.token_hash == token_hash,
                refresh_token.c.revoked_at.is_(None),
                refresh_token.c.expires_at > when,
            )
            .values(revoked_at=when)
            .returning(refresh_token)
        )
        found = row.mappings().first()
        return dict(found) if found else None

    async def revoke_family_of_used(self, token_hash: str, when: datetime) -> int:
        """A revoked token presented again: revoke every live token of its family; return how many."""
        used = (
            await self.session.execute(
                sa.select(refresh_token.c.id, refresh_token.c.family_id).where(
                    refresh_token.c.token_hash == token_hash, refresh_token.c.revoked_at.is_not(None)
                )
            )
        ).first()
        if used is None:
            return 0
        family = used.family_id or used.id
        result = await self.session.execute(
            sa.update(refresh_token)
            .where(
                sa.or_(refresh_token.c.family_id == family, refresh_token.c.id == family),
                refresh_token.c.revoked_at.is_(None),
            )
            .values(revoked_at=when)
        )
        return result.rowcount or 0

    async def revoke_of_user(self, user_id: str, when: datetime) -> None:
        """Every live refresh token of a user (a new password: those from before sessions too)."""
        await self.session.execute(
            sa.update(refresh_token)
            .where(refresh_token.c.user_id == user_id, refresh_token.c.revoked_at.is_(None))
            .values(revoked_at=when)
        )

    async def by_hash(self, token_hash: str) -> dict | None:
        """A refresh token, live or not."""
        row = (await self.session.execute(sa.select(refresh_token).where(refresh_token.c.token_hash == token_hash)))
        found = row.mappings().first()
        return dict(found) if found else None


class SessionRepository:
    """Sessions, and the feed of ended ones every process follows."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def insert(self, values: dict[str, Any]) -> None:
        await self.session.execute(sa.insert(user_session).values(**values))

    async def get(self, session_id: str) -> dict | None:
        row = (await self.session.execute(sa.select(user_session).where(user_session.c.id == session_id)))
        found = row.mappings().first()
        return dict(found) if found else None

    async def is_live(self, session_id: str) -> bool:
        """Whether the session goes on; its row stays locked until commit, so that an end racing with
        a refresh either sees the refresh's new token or makes the refresh fail."""
        row = await self.session.execute(
            sa.select(user_session.c.revoked_at).where(user_session.c.id == session_id).with_for_update()
        )
        found = row.first()
        return found is not None and found.revoked_at is None

    async def live_of_user(self, user_id: str) -> list[str]:
        rows = await self.session.execute(
            sa.select(user_session.c.id).where(user_session.c.user_id == user_id, user_session.c.revoked_at.is_(None))
        )
        return list(rows.scalars())

    async def revoke(self, session_ids: list[str], when: datetime, reason: str) -> list[dict]:
        """End these sessions (those not ended yet): their refresh tokens die, and each gets a feed position."""
        if not session_ids:
            return []
        rows = await self.session.execute(
            sa.update(user_session)
            .where(user_session.c.id.in_(session_ids), user_session.c.revoked_at.is_(None))
            .values(revoked_at=when, revoke_reason=reason)
            .returning(user_session.c.id, user_session.c.user_id)
        )
        ended = [dict(r) for r in rows.mappings()]
        await self.session.execute(
            sa.update(refresh_token)
            .where(refresh_token.c.session_id.in_(session_ids), refresh_token.c.revoked_at.is_(None))
            .values(revoked_at=when)
        )
        for row in sorted(ended, key=lambda r: r["id"]):
            await self.session.execute(
                sa.insert(session_revocation).values(
                    position=await self._next_position(), session_id=row["id"], user_id=row["user_id"], revoked_at=when
                )
            )
        return ended

    async def forget_revocations_before(self, when: datetime) -> None:
        """Feed rows older than an access token's lifetime matter no more (their tokens have expired)."""
        await self.session.execute(sa.delete(session_revocation).where(session_revocation.c.revoked_at < when))

    async def _next_position(self) -> int:
        result = await self.session.execute(
            sa.update(revocation_counter)
            .where(revocation_counter.c.name == "session")
            .values(value=revocation_counter.c.value + 1)
            .returning(revocation_counter.c.value)
        )
        return int(result.scalar_one())

    async def revocations(self, *, after: int, since: datetime, limit: int) -> tuple[list[dict], int]:
        """Sessions ended after feed position ``after`` and not before ``since``; and the position reached."""
        latest = (await self.session.execute(sa.select(sa.func.max(session_revocation.c.position)))).scalar_one() or 0
        rows = await self.session.execute(
            sa.select(session_revocation)
            .where(session_revocation.c.position > after, session_revocation.c.position <= latest,
                   session_revocation.c.revoked_at > since)
            .order_by(session_revocation.c.position)
            .limit(limit)
        )
        found = [dict(r) for r in rows.mappings()]
        return found, found[-1]["position"] if len(found) == limit else max(latest, after)


class PasswordResetRepository:
    """Reset links (single use, expiring) and the requests their throttles count."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def insert(self, values: dict[str, Any]) -> None:
        await self.session.execute(sa.insert(password_reset).values(**values))

    async def use(self, token_hash: str, when: datetime) -> dict | None:
        """Mark a live link used and return it; None if unknown, used or expired."""
        row = await self.session.execute(
            sa.update(password_reset)
            .where(password_reset.c.token_hash == token_hash, password_reset.c.used_at.is_(None),
                   password_reset.c.expires_at > when)
            .values(used_at=when)
            .returning(password_reset)
        )
        found = row.mappings().first()
        return dict(found) if found else None

    async def by_hash(self, token_hash: str) -> dict | None:
        row = await self.session.execute(sa.select(password_reset).where(password_reset.c.token_hash == token_hash))
        found = row.mappings().first()
        return dict(found) if found else None

    async def void_others(self, user_id: str, when: datetime) -> None:
        """A reset done: the user's other unused links stop working."""
        await self.session.execute(
            sa.update(password_reset)
            .where(password_reset.c.user_id == user_id, password_reset.c.used_at.is_(None))
            .values(used_at=when)
        )

    async def record_request(self, email: str, ip: str, when: datetime) -> None:
        await self.session.execute(sa.insert(password_reset_request).values(email=email, ip=ip, at=when))

    async def requests_since(self, since: datetime, *, ip: str, email: str | None = None) -> tuple[int, datetime | None]:
        """How many requests from ``ip`` (for ``email`` when given) since ``since``, and the oldest."""
        conditions = [password_reset_request.c.at > since, password_reset_request.c.ip == ip]
        if email is not None:
            conditions.append(password_reset_request.c.email == email)
        result = await self.session.execute(
            sa.select(sa.func.count(), sa.func.min(password_reset_request.c.at)).where(*conditions)
        )
        count, oldest = result.one()
        return int(count), oldest

    async def forget_requests_before(self, ip: str, when: datetime) -> None:
        """Requests of ``ip`` older than a throttle window count no more: gone (the table stays small)."""
        await self.session.execute(
            sa.delete(password_reset_request).where(password_reset_request.c.ip == ip, password_reset_request.c.at < when)
        )


class LoginFailureRepository:
    """Failed attempts (sign-in, sign-up, refresh, client credentials) that throttles count."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def record(self, kind: str, ip: str, when: datetime, email: str = "") -> None:
        await self.session.execute(sa.insert(login_failure).values(kind=kind, email=email, ip=ip, at=when))

    async def recent(self, since: datetime, *, email: str | None = None, ip: str | None = None) -> tuple[int, datetime | None]:
        """How many failures since ``since`` (of an email's sign-ins, an address, or both), and the oldest."""
        conditions = [login_failure.c.at > since]
        if email is not None:
            conditions += [login_failure.c.email == email, login_failure.c.kind == "sign_in"]
        if ip is not None:
            conditions.append(login_failure.c.ip == ip)
        result = await self.session.execute(
            sa.select(sa.func.count(), sa.func.min(login_failure.c.at)).where(*conditions)
        )
        count, oldest = result.one()
        return int(count), oldest

    async def clear(self, email: str, ip: str) -> None:
        """A successful sign-in forgets that address's failures for the email, not other addresses'."""
        await self.session.execute(
            sa.delete(login_failure).where(login_failure.c.email == email, login_failure.c.ip == ip)
        )
