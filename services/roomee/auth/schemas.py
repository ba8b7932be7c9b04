"""Request and response bodies of the auth service (camelCase on the wire)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, EmailStr, Field

from roomee.kit.schemas import CamelModel


# What a new password must be, at sign-up, reset and change alike.
NewPassword = Annotated[str, Field(min_length=8, max_length=256, description="At least 8 characters.")]


class SignUpRequest(CamelModel):
    token: str = Field(
        min_length=10, max_length=200, pattern=r"^[A-Za-z0-9_-]+$",
        description="The invitation token from the sign-up link (URL-safe base64).",
    )
    password: NewPassword
    first_name: str | None = Field(default=None, max_length=100)
    last_name: str | None = Field(default=None, max_length=100)


class SignInRequest(CamelModel):
    email: EmailStr
    password: str = Field(min_length=1, max_length=256)
    workspace_id: str | None = Field(default=None, description="Workspace to act in; default the first one.")


class RefreshRequest(CamelModel):
    refresh_token: str = Field(min_length=10, max_length=200)


class SignOutRequest(CamelModel):
    refresh_token: str | None = Field(
        default=None, min_length=10, max_length=200,
        description="The session's refresh token; optional with an `Authorization: Bearer` access token.",
    )


class ForgotPasswordRequest(CamelModel):
    email: EmailStr


class ForgotPasswordAccepted(BaseModel):
    """The same answer whether the email has an account or not."""

    status: str = "accepted"
    detail: str


class ResetPasswordRequest(CamelModel):
    token: str = Field(
        min_length=10, max_length=200, pattern=r"^[A-Za-z0-9_-]+$",
        description="The `token` of the reset link (URL-safe base64).",
    )
    password: NewPassword


class ChangePasswordRequest(CamelModel):
    current_password: str = Field(min_length=1, max_length=256)
    new_password: NewPassword


class SessionRevocation(CamelModel):
    session_id: str
    user_id: str
    revoked_at: datetime


class SessionRevocations(CamelModel):
    items: list[SessionRevocation]
    position: int = Field(description="Pass it as `after` in the next poll.")


class SwitchWorkspaceRequest(CamelModel):
    workspace_id: str = Field(min_length=1, max_length=36)


class UserOut(CamelModel):
    id: str
    email: str
    first_name: str
    last_name: str
    created_at: datetime


class Membership(CamelModel):
    member_id: str
    workspace_id: str
    workspace_name: str
    hotel_id: str = Field(alias="ecosystemId")  # the seed's wire name for the hotel
    role: str
    permissions: list[str]


class Session(CamelModel):
    access_token: str
    refresh_token: str
    token_type: str = "Bearer"
    expires_in: int
    user: UserOut
    member: Membership
    memberships: list[Membership]


class Me(CamelModel):
    user: UserOut
    member: Membership
    memberships: list[Membership]


class ServiceToken(BaseModel):
    """OAuth 2 client-credentials answer (snake_case, as RFC 6749 spells it)."""

    access_token: str
    token_type: str = "Bearer"
    expires_in: int
    scope: str = Field(description="The granted scopes, space-separated.")
