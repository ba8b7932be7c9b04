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


class LoginFailureRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def record(self, email: str, ip: str, when: datetime) -> None:
        await self.session.execute(sa.insert(login_failure).values(email=email, ip=ip, at=when))

    async def recent(self, email: str, since: datetime) -> tuple[int, datetime | None]:
        result = await self.session.execute(
            sa.select(sa.func.count(), sa.func.min(login_failure.c.at)).where(
                login_failure.c.email == email, login_failure.c.at > since
            )
        )
        count, oldest = result.one()
        return int(count), oldest

    async def clear(self, email: str) -> None:
        await self.session.execute(sa.delete(login_failure).where(login_failure.c.email == email))
