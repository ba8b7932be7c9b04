"""HTTP routes of the auth service (api-authentication)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Form, Query, Request, Response
from fastapi.responses import HTMLResponse
from sqlalchemy.ext.asyncio import AsyncSession

from roomee.auth import pages, schemas
from roomee.auth.passwords import PasswordService
from roomee.auth.service import AuthService
from roomee.kit.auth import CurrentMember, OptionalPrincipal, Principal, require_service_scope
from roomee.kit.deps import context_of, session_for
from roomee.kit.hot import hot_read
from roomee.kit.html import html_responses
from roomee.kit.platform import ServiceContext
from roomee.kit.errors import BadRequest, Unauthorized, error_responses

router = APIRouter(tags=["auth"])

Session = Annotated[AsyncSession, Depends(session_for("auth"), scope="function")]
Context = Annotated[ServiceContext, Depends(context_of("auth"))]


async def _service(session: Session, ctx: Context) -> AuthService:
    return AuthService(session, ctx)


Auth = Annotated[AuthService, Depends(_service)]


async def _passwords(session: Session, ctx: Context) -> PasswordService:
    return PasswordService(session, ctx)


Passwords = Annotated[PasswordService, Depends(_passwords)]


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


@router.get("/.well-known/jwks.json")
async def jwks(ctx: Context) -> dict:
    """The public keys that verify the platform's tokens (JWKS, rotated by `kid`)."""
    return ctx.state["keystore"].jwks()


@router.post("/oauth/token", responses=error_responses(400, 401, 429), response_model=schemas.ServiceToken)
async def service_token(
    service: Auth,
    grant_type: Annotated[str, Form()],
    client_id: Annotated[str, Form()],
    client_secret: Annotated[str, Form()],
    request: Request,
    scope: Annotated[str | None, Form(description="Scopes wanted, space-separated; default all of the client's.")] = None,
):
    """OAuth 2 client credentials: a platform service trades its own client secret for a service token.

    The token's `scope` claim holds only the scopes this client may have (`roomee.kit.auth.SERVICE_SCOPES`);
    each service-only route checks its scope. Unknown client or wrong secret: 401 `invalid_client`;
    a scope the client may not have: 400 `invalid_scope`.
    """
    if grant_type != "client_credentials":
        raise BadRequest("only grant_type=client_credentials is supported", code="unsupported_grant_type")
    return await service.service_token(client_id, client_secret, scope, client_address(request))


@router.get(
    "/signup", response_class=HTMLResponse,
    responses={**html_responses({200: "The sign-up form (HTML).",
                                 404: "The link carries no well-formed token (an HTML page)."}),
               307: {"description": "To `ROOMEE_SIGNUP_URL` with the same `token`, when it is set."}},
)
async def signup_page(ctx: Context, token: str | None = None) -> Response:
    """Where invitation links point when `ROOMEE_SIGNUP_URL` is unset: a minimal built-in sign-up form
    (first name, last name, password) that posts the link's `token` to `POST /users/signUp`. With
    `ROOMEE_SIGNUP_URL` set, a 307 redirect there (links sent before it was set keep working)."""
    return pages.signup_answer(ctx.settings, token)


@router.get(
    "/reset-password", response_class=HTMLResponse,
    responses={**html_responses({200: "The new-password form (HTML).",
                                 404: "The link carries no well-formed token (an HTML page)."}),
               307: {"description": "To `ROOMEE_RESET_PASSWORD_URL` with the same `token`, when it is set."}},
)
async def reset_password_page(ctx: Context, token: str | None = None) -> Response:
    """Where password-reset links point when `ROOMEE_RESET_PASSWORD_URL` is unset: a minimal built-in form
    (the new password, twice) that posts the link's `token` to `POST /users/password/reset`. With
    `ROOMEE_RESET_PASSWORD_URL` set, a 307 redirect there."""
    return pages.reset_password_answer(ctx.settings, token)


@router.post("/users/signUp", responses=error_responses(404, 409, 410, 429, 503), status_code=201, response_model=schemas.Session)
async def sign_up(body: schemas.SignUpRequest, service: Auth, request: Request):
    """Create the account of an invited person from the invitation token (single use, expiring).

    Creates the member profile through the members service and emits `roomee.auth.user.created`
    and `roomee.notification.member.registered`. Answers with a session for the invited workspace.
    """
    return await service.sign_up(body.model_dump(), client_address(request))


@router.post("/users/signIn", responses=error_responses(401, 403, 429, 503), response_model=schemas.Session)
async def sign_in(body: schemas.SignInRequest, service: Auth, request: Request):
    """Sign in with email and password; the access token is scoped to one workspace.

    Repeated failures are throttled (429 `login_throttled` with `Retry-After`): per client address and per
    email and address. Past a softer limit per email, that email is refused only from addresses that already
    failed for it: nobody can lock the owner out (a right password from an address that has not failed passes).
    """
    return await service.sign_in(body.model_dump(), client_address(request))


@router.post("/users/refresh", responses=error_responses(401, 403, 429), response_model=schemas.Session)
async def refresh(body: schemas.RefreshRequest, service: Auth, request: Request):
    """Trade a refresh token (single use) for a new session in the same workspace.

    Presenting a used refresh token again revokes every refresh token rotated from the same sign-in.
    """
    return await service.refresh(body.refresh_token, client_address(request))


# The bearer token is optional here (a refresh token alone signs out too): `{}` in the alternatives.
@router.post("/users/signOut", responses=error_responses(401, 403), status_code=204, openapi_extra={"security": [{}]})
async def sign_out(
    service: Auth, principal: OptionalPrincipal, body: Annotated[schemas.SignOutRequest | None, Body()] = None
) -> Response:
    """End a session: the one of the bearer access token, and/or the one of `refreshToken`.

    Its refresh tokens are refused at once (401 `session_revoked`); its access tokens answer 401
    `token_revoked` on every service, and its Socket.IO connections close (`session:ended`), within about
    a second (each process polls `GET /users/sessions/revocations`). An unknown or already ended refresh
    token answers 204 too. Neither a bearer token nor a refresh token: 401 `unauthorized`.
    """
    refresh_token = body.refresh_token if body is not None else None
    if principal is None and not refresh_token:
        raise Unauthorized("sign out with the session's access token (Authorization: Bearer) or its refreshToken")
    await service.sign_out(refresh_token, principal)
    return Response(status_code=204)


@router.get("/users/sessions/revocations", responses=error_responses(401, 403), response_model=schemas.SessionRevocations)
async def session_revocations(
    service: Auth,
    _caller: Annotated[Principal, Depends(require_service_scope("auth:session-revocations"))],
    after: Annotated[int | None, Query(ge=0, le=2**62, description="The `position` of the previous answer.")] = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
):
    """Service-to-service (every service, every second): sessions ended (sign-out, password change or reset)
    within one access-token lifetime, in commit order. Each service refuses their access tokens (claim `sid`)
    and closes their sockets (`roomee.kit.auth.AccessChanges`)."""
    return await service.session_revocations(after, limit)


@router.post("/users/password/forgot", responses=error_responses(429), status_code=202,
             response_model=schemas.ForgotPasswordAccepted)
async def forgot_password(body: schemas.ForgotPasswordRequest, service: Passwords, request: Request):
    """Ask for a password reset link by email.

    Always 202 with the same body, whether the email has an account or not. If it has, the account's email
    (in the member's locale) holds a link to `ROOMEE_RESET_PASSWORD_URL` (default `<public URL>/reset-password`)
    with a `token` that works once, within 30 minutes. Throttled per client address and per email and address
    (429 `reset_throttled` with `Retry-After`).
    """
    return await service.forgot(body.email, client_address(request))


@router.post("/users/password/reset", responses=error_responses(404, 410, 429), status_code=204)
async def reset_password(body: schemas.ResetPasswordRequest, service: Passwords, request: Request) -> Response:
    """Choose a new password with the `token` of a reset link; every session of the account ends.

    404 `invalid_reset_token`: no such link; 410 `reset_token_used` (used, or another reset was done since) or
    `reset_token_expired`; 422 for a password the sign-up would refuse; 429 `login_throttled` after repeated
    invalid tokens from one address.
    """
    await service.reset(body.token, body.password, client_address(request))
    return Response(status_code=204)


@router.post("/users/password/change", responses=error_responses(401, 403, 429, 503), response_model=schemas.Session)
async def change_password(body: schemas.ChangePasswordRequest, service: Passwords, principal: CurrentMember,
                          request: Request):
    """Change the caller's password (the current one required); every other session ends, and this one gets
    fresh tokens (the answer: a new access and refresh token of the same session).

    403 `invalid_current_password` (counted as a failed sign-in: throttled like one, 429 `login_throttled`);
    401 `session_revoked` when the caller's session ended meanwhile.
    """
    return await service.change(principal, body.current_password, body.new_password, client_address(request))


@router.post("/users/switch-workspace", responses=error_responses(403), response_model=schemas.Session)
async def switch_workspace(body: schemas.SwitchWorkspaceRequest, service: Auth, principal: CurrentMember):
    """Get a session for another workspace the caller belongs to."""
    return await service.switch_workspace(principal, body.workspace_id)


@router.get("/users/me", responses=error_responses(403, 404), response_model=schemas.Me)
@hot_read
async def me(service: Auth, principal: CurrentMember):
    """The signed-in user, the member acting now, and every membership."""
    return await service.me(principal)
