"""Platform settings: the only place that reads the environment.

Every setting is ``ROOMEE_<NAME>``; a service may override any of them with
``ROOMEE_<SERVICE>_<NAME>`` (``ROOMEE_NEWS_DATABASE_URL``).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

TARGET_NAMES = ("auth", "members", "hotel", "media", "billing", "news", "notification")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ROOMEE_", extra="ignore")

    data_dir: Path = Field(
        default=Path(".roomee-data"),
        description="Where the embedded defaults keep their files (SQLite, bus, keys, mail).",
    )
    database_url: str | None = Field(
        default=None,
        description="PostgreSQL URL (one schema per service). Unset: one SQLite file per service in the data dir.",
    )
    schema_prefix: str = Field(default="", description="Prefix of each service's PostgreSQL schema name.")
    db_pool_size: int = Field(default=5, ge=1, description="PostgreSQL connections each service keeps open, "
                              "and the most reads it runs at once (a process serving several targets has one pool "
                              "per target).")
    db_max_overflow: int = Field(default=10, ge=0, description="Extra PostgreSQL connections a service may open "
                                 "for transactions under load, closed when returned (reads wait for a pooled one).")
    broker_url: str | None = Field(
        default=None,
        description="RabbitMQ URL (amqp://...), or several nodes of a cluster as a comma-separated list: the first "
        "that answers is used, and a lost connection moves to the next surviving node. Unset: the embedded durable "
        "bus in the data dir.",
    )
    queue_type: Literal["classic", "quorum"] = Field(
        default="classic",
        description="Type of every RabbitMQ queue the platform declares: quorum (replicated, for a RabbitMQ cluster; "
        "needs RabbitMQ 3.10+) or classic. An existing queue keeps its type: `roomee migrate` refuses a change "
        "(exit 1) rather than declaring the other type.",
    )
    exchange: str = Field(default="roomee", description="The AMQP topic exchange.")
    queue_prefix: str = Field(default="", description="Prefix of every queue name (isolates test runs on one broker).")

    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str | None = Field(
        default=None, description="Base URL clients use; default http://<host>:<port>."
    )
    allowed_origins: list[str] = Field(
        default_factory=list,
        description="Browser origins allowed to call the HTTP API (CORS) and to open Socket.IO connections "
        '(JSON list; ["*"] for any). Empty: the same origin only.',
    )
    socket_ping_interval_seconds: float = Field(
        default=25.0, gt=0, description="Socket.IO (engine.io) ping interval: the server pings each client this often."
    )
    socket_ping_timeout_seconds: float = Field(
        default=20.0, gt=0, description="Socket.IO (engine.io) ping timeout: a client that has not answered a ping "
        "within interval + timeout is closed, whatever else it sends."
    )
    socket_recovery_window_seconds: float = Field(
        default=120.0, ge=0, description="Socket.IO connection state recovery: a reconnecting client is sent the "
        "notifications it missed when none of them is older than this; otherwise recovered is false (it refetches)."
    )
    signup_url: str | None = Field(
        default=None, description="Sign-up page the invitation link points to; default <public_url>/signup "
        "(a minimal built-in form)."
    )
    reset_password_url: str | None = Field(
        default=None, description="Page of your front end a password reset link points to (with `?token=`), which "
        "posts the token and a new password to POST /users/password/reset; default <public_url>/reset-password."
    )
    forwarded_allow_ips: str = Field(
        default="127.0.0.1",
        description="Proxies trusted to give the client address in X-Forwarded-For (comma-separated IPs or "
        "CIDRs, '*' for any): behind an Ingress, its pods' addresses, so throttles key on the real client.",
    )
    api_docs: bool = Field(
        default=True, description="Serve /docs, /redoc and /openapi/{target}.json (false: 404, e.g. in production).",
    )
    metrics_port: int | None = Field(
        default=None, description="Serve /metrics on this port only (a second listener on <host>), not on the API "
        "port; unset: /metrics on the API port.",
    )
    # Where each target is reachable for inter-service calls; default: this process (public_url).
    auth_url: str | None = None
    members_url: str | None = None
    hotel_url: str | None = None
    media_url: str | None = None
    billing_url: str | None = None
    news_url: str | None = None
    notification_url: str | None = None

    auto_migrate: bool = Field(default=True, description="Run migrations when a target starts.")
    allow_unsafe_defaults: bool = Field(
        default=False,
        description="Development only: with a database URL, start although signing keys and service credentials "
        "are generated and no public URL is set.",
    )
    service_secret: str | None = Field(
        default=None,
        description="Secret material each service's client secret is derived from when "
        "service_client_secrets has no entry for it; generated into the data dir when unset.",
    )
    service_client_secrets: dict[str, str] = Field(
        default_factory=dict,
        description="Client secret of each platform client for /oauth/token (JSON object, client id → secret). "
        "A service uses its own entry; auth checks every entry. Give a service's pod only its own entry.",
    )
    operator_client_secret: str | None = Field(
        default=None,
        description="Client secret of the operator's client (`operator`), given to the operator's pod and to auth "
        "only; set, it is that client's secret (before service_client_secrets and any derivation), so the operator's "
        "pod needs no service_secret.",
    )
    cursor_secret: str | None = Field(
        default=None,
        description="Key signing pagination cursors (the same for every replica); generated into the data dir when unset.",
    )
    auth_keys_dir: Path | None = Field(
        default=None,
        description="Directory of PEM signing keys (a mounted secret); generated into the data dir when unset.",
    )
    auth_active_kid: str | None = Field(default=None, description="Key id to sign with; default the newest key.")
    jwt_issuer: str = "roomee"
    jwt_audience: str = Field(default="roomee", description="`aud` of member tokens, checked by every service.")
    access_token_ttl_seconds: int = 900
    refresh_token_ttl_seconds: int = 30 * 24 * 3600
    service_token_ttl_seconds: int = 3600
    invitation_ttl_seconds: int = 72 * 3600
    login_max_failures: int = Field(default=5, description="Failed sign-ins of one email from one address per window.")
    login_max_failures_per_email: int = Field(
        default=50, description="Failed sign-ins of one email from all addresses per window. Soft: past it, "
        "that email may still sign in from every address that has not failed for it (one try from each that "
        "has not), so a stranger cannot lock the owner out (OWASP ASVS 2.2.1)."
    )
    address_max_failures: int = Field(
        default=50, description="Failures (sign-in, sign-up, refresh, client credentials) of one address per window."
    )
    login_window_seconds: int = 900
    jwks_cache_seconds: int = 300
    access_changes_poll_seconds: float = Field(
        default=1.0, gt=0, description="How often each process asks members which tokens stopped holding "
        "(removed members, changed permissions)."
    )

    # 2 MiB: the largest body the schemas accept must fit, and an article's 100,000 characters of content, each
    # an astral character escaped as a JSON surrogate pair (12 bytes), make 1.2 MB (1 MiB refused schema-valid bodies).
    max_json_body_bytes: int = Field(default=2 * 1024 * 1024, gt=0, description="Largest request body of a route "
                                     "(JSON, forms): a larger one is answered 413 before it is read.")
    max_upload_body_bytes: int | None = Field(default=None, gt=0, description="Largest request body of an upload "
                                              "route; unset: media_max_file_bytes plus 1 MiB of multipart envelope.")
    http_timeout_ms: int = 3000
    breaker_error_threshold_percentage: int = 50
    breaker_reset_timeout_ms: int = 10000
    breaker_rolling_window_ms: int = 10000
    breaker_volume_threshold: int = 5

    outbox_poll_interval_seconds: float = 0.5
    outbox_batch_size: int = 500
    consumer_prefetch: int = 100
    retry_delays_ms: list[int] = Field(default_factory=lambda: [1000, 2000, 4000])

    log_level: str = "INFO"
    log_format: Literal["json", "text"] = "json"
    otel_exporter: Literal["none", "console", "otlp"] = "none"
    otel_endpoint: str | None = None

    # Notification providers (after Django's email backends: one interface, chosen here).
    push_backend: Literal["log", "onesignal"] = "log"
    onesignal_url: str = "https://api.onesignal.com"
    onesignal_app_id: str | None = None
    onesignal_api_key: str | None = None
    provider_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description="Timeout of each request to a notification provider (OneSignal, SMTP, SendGrid).",
    )
    email_backend: Literal["file", "smtp", "sendgrid"] = "file"
    email_from: str = "Roomee <no-reply@roomee.local>"
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 25
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_starttls: bool = False
    smtp_implicit_tls: bool = Field(
        default=False,
        description="TLS from the first byte (SMTPS, port 465); excludes smtp_starttls.",
    )
    smtp_ca_file: Path | None = Field(
        default=None,
        description="PEM CA bundle verifying the SMTP server's certificate (either TLS mode); unset: the system CAs.",
    )
    sendgrid_api_key: str | None = None
    sendgrid_url: str | None = None
    members_sync_interval_seconds: float = 300.0

    # Media storage (one interface, a backend chosen here: `local` files served by the media target, or GCS).
    media_storage: Literal["local", "gcs"] = "local"
    media_gcs_bucket: str = "roomee-media"
    media_gcs_project: str | None = None
    media_gcs_endpoint: str | None = Field(
        default=None, description="GCS API base URL (an emulator such as fake-gcs-server); unset: Google's."
    )
    media_gcs_credentials_file: Path | None = Field(
        default=None, description="Service-account JSON key that signs the V4 upload/download URLs."
    )
    media_signing_secret: str | None = Field(
        default=None, description="Key of the local backend's signed URLs (the same for every replica); "
        "unset: derived from the service secret."
    )
    media_max_file_bytes: int = Field(default=100 * 1024 * 1024, gt=0, description="Largest file one upload may hold.")
    media_allowed_types: list[str] = Field(
        default_factory=lambda: [
            "image/jpeg", "image/png", "image/gif", "image/webp",
            "video/mp4", "video/quicktime", "video/webm", "application/pdf",
        ],
        description="Content types an upload may declare (and must really be).",
    )
    media_upload_url_ttl_seconds: int = Field(default=900, gt=0, description="Lifetime of a presigned upload URL.")
    media_download_url_ttl_seconds: int = Field(default=300, gt=0, description="Lifetime of a signed GET (gcs).")
    media_thumbnail_box: int = Field(default=320, gt=0, description="Thumbnails fit in this square (pixels).")
    media_sweep_interval_seconds: float = Field(
        default=30.0, gt=0, description="How often expired reservations and released objects are cleaned up."
    )
    media_storage_timeout_seconds: float = Field(
        default=10.0, gt=0, description="How long one storage call (with its retries) may take before a 503."
    )

    # Billing (api-stripe): subscriptions kept in its own tables (local) or in Stripe.
    billing_provider: Literal["local", "stripe"] = "local"
    billing_trial_days: int = Field(
        default=14, ge=0, description="Trial days of a new paid subscription (the card is collected meanwhile); 0: none."
    )
    stripe_api_key: str | None = None
    stripe_api_url: str | None = Field(default=None, description="Stripe API base URL (a stand-in); unset: Stripe's.")
    stripe_webhook_secret: str | None = Field(
        default=None, description="Signing secret of the Stripe webhook endpoint (whsec_…); unset: webhooks refused."
    )
    stripe_webhook_tolerance_seconds: int = Field(default=300, gt=0, description="Oldest webhook signature accepted.")
    stripe_timeout_seconds: float = Field(default=10.0, gt=0)
    stripe_max_network_retries: int = Field(default=2, ge=0)

    # Sagas (kit.saga) and the hotel target's provisioning.
    saga_lease_seconds: float = Field(default=30.0, gt=0, description="A process holds a saga this long "
                                      "without progress before another may resume it (after a crash).")
    saga_max_attempts: int = Field(default=8, ge=1, description="Attempts of a step on transient failures before compensating.")
    saga_backoff_base_seconds: float = Field(default=0.25, gt=0, description="First retry delay; doubles per attempt.")
    saga_backoff_max_seconds: float = Field(default=30.0, gt=0, description="Largest retry delay.")
    saga_poll_interval_seconds: float = Field(default=1.0, gt=0, description="How often the worker looks for sagas to resume.")
    saga_retry_later_base_seconds: float = Field(default=60.0, gt=0, description="A step whose transient failure "
                                                 "outlasts its attempts (a provider outage) is retried after this "
                                                 "long, then twice as long each time.")
    saga_retry_later_max_seconds: float = Field(default=1800.0, gt=0, description="Largest wait between such retries.")
    saga_retry_later_limit_seconds: float = Field(default=21600.0, ge=0, description="Retries go on this long after "
                                                  "the first wait; then the saga is compensated (0: no waiting, "
                                                  "compensate once a step's attempts are spent).")
    hotel_join_url: str | None = Field(default=None, description="Base of the join link a hotel's QR code "
                                       "encodes (<hotel_join_url>/<hotel id>); default <public_url>/join.")
    hotel_join_app_url: str | None = Field(default=None, description="Where GET /join/{hotelId} redirects (307 to "
                                           "<url>?hotelId=<id>), e.g. the app's store or deep link; unset: a small "
                                           "HTML page saying how to join.")
    hotel_idempotency_ttl_seconds: int = Field(default=86400, gt=0, description="How long an Idempotency-Key of POST /hotel/add is kept.")
    hotel_storage_wait_seconds: float = Field(default=2.0, gt=0, description="How long one attempt of the storage "
                                              "step waits for media to create the quota.")

    @property
    def base_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    def url_of(self, target: str) -> str:
        return (getattr(self, f"{target}_url", None) or self.base_url).rstrip("/")

    @property
    def signup_link_base(self) -> str:
        return self.signup_url or f"{self.base_url}/signup"

    @property
    def reset_password_link_base(self) -> str:
        return self.reset_password_url or f"{self.base_url}/reset-password"

    @property
    def uses_postgres(self) -> bool:
        return bool(self.database_url)

    def ensure_data_dir(self) -> Path:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return self.data_dir

    def resolved_service_secret(self) -> str:
        """The configured secret, else one generated once into the data dir."""
        return self.service_secret or self._generated_secret("service-secret")

    def resolved_cursor_secret(self) -> str:
        """The configured cursor key, else one generated once into the data dir."""
        return self.cursor_secret or self._generated_secret("cursor-secret")

    def _generated_secret(self, name: str) -> str:
        """A random secret generated once into the data dir (the embedded default)."""
        path = self.ensure_data_dir() / name
        if not path.exists():
            path.write_text(secrets.token_urlsafe(32))
            path.chmod(0o600)
        return path.read_text().strip()

    def unsafe_production_defaults(self, targets: list[str]) -> list[str]:
        """What a production process (a database URL is set) would otherwise start with silently."""
        if not self.uses_postgres or self.allow_unsafe_defaults:
            return []
        problems = []
        if "auth" in targets and self.auth_keys_dir is None:
            problems.append("ROOMEE_AUTH_KEYS_DIR is unset: each replica would sign with its own key generated "
                            "into its data dir")
        if not self.service_secret and not self.service_client_secrets:
            problems.append("no service credentials: set ROOMEE_SERVICE_CLIENT_SECRETS (or ROOMEE_SERVICE_SECRET)")
        if not self.public_url:
            problems.append(f"ROOMEE_PUBLIC_URL is unset: links and self-calls would point to {self.base_url}")
        return problems

    def client_secret_of(self, client_id: str) -> str:
        """The client secret of platform client ``client_id``: configured, else derived from service_secret."""
        if client_id == "operator" and self.operator_client_secret:
            return self.operator_client_secret
        if client_id in self.service_client_secrets:
            return self.service_client_secrets[client_id]
        derived = hmac.new(self.resolved_service_secret().encode(), f"client:{client_id}".encode(), hashlib.sha256)
        return derived.hexdigest()

    def for_service(self, service: str) -> "Settings":
        """These settings with the ``ROOMEE_<SERVICE>_*`` overrides applied."""
        override_cls = type(
            f"{service.title()}Settings",
            (Settings,),
            {"model_config": SettingsConfigDict(env_prefix=f"ROOMEE_{service.upper()}_", extra="ignore")},
        )
        overrides = override_cls()
        explicit = {name: getattr(overrides, name) for name in overrides.model_fields_set}
        return self.model_copy(update=explicit)


@lru_cache
def get_settings() -> Settings:
    return Settings()
