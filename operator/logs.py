"""kopf's log records made readable: a handler's ``TemporaryError`` (the ordinary polling of a
saga, a service briefly away) is logged by kopf at ERROR, which would fire an alert on ERROR for a
healthy operator and post a Warning Event for each poll; it becomes INFO here. And the ``settings``
kopf attaches to each object's record (a 1.6 KB repr) stays out of the JSON lines."""

from __future__ import annotations

import logging

RETRY_MARK = " failed temporarily: "  # kopf's plain retry (not "...but will time out/exceed retries")
KOPF_ONLY = ("settings", "k8s_skip")


class TemporaryErrorsAreInfo(logging.Filter):
    """On ``kopf.objects``: retries are INFO (then dropped if INFO is not logged)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.ERROR and RETRY_MARK in record.getMessage():
            record.levelno, record.levelname = logging.INFO, "INFO"
            return logging.getLogger().isEnabledFor(logging.INFO)
        return True


class WithoutKopfSettings(logging.Filter):
    """On the process's own log handlers (after kopf's Event poster has read the record)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name in KOPF_ONLY:
            record.__dict__.pop(name, None)
        reference = record.__dict__.pop("k8s_ref", None)
        if isinstance(reference, dict):
            record.__dict__["object"] = "/".join(filter(None, (reference.get("namespace"), reference.get("name"))))
        return True


def configure_kopf_logging() -> None:
    objects = logging.getLogger("kopf.objects")
    if not any(isinstance(f, TemporaryErrorsAreInfo) for f in objects.filters):
        objects.addFilter(TemporaryErrorsAreInfo())
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, WithoutKopfSettings) for f in handler.filters):
            handler.addFilter(WithoutKopfSettings())
