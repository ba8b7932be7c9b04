"""The target registry (Mimir's single-binary idea): name -> service package and its parts.

Each service package follows one shape; the registry says which of its optional parts exist:
``endpoints.router`` (always), ``models.metadata`` (always), and hooks given as ``module:attr``:
``setup(ctx)`` at start, ``consumers(ctx) -> list[ConsumerSpec]``, ``workers(ctx) -> list[coroutine fn]``,
``mount(app, ctx)`` to wrap the ASGI app (Socket.IO).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from typing import Any


@dataclass(frozen=True)
class TargetSpec:
    name: str
    seed_name: str
    package: str
    depends_on: tuple[str, ...] = ()
    setup: str | None = None
    consumers: str | None = None
    workers: str | None = None
    mount: str | None = None
    # A process of its own instead of the platform's app (the operator): ``runner(settings)``.
    # Such a target is never part of ``all``.
    runner: str | None = None

    def load(self, ref: str | None) -> Any:
        if ref is None:
            return None
        module, _, attr = ref.partition(":")
        return getattr(import_module(f"{self.package}.{module}"), attr)

    @property
    def router(self):
        return import_module(f"{self.package}.endpoints").router

    @property
    def metadata(self):
        return import_module(f"{self.package}.models").metadata


TARGETS: dict[str, TargetSpec] = {
    spec.name: spec
    for spec in (
        TargetSpec("auth", "api-authentication", "roomee.auth", depends_on=("members",), setup="service:setup"),
        TargetSpec("members", "api-staff-member", "roomee.members", depends_on=("auth",)),
        TargetSpec("media", "api-media", "roomee.media", depends_on=("auth",), setup="service:setup", consumers="events:consumers", workers="service:workers"),
        TargetSpec("hotel", "api-hotel", "roomee.hotel", depends_on=("auth", "members", "media", "billing"), setup="service:setup", workers="service:workers"),
        TargetSpec("billing", "api-stripe", "roomee.billing", depends_on=("auth",), setup="service:setup", workers="service:workers"),
        TargetSpec("news", "api-news", "roomee.news", depends_on=("auth", "members", "media"), consumers="events:consumers", workers="events:workers"),
        TargetSpec("notification", "api-notification", "roomee.notification", depends_on=("auth", "members"), setup="service:setup", consumers="events:consumers", workers="service:workers", mount="realtime.server:mount"),
        TargetSpec("operator", "roomee-operator", "roomee.operator", depends_on=("auth", "hotel", "members"), runner="main:serve"),
    )
}

ALL = "all"


def resolve(names: str | list[str]) -> list[TargetSpec]:
    """Targets for a ``--target`` value: ``all`` or a comma-separated list."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    if ALL in names:
        return [spec for spec in TARGETS.values() if spec.runner is None]
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        raise ValueError(f"unknown target(s): {', '.join(unknown)}; available: {', '.join(TARGETS)}, all")
    return [TARGETS[n] for n in names]
