"""Status conditions after the Kubernetes API conventions: a list keyed by ``type`` with ``status``,
CamelCase ``reason``, ``message``, ``lastTransitionTime`` and ``observedGeneration``; no phase."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

READY = "Ready"
# Provisioning steps of the hotel saga that a Hotel reports, in order (``hotel`` and ``announce``
# are summarised by Ready).
STEP_CONDITIONS = {"qr": "QRReady", "storage": "StorageReady", "subscription": "SubscriptionReady", "admin": "AdminReady"}
DONE_REASONS = {"qr": "QRCodePublished", "storage": "QuotaCreated", "subscription": "SubscriptionActive",
                "admin": "AdministratorInvited"}


@dataclass(frozen=True)
class Condition:
    type: str
    status: str  # "True" | "False" | "Unknown"
    reason: str
    message: str = ""


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def merged(existing: list[dict] | None, updates: list[Condition], generation: int | None) -> list[dict]:
    """``existing`` with ``updates`` applied; a condition keeps its transition time while its status holds."""
    by_type = {c["type"]: dict(c) for c in existing or ()}
    for update in updates:
        previous = by_type.get(update.type)
        changed = previous is None or previous.get("status") != update.status
        by_type[update.type] = {
            "type": update.type, "status": update.status, "reason": update.reason,
            "message": update.message[:32768],
            "lastTransitionTime": now() if changed else previous.get("lastTransitionTime") or now(),
            **({"observedGeneration": generation} if generation is not None else {}),
        }
    order = [READY, *STEP_CONDITIONS.values()]
    return sorted(by_type.values(), key=lambda c: order.index(c["type"]) if c["type"] in order else len(order))


def find(conditions: list[dict] | None, condition_type: str) -> dict | None:
    return next((c for c in conditions or () if c.get("type") == condition_type), None)


def is_true(conditions: list[dict] | None, condition_type: str = READY) -> bool:
    found = find(conditions, condition_type)
    return bool(found and found.get("status") == "True")


def transitions(before: list[dict] | None, after: list[dict]) -> list[dict]:
    """Conditions whose status or reason changed (each becomes a Kubernetes Event)."""
    previous = {c["type"]: (c.get("status"), c.get("reason")) for c in before or ()}
    return [c for c in after if previous.get(c["type"]) != (c["status"], c["reason"])]


def _camel(text: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in text.replace("-", "_").split("_") if part)


def step_condition(step: dict[str, Any]) -> Condition:
    """One saga step as its condition: done is True, a failing attempt False, waiting Unknown."""
    name, state = step["name"], step["status"]
    condition_type = STEP_CONDITIONS[name]
    error = step.get("lastError") or ""
    attempts = step.get("attempts") or 0
    if state == "succeeded":
        external = step.get("externalId")
        return Condition(condition_type, "True", DONE_REASONS[name], f"{name} done" + (f" ({external})" if external else ""))
    if state in ("failed", "compensating", "compensated"):
        return Condition(condition_type, "False", f"Step{_camel(state)}", error or f"the {name} step {state}")
    if error:  # the saga retries it with backoff
        return Condition(condition_type, "False", "Retrying", f"attempt {attempts} failed: {error}")
    if state == "running":
        return Condition(condition_type, "Unknown", "InProgress", f"the {name} step is running")
    return Condition(condition_type, "Unknown", "Pending", f"waiting for the steps before {name}")


def provisioning_conditions(document: dict[str, Any]) -> list[Condition]:
    """The hotel's provisioning document as the Hotel's conditions (Ready last)."""
    steps = [s for s in document.get("steps", ()) if s["name"] in STEP_CONDITIONS]
    result = [step_condition(step) for step in steps]
    status = document.get("status")
    if status == "ready":
        result.append(Condition(READY, "True", "Provisioned", "the hotel is provisioned"))
    elif status == "failed" and document.get("nextRetryAt"):
        # A provider outage outlasted the step's retries: nothing was undone, the saga waits to retry.
        waiting = next((s for s in document.get("steps", ()) if s["status"] != "succeeded"), None)
        detail = f"{waiting['name']}: {waiting.get('lastError') or 'failed'}" if waiting else document.get("error") or ""
        result.append(Condition(READY, "False", "ProviderUnavailable",
                                f"{detail}; retried with backoff (the hotel service's own retry: {document['nextRetryAt']})"))
    elif status == "failed":
        failed = next((s for s in document.get("steps", ()) if s["status"] in ("failed", "compensated", "compensating")), None)
        detail = f"{failed['name']}: {failed.get('lastError') or 'failed'}" if failed else "provisioning failed"
        result.append(Condition(READY, "False", "ProvisioningFailed", detail))
    elif status in ("deleting", "deleted"):
        result.append(Condition(READY, "False", "Deleting", "the hotel is being de-provisioned"))
    else:
        current = next((s for s in document.get("steps", ()) if s["status"] != "succeeded"), None)
        waiting = f"waiting for the {current['name']} step" if current else "finishing"
        if current is not None and current.get("lastError"):
            waiting += f" (attempt {current.get('attempts')}: {current['lastError']})"
        result.append(Condition(READY, "False", "Provisioning", waiting))
    return result
