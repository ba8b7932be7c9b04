"""Authentication and tenant scoping shared by every service.

The auth service signs JWTs with an asymmetric key (RS256) and publishes its public keys as a
JWKS; every other service verifies tokens locally with cached keys, refetched when an unknown
``kid`` appears (key rotation). Service-to-service calls carry a service token from the same issuer.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import functools
import logging
import ssl
import time
from collections import OrderedDict
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from roomee.kit.errors import Forbidden, ServiceUnavailable, Unauthorized
from roomee.kit.settings import TARGET_NAMES, Settings

ALGORITHM = "RS256"
log = logging.getLogger("roomee.auth")

# Permissions carried in tokens; roles map onto them in the members service.
MANAGE_MEMBERS = "manage_members"
MANAGE_WORKSPACE = "manage_workspace"
MANAGE_ECOSYSTEM = "manage_ecosystem"
PUBLISH_PAGES = "publish_pages"

# Which service-only routes each platform client may call: a client's token carries only these
# scopes (``<target>:<purpose>``), and every service-only route checks its own with
# ``require_service_scope``. A client missing here gets no service token at all.
SERVICE_SCOPES: dict[str, tuple[str, ...]] = {
    "auth": ("members:profiles", "members:invitations"),
    "members": (),
    "hotel": (
        "members:add-hotel-member",
        "members:read-hotel-members",
        "members:remove-hotel-members",
        "members:workspaces",
        "media:upload",
        "media:storage",
        "media:read",
        "billing:subscriptions",
    ),
    "operator": ("hotel:provision", "members:workspaces"),
    "news": ("members:sync", "media:read"),
    "media": (),
    "billing": (),
    "notification": ("members:sync",),
    # `roomee bootstrap` / `roomee up`: provisions a hotel and signs its first administrator up.
    "cli": ("hotel:provision", "members:add-hotel-member"),
}
# Every target verifies member tokens, so each follows the members' access changes and the sessions
# auth ended (AccessChanges).
VERIFIER_SCOPES = ("members:access-changes", "auth:session-revocations")


def scopes_of(client_id: str) -> tuple[str, ...] | None:
    """The scopes platform client ``client_id`` may hold; None for an unknown client."""
    granted = SERVICE_SCOPES.get(client_id)
    if granted is None:
        return None
    return tuple(sorted(set(granted) | (set(VERIFIER_SCOPES) if client_id in TARGET_NAMES else set())))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _thumbprint(public_jwk: dict[str, Any]) -> str:
    """RFC 7638 JWK thumbprint, used as the key id."""
    canonical = json.dumps({k: public_jwk[k] for k in ("e", "kty", "n")}, separators=(",", ":"), sort_keys=True)
    return _b64(hashlib.sha256(canonical.encode()).digest())


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_key: rsa.RSAPrivateKey
    created: float

    def public_jwk(self) -> dict[str, Any]:
        jwk = jwt.algorithms.RSAAlgorithm.to_jwk(self.private_key.public_key(), as_dict=True)
        return {**jwk, "kid": self.kid, "use": "sig", "alg": ALGORITHM}


class KeyStore:
    """Signing keys from a directory of PEM files (a mounted secret, or generated into the data dir)."""

    def __init__(self, settings: Settings) -> None:
        self.directory = settings.auth_keys_dir or settings.ensure_data_dir() / "keys"
        self.active_kid = settings.auth_active_kid
        self.keys: dict[str, SigningKey] = {}
        self.reload(generate_if_empty=settings.auth_keys_dir is None)

    def reload(self, *, generate_if_empty: bool = False) -> None:
        directory = Path(self.directory)
        if generate_if_empty and not any(directory.glob("*.pem")):
            self.generate()
        keys = {}
        for path in sorted(directory.glob("*.pem")):
            private_key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            probe = jwt.algorithms.RSAAlgorithm.to_jwk(private_key.public_key(), as_dict=True)
            kid = _thumbprint(probe)
            keys[kid] = SigningKey(kid, private_key, path.stat().st_mtime)
        if not keys:
            raise RuntimeError(f"no signing key (*.pem) in {directory}")
        self.keys = keys

    def generate(self) -> SigningKey:
        """Create a new key file; the next reload publishes it and, being newest, signs with it."""
        directory = Path(self.directory)
        directory.mkdir(parents=True, exist_ok=True)
        private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        path = directory / f"signing-{int(time.time() * 1000)}.pem"
        path.write_bytes(pem)
        path.chmod(0o600)
        probe = jwt.algorithms.RSAAlgorithm.to_jwk(private_key.public_key(), as_dict=True)
        return SigningKey(_thumbprint(probe), private_key, path.stat().st_mtime)

    @property
    def signing_key(self) -> SigningKey:
        if self.active_kid and self.active_kid in self.keys:
            return self.keys[self.active_kid]
        return max(self.keys.values(), key=lambda key: key.created)

    def jwks(self) -> dict[str, Any]:
        return {"keys": [key.public_jwk() for key in self.keys.values()]}


class TokenIssuer:
    """Mints the platform's tokens; lives in the auth service only."""

    def __init__(self, keystore: KeyStore, settings: Settings) -> None:
        self.keystore = keystore
        self.settings = settings

    def _sign(self, claims: dict[str, Any], ttl: int) -> str:
        now = int(time.time())
        key = self.keystore.signing_key
        body = {
            "iss": self.settings.jwt_issuer,
            "aud": self.settings.jwt_audience,
            "iat": now,
            "exp": now + ttl,
            "jti": str(uuid.uuid4()),
            **claims,
        }
        return jwt.encode(body, key.private_key, algorithm=ALGORITHM, headers={"kid": key.kid})

    def access_token(
        self,
        *,
        user_id: str,
        member_id: str,
        workspace_id: str,
        hotel_id: str | None,
        permissions: list[str],
        email: str,
        name: str,
        session_id: str | None = None,
    ) -> str:
        """A member's access token; ``session_id`` (claim ``sid``) is the session that sign-out, a password
        change or a password reset ends everywhere (AccessChanges)."""
        return self._sign(
            {
                "typ": "access",
                "sub": user_id,
                "mid": member_id,
                "wid": workspace_id,
                "hid": hotel_id,
                "perms": sorted(permissions),
                "email": email,
                "name": name,
                **({"sid": session_id} if session_id else {}),
            },
            self.settings.access_token_ttl_seconds,
        )

    def service_token(self, service: str, scopes: tuple[str, ...] | None = None) -> str:
        """A token for platform client ``service``: by default with every scope the client may hold."""
        granted = (scopes_of(service) or ()) if scopes is None else scopes
        # Audience: the targets whose routes the scopes open; nothing else accepts the token.
        audience = sorted({scope.partition(":")[0] for scope in granted}) or [self.settings.jwt_audience]
        return self._sign(
            {"typ": "service", "sub": f"service:{service}", "scope": " ".join(sorted(granted)), "aud": audience},
            self.settings.service_token_ttl_seconds,
        )


@dataclass(frozen=True)
class Principal:
    """Who is calling: a member acting in one workspace, or another service."""

    subject: str
    kind: str  # "user" | "service"
    member_id: str | None = None
    workspace_id: str | None = None
    hotel_id: str | None = None
    permissions: frozenset[str] = field(default_factory=frozenset)
    email: str | None = None
    name: str | None = None
    scopes: frozenset[str] = field(default_factory=frozenset)
    audience: frozenset[str] = field(default_factory=frozenset)
    expires_at: int | None = None  # the token's `exp` (seconds since the epoch)
    session_id: str | None = None  # a member token's session (claim `sid`)

    @property
    def is_service(self) -> bool:
        return self.kind == "service"

    def has(self, permission: str) -> bool:
        return permission in self.permissions

    def has_scope(self, scope: str) -> bool:
        """A service token holding ``scope``, meant for the target the scope belongs to."""
        return self.is_service and scope in self.scopes and scope.partition(":")[0] in self.audience

    @classmethod
    def from_claims(cls, claims: dict[str, Any]) -> "Principal":
        if claims.get("typ") == "service":
            scope = claims.get("scope")
            scopes = frozenset(scope.split()) if isinstance(scope, str) else frozenset()
            audience = claims.get("aud")
            return cls(
                subject=claims["sub"],
                kind="service",
                scopes=scopes,
                audience=frozenset([audience] if isinstance(audience, str) else audience or ()),
                expires_at=claims.get("exp"),
            )
        return cls(
            subject=claims["sub"],
            kind="user",
            expires_at=claims.get("exp"),
            member_id=claims.get("mid"),
            workspace_id=claims.get("wid"),
            # "eid" is the claim's name before it became "hid": tokens issued by a replica still on the
            # old release stay valid during a rolling upgrade (they live 15 minutes).
            hotel_id=claims.get("hid", claims.get("eid")),
            permissions=frozenset(claims.get("perms") or ()),
            email=claims.get("email"),
            name=claims.get("name"),
            session_id=claims.get("sid"),
        )


STARTUP_FAILURES = 3
FEED_PAGE = 1000
MEMBER_FEED = "/members/access-changes"
SESSION_FEED = "/users/sessions/revocations"
SESSION_ENDED = "session ended (signed out, or the password changed); sign in again"
MEMBERSHIP_CHANGED = "membership removed or permissions changed; sign in again"


class _Feed:
    """One change feed a process polls: its position, and how many polls failed in a row."""

    def __init__(self, client: Any, path: str, apply: Callable[[list[dict[str, Any]], int], Awaitable[None]],
                 what: str) -> None:
        self.client, self.path, self.apply, self.what = client, path, apply, what
        self.position: int | None = None
        self.failures = 0

    async def poll(self) -> bool:
        """Apply one page; True when another page waits. Failures are retried at the next tick."""
        try:
            params = {"after": self.position} if self.position is not None else {}
            response = await self.client.get(self.path, params=params, endpoint=self.path)
            if response.status_code != 200:
                raise ServiceUnavailable(f"{self.client.target} answered {response.status_code}")
            body = response.json()
            await self.apply(body["items"], body["position"])
            self.position = body["position"]
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.failures += 1
            # The first attempts run while this process (or the feed's service) is still starting.
            if self.failures == STARTUP_FAILURES:
                log.warning("cannot follow %s (tokens they would refuse are accepted until this recovers): %s",
                            self.what, exc)
            return False
        if self.failures >= STARTUP_FAILURES:
            log.info("%s followed again", self.what)
        self.failures = 0
        return len(body["items"]) >= FEED_PAGE


class AccessChanges:
    """Member tokens that no longer hold: of members removed or whose permissions changed since, and of
    sessions that ended (sign-out, password change, password reset).

    Filled from two commit-ordered feeds polled every ``access_changes_poll_seconds`` by each process:
    members' ``GET /members/access-changes`` and auth's ``GET /users/sessions/revocations``. An entry is
    kept one access-token lifetime after the change, when every token issued before it has expired.
    Listeners learn the members whose tokens stopped holding, session listeners the sessions that ended
    (Socket.IO closes their connections).
    """

    def __init__(self, token_ttl_seconds: int) -> None:
        self._keep = token_ttl_seconds + 60
        self._members: dict[str, tuple[frozenset[str] | None, float]] = {}  # permissions (None: removed), until
        self._sessions: dict[str, float] = {}  # ended session id -> until
        self.position: int | None = None
        self.session_position: int | None = None
        self.listeners: list[Callable[[set[str]], Awaitable[None]]] = []
        self.session_listeners: list[Callable[[set[str]], Awaitable[None]]] = []

    def reason(self, claims: dict[str, Any]) -> str | None:
        """Why a member token with these claims no longer holds; None while it does."""
        if claims.get("sid") in self._sessions:
            return SESSION_ENDED
        entry = self._members.get(claims.get("mid") or "")
        if entry is None:
            return None
        permissions, _until = entry
        if permissions is None or permissions != frozenset(claims.get("perms") or ()):
            return MEMBERSHIP_CHANGED
        return None

    def refuses(self, claims: dict[str, Any]) -> bool:
        return self.reason(claims) is not None

    async def apply(self, items: list[dict[str, Any]], position: int) -> None:
        now = time.time()
        changed = set()
        for item in items:
            member_id = item["memberId"]
            permissions = None if item["deleted"] else frozenset(item["permissions"])
            if self._members.get(member_id, (False,))[0] != permissions:
                changed.add(member_id)
            self._members[member_id] = (permissions, now + self._keep)
        self._members = {k: v for k, v in self._members.items() if v[1] > now}
        self.position = position
        await self._tell(self.listeners, changed)

    async def apply_sessions(self, items: list[dict[str, Any]], position: int) -> None:
        """Sessions auth ended (``{sessionId, userId, revokedAt}`` items)."""
        now = time.time()
        ended = {item["sessionId"] for item in items if item["sessionId"] not in self._sessions}
        for item in items:
            self._sessions[item["sessionId"]] = now + self._keep
        if items:
            self._sessions = {k: until for k, until in self._sessions.items() if until > now}
        self.session_position = position
        await self._tell(self.session_listeners, ended)

    @staticmethod
    async def _tell(listeners: list[Callable[[set[str]], Awaitable[None]]], changed: set[str]) -> None:
        for listener in listeners if changed else ():
            try:
                await listener(changed)
            except Exception:
                log.exception("access change listener failed")

    async def follow(self, client: Any, interval: float, sessions_client: Any | None = None) -> None:
        """Poll the members feed (``client``) and auth's session feed (``sessions_client``) forever
        (a platform worker), both in each tick."""
        feeds = [_Feed(client, MEMBER_FEED, self.apply, "member access changes")]
        if sessions_client is not None:
            feeds.append(_Feed(sessions_client, SESSION_FEED, self.apply_sessions, "ended sessions"))
        while True:
            more = await asyncio.gather(*(feed.poll() for feed in feeds))
            if not any(more):
                await asyncio.sleep(interval)


# Verified tokens a process remembers (TokenVerifier); an entry is a few hundred bytes.
VERIFIED_TOKENS_CACHED = 10_000


class TokenVerifier:
    """Verifies tokens locally against cached public keys, refetching the JWKS on an unknown kid."""

    def __init__(
        self,
        settings: Settings,
        jwks_loader: Callable[[], Awaitable[dict[str, Any]]],
        *,
        min_refresh_interval: float = 5.0,
        access_changes: AccessChanges | None = None,
    ) -> None:
        self.settings = settings
        self.access_changes = access_changes or AccessChanges(settings.access_token_ttl_seconds)
        self._load = jwks_loader
        self._keys: dict[str, Any] = {}
        self._fetched_at = 0.0
        self._forced_at = float("-inf")
        self._min_refresh_interval = min_refresh_interval
        self._lock = asyncio.Lock()
        # Tokens already verified (an app sends the same one for its session): the RS256 check and
        # base64/JSON decoding run once per token, not once per request. Bounded; entries end with the
        # token's expiry or when its key leaves the JWKS.
        self._verified: OrderedDict[str, tuple[dict[str, Any], str]] = OrderedDict()
        # The principals of tokens already verified and accepted (same bound, same end).
        self._principals: dict[str, tuple[Principal, dict[str, Any], str]] = {}

    async def _refresh(self, force: bool) -> None:
        async with self._lock:
            now = time.monotonic()
            if self._keys and not force and now - self._fetched_at < self.settings.jwks_cache_seconds:
                return
            if force:
                # Tokens with made-up kids must not turn into a flood of JWKS fetches.
                if now - self._forced_at < self._min_refresh_interval:
                    return
                self._forced_at = now
            document = await self._load()
            self._keys = {
                key["kid"]: jwt.algorithms.RSAAlgorithm.from_jwk(key) for key in document.get("keys", []) if "kid" in key
            }
            self._fetched_at = time.monotonic()

    async def _key_for(self, kid: str) -> Any:
        await self._refresh(force=False)
        if kid not in self._keys:
            await self._refresh(force=True)
        try:
            return self._keys[kid]
        except KeyError:
            raise Unauthorized("token signed by an unknown key", code="invalid_token") from None

    async def verify(self, token: str) -> dict[str, Any]:
        cached = self._verified.get(token)
        if cached is not None:
            claims, kid = cached
            await self._refresh(force=False)
            if kid in self._keys and claims["exp"] > time.time():
                return dict(claims)
            self._verified.pop(token, None)
        claims, kid = await self._verify_signed(token)
        self._verified[token] = (claims, kid)
        if len(self._verified) > VERIFIED_TOKENS_CACHED:
            self._verified.popitem(last=False)
        return dict(claims)

    async def _verify_signed(self, token: str) -> tuple[dict[str, Any], str]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthorized("malformed token", code="invalid_token") from None
        if header.get("alg") != ALGORITHM or not header.get("kid"):
            raise Unauthorized("unsupported token", code="invalid_token")
        key = await self._key_for(header["kid"])
        try:
            return jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                issuer=self.settings.jwt_issuer,
                # Member tokens are for the platform's API; service tokens for the targets of their scopes.
                audience=[self.settings.jwt_audience, *TARGET_NAMES],
                options={"require": ["exp", "iat", "sub", "typ", "aud"]},
            ), header["kid"]
        except jwt.ExpiredSignatureError:
            raise Unauthorized("token expired", code="token_expired") from None
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid token: {exc}", code="invalid_token") from None

    async def principal(self, token: str) -> Principal:
        # The principal of a token seen before, while its key is known and fresh and the token unexpired:
        # only the access changes (revocations) are looked up again.
        cached = self._principals.get(token)
        if cached is not None:
            principal, claims, kid = cached
            if (claims["exp"] > time.time() and kid in self._keys
                    and time.monotonic() - self._fetched_at < self.settings.jwks_cache_seconds):
                if not principal.is_service and (reason := self.access_changes.reason(claims)) is not None:
                    raise Unauthorized(reason, code="token_revoked")
                return principal
            del self._principals[token]
        principal = await self._principal(token)
        entry = self._verified.get(token)
        if entry is not None:
            self._principals[token] = (principal, entry[0], entry[1])
            if len(self._principals) > VERIFIED_TOKENS_CACHED:
                del self._principals[next(iter(self._principals))]
        return principal

    async def _principal(self, token: str) -> Principal:
        claims = await self.verify(token)
        if claims.get("typ") not in ("access", "service"):
            raise Unauthorized("not an access token", code="invalid_token")
        audience = claims["aud"]
        if claims["typ"] == "access" and self.settings.jwt_audience not in ([audience] if isinstance(audience, str) else audience):
            raise Unauthorized("invalid token: not meant for this API", code="invalid_token")
        if claims["typ"] == "access" and (reason := self.access_changes.reason(claims)) is not None:
            raise Unauthorized(reason, code="token_revoked")
        return Principal.from_claims(claims)


def remote_jwks_loader(settings: Settings) -> Callable[[], Awaitable[dict[str, Any]]]:
    url = f"{settings.url_of('auth')}/.well-known/jwks.json"

    async def load() -> dict[str, Any]:
        try:
            async with httpx.AsyncClient(timeout=settings.http_timeout_ms / 1000) as client:
                response = await client.get(url)
                response.raise_for_status()
                return response.json()
        except httpx.HTTPError as exc:
            raise ServiceUnavailable(f"cannot fetch signing keys from auth: {exc}") from None

    return load


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One TLS context for every token request: building one loads the CA bundle, which cost 7-9 % of a
    process's CPU while auth was unreachable and every poll asked for a token again."""
    return httpx.create_ssl_context()  # what httpx builds by default (certifi's CA bundle)


class ServiceTokenProvider:
    """Obtains and caches this service's token from the auth service (client credentials)."""

    def __init__(self, settings: Settings, service: str) -> None:
        self.settings = settings
        self.service = service
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = asyncio.Lock()

    async def __call__(self) -> str:
        async with self._lock:
            if self._token and time.time() < self._expires_at - 60:
                return self._token
            url = f"{self.settings.url_of('auth')}/oauth/token"
            form = {
                "grant_type": "client_credentials",
                "client_id": self.service,
                "client_secret": self.settings.client_secret_of(self.service),
            }
            try:
                async with httpx.AsyncClient(timeout=self.settings.http_timeout_ms / 1000, verify=_tls_context()) as client:
                    response = await client.post(url, data=form)
            except httpx.HTTPError as exc:
                raise ServiceUnavailable(f"cannot obtain a service token from auth: {exc}") from None
            if response.status_code != 200:
                raise ServiceUnavailable(f"auth refused the service token ({response.status_code})")
            body = response.json()
            self._token = body["access_token"]
            self._expires_at = time.time() + int(body.get("expires_in", 300))
            return self._token


_bearer = HTTPBearer(auto_error=False)


async def get_principal(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    verifier: TokenVerifier = request.app.state.platform.verifier
    return await verifier.principal(credentials.credentials)


async def get_optional_principal(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal | None:
    """The caller when it sent a bearer token (verified like any other), else None."""
    return await get_principal(request, credentials) if credentials is not None else None


async def get_member(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
    """A member acting in a workspace (not a service token)."""
    if principal.is_service or not principal.workspace_id:
        raise Forbidden("a member token is required")
    return principal


def require_service_scope(scope: str) -> Callable[..., Awaitable[Principal]]:
    """A platform service whose token holds ``scope`` (401 without a token, 403 otherwise)."""

    async def dependency(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
        if not principal.is_service:
            raise Forbidden("this route is for platform services")
        if not principal.has_scope(scope):
            raise Forbidden(f"service scope '{scope}' required", code="insufficient_scope")
        return principal

    return dependency


def require_permission(permission: str) -> Callable[..., Awaitable[Principal]]:
    async def dependency(principal: Annotated[Principal, Depends(get_member)]) -> Principal:
        if not principal.has(permission):
            raise Forbidden(f"permission '{permission}' required", code="permission_denied")
        return principal

    dependency.roomee_permission = permission  # what a hot read (roomee.kit.hot) checks
    return dependency


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]
CurrentMember = Annotated[Principal, Depends(get_member)]
OptionalPrincipal = Annotated[Principal | None, Depends(get_optional_principal)]
