"""Drift: a ready Hotel is checked against the hotel service every
``operator_drift_interval_seconds``. A hotel deleted through the REST API turns Ready False with
reason NotFound; fields changed there are set back to what the spec says. What provisioning made and
something undid behind the platform's back (``GET /hotel/{id}/health``: a subscription canceled in
Stripe, the QR code deleted from storage) turns Ready False with the check's reason
(SubscriptionCancelled, QRMissing) and a Warning Event; the next tick repairs it
(``POST /hotel/{id}/repair``: a new subscription on the spec's plan, the QR code uploaded again) and
Ready returns True with reason DriftCorrected (one Event)."""

from __future__ import annotations

import time

import kopf

from roomee.operator import conditions, hotels
from roomee.operator.conditions import READY, Condition
from roomee.operator.metrics import measured
from roomee.operator.platform import PlatformAPI, backoff, error_detail
from roomee.operator.settings import GROUP, VERSION

# Ready=False reasons of the drift check: the Hotel stays under the timer until it is repaired.
BROKEN_REASONS = ("SubscriptionCancelled", "SubscriptionMissing", "QRMissing")


def _provisioned(status, meta, **_) -> bool:
    """Ready (or broken behind the platform's back, until repaired), and its current spec handled: while
    the update handler has not caught up with a spec change (observedGeneration behind generation), the
    hotel service rightly differs from the spec, and setting it back from this body would report a false
    DriftCorrected or undo the change."""
    ready = conditions.find(status.get("conditions"), READY) or {}
    return (bool(status.get("hotelId"))
            and (ready.get("status") == "True" or ready.get("reason") in BROKEN_REASONS)
            and status.get("observedGeneration") == meta.get("generation"))


async def _repair(api: PlatformAPI, body, status, meta, patch: kopf.Patch, retry: int, memo) -> None:
    """``POST /hotel/{id}/repair`` for a Hotel found broken; Ready True again once it is whole."""
    hotel_id, uid = status["hotelId"], meta["uid"]
    response = await api.call(api.hotel, "POST", f"/hotel/{hotel_id}/repair", retry=retry,
                              endpoint="/hotel/{id}/repair")
    if response.status_code != 200 or not response.json()["healthy"]:
        failures = memo.repair_failures[uid] = memo.repair_failures.get(uid, 0) + 1
        memo.repair_after[uid] = time.monotonic() + backoff(failures)
        detail = error_detail(response) if response.status_code != 200 else "still broken after the repair"
        kopf.warn(body, reason="DriftNotCorrected", message=f"hotel {hotel_id}: {detail}")
        return
    memo.repair_failures.pop(uid, None)
    memo.repair_after.pop(uid, None)
    repaired = response.json()
    for fact, field in (("qrLink", "qrLink"), ("subscriptionId", "subscriptionId")):
        if repaired.get(field):
            patch.status[fact] = repaired[field]
    what = {"subscription": "a new subscription on the spec's plan", "qr": "the QR code uploaded again"}
    done = "; ".join(what[name] for name in repaired["repaired"]) or "already whole"
    # The steps' conditions name what they made now (same status and reason: no Event of their own).
    made = {"subscription": repaired.get("subscriptionId"), "qr": repaired.get("qrLink")}
    steps = [Condition(conditions.STEP_CONDITIONS[name], "True", conditions.DONE_REASONS[name],
                       f"{name} repaired ({made[name]})") for name in repaired["repaired"]]
    hotels.set_conditions(body, patch, [*steps, Condition(READY, "True", "DriftCorrected", f"hotel {hotel_id}: {done}")],
                          meta.get("generation"))


async def _check_health(api: PlatformAPI, body, status, meta, patch: kopf.Patch, retry: int) -> None:
    hotel_id = status["hotelId"]
    response = await api.call(api.hotel, "GET", f"/hotel/{hotel_id}/health", retry=retry,
                              endpoint="/hotel/{id}/health")
    if response.status_code != 200:  # 409: no longer ready (being deleted); the next check sees it
        return
    broken = [check for check in response.json()["checks"] if not check["healthy"]]
    if broken:
        message = "; ".join(f"{check['name']}: {check['detail']}" for check in broken)
        hotels.set_conditions(body, patch, [Condition(READY, "False", broken[0]["reason"], message)],
                              meta.get("generation"))


# The timer ticks every second; each Hotel is checked once per drift interval (a setting), and a broken
# one is repaired at the next tick (then with backoff while the repair fails).
@kopf.timer(GROUP, VERSION, "hotels", id="hotel-drift", interval=1.0, when=_provisioned)
async def check_drift(body, spec, status, meta, uid, patch: kopf.Patch, memo, retry: int, **_) -> None:
    api: PlatformAPI = memo.api
    checked, now = memo.drift_checked_at, time.monotonic()
    broken = (conditions.find(status.get("conditions"), READY) or {}).get("reason") in BROKEN_REASONS
    due = memo.repair_after.get(uid, 0.0) if broken else checked.get(uid, 0.0) + api.settings.operator_drift_interval_seconds
    if now < due:
        return
    checked[uid] = now
    with measured("hotel", "drift"):
        hotel_id = status["hotelId"]
        response = await api.call(api.hotel, "GET", f"/hotel/{hotel_id}", retry=retry, endpoint="/hotel/{id}")
        if response.status_code == 404 or (response.status_code == 200 and response.json()["status"] == "deleted"):
            hotels.not_found(body, patch, hotel_id, meta.get("generation"))
            return
        if response.status_code != 200:
            raise kopf.TemporaryError(f"GET /hotel answered {response.status_code}: {error_detail(response)}", delay=5)
        changes = hotels.differences(hotels.wanted_fields(dict(spec)), response.json())
        if changes:
            fixed = await api.call(api.hotel, "PATCH", f"/hotel/{hotel_id}", retry=retry, endpoint="/hotel/{id}",
                                   json=changes)
            if fixed.status_code >= 400:
                kopf.warn(body, reason="DriftNotCorrected", message=f"{sorted(changes)}: {error_detail(fixed)}")
                return
            kopf.warn(body, reason="DriftCorrected",
                      message=f"hotel {hotel_id} differed from the spec in {', '.join(sorted(changes))}; set back")
        if broken:
            await _repair(api, body, status, meta, patch, retry, memo)
        else:
            await _check_health(api, body, status, meta, patch, retry)
