"""All SQL of the auth service."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from roomee.auth.models import login_failure, refresh_token, user


class UserRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def by_email(self, email: str) -> dict | None:
        row = (await self.session.execute(sa.select(user).where(user.c.email == email))).mappings().first()
        return dict(row) if row else None

    async def by_id(self, user_id: str) -> dict | None:
        row = (await self.session.execute(sa.select(user).where(user.c.id == user_id))).mappings().first()
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
