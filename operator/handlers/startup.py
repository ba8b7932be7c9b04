"""The startup handler (where kopf keeps its state: annotations and a finalizer under roomee.io,
Events reported by the pod's name) and the login handler."""

from __future__ import annotations

import logging

import kopf

from roomee.operator.leader import connection_info
from roomee.operator.settings import FINALIZER, GROUP


@kopf.on.login(id="login")
def login(**_) -> kopf.ConnectionInfo:
    """The pod's service account, else KUBECONFIG: the credentials the leader election uses too."""
    return connection_info()


@kopf.on.startup(id="configure")
async def configure(settings: kopf.OperatorSettings, memo, **_) -> None:
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration",
    )
    # Our kopf.event/kopf.warn calls and handler failures are the Events; info log lines stay in the log.
    settings.posting.level = logging.WARNING
    settings.posting.reporting_component = "roomee-operator"
    settings.posting.reporting_instance = memo.identity  # the pod's name
    settings.posting.event_name_prefix = "roomee-operator-"
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 30
