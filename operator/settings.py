"""The operator's settings: the platform's (``ROOMEE_*``) plus its own (``ROOMEE_OPERATOR_*``)."""

from __future__ import annotations

from pydantic import Field

from roomee.kit.settings import Settings

GROUP = "roomee.io"
VERSION = "v1"
FINALIZER = f"{GROUP}/finalizer"


class OperatorSettings(Settings):
    operator_namespaces: list[str] = Field(
        default_factory=list, description="Namespaces to watch (globs allowed); empty: the whole cluster.",
    )
    operator_drift_interval_seconds: float = Field(
        default=30.0, gt=0, description="How often a ready Hotel is checked against the hotel service.",
    )
    operator_poll_seconds: float = Field(
        default=0.1, gt=0, description="First wait before reading a hotel's provisioning again (it grows to 2 s).",
    )
    operator_max_poll_seconds: float = Field(default=2.0, gt=0, description="Longest wait between two reads.")
    operator_max_concurrent_calls: int = Field(
        default=16, ge=1, description="Requests in flight to the platform at once (many Hotels at once queue here "
        "instead of timing out and opening the circuit breaker).",
    )
