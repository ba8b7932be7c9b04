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
    operator_outage_retry_seconds: float = Field(
        default=10.0, gt=0, description="First wait before the operator retries (POST /hotel/{id}/retry) a hotel "
        "whose provisioning waits after a provider outage; it doubles on each retry.",
    )
    operator_outage_retry_max_seconds: float = Field(
        default=300.0, gt=0, description="Longest wait between two such retries.",
    )
    operator_max_concurrent_calls: int = Field(
        default=16, ge=1, description="Requests in flight to the platform at once (many Hotels at once queue here "
        "instead of timing out and opening the circuit breaker).",
    )
    # Leader election (two replicas, one active): the Lease and this replica's identity (the pod's
    # name and namespace, given by the chart through fieldRef).
    operator_leader_election: bool = Field(
        default=True, description="Run kopf only while holding the Lease (off: this replica always acts).",
    )
    operator_lease_name: str = Field(default="roomee-operator", description="Name of the coordination.k8s.io Lease.")
    operator_lease_namespace: str | None = Field(
        default=None, description="Namespace of the Lease; unset: the pod's own (its service account's), else the "
        "kubeconfig context's.",
    )
    operator_identity: str | None = Field(
        default=None, description="This replica's holder identity (the pod name); unset: host name and process id.",
    )
    operator_lease_duration_seconds: float = Field(
        default=15.0, ge=2, description="How long a Lease not renewed stays its holder's before another takes over.",
    )
    operator_lease_renew_seconds: float = Field(default=5.0, gt=0, description="How often the holder renews it.")
    operator_lease_retry_seconds: float = Field(
        default=2.0, gt=0, description="How often a standing-by replica tries to take the Lease.",
    )
