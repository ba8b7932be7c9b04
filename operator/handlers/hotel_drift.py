"""Drift: a ready Hotel is checked against the hotel service every
``operator_drift_interval_seconds``. A hotel deleted through the REST API turns Ready False with
reason NotFound; fields changed there are set back to what the spec says."""

from __future__ import annotations

import time

import kopf

from roomee.operator import conditions, hotels
from roomee.operator.metrics import measured
from roomee.operator.platform import PlatformAPI, error_detail
from roomee.operator.settings import GROUP, VERSION


def _provisioned(status, meta, **_) -> bool:
    """Ready, and its current spec handled: while the update handler has not caught up with a spec change
    (observedGeneration behind generation), the hotel service rightly differs from the spec, and setting it
    back from this body would report a false DriftCorrected or undo the change."""
    return (bool(status.get("hotelId")) and conditions.is_true(status.get("conditions"))
            and status.get("observedGeneration") == meta.get("generation"))


# The timer ticks every second; each Hotel is checked once per drift interval (a setting).
@kopf.timer(GROUP, VERSION, "hotels", id="hotel-drift", interval=1.0, when=_provisioned)
async def check_drift(body, spec, status, meta, uid, patch: kopf.Patch, memo, retry: int, **_) -> None:
    api: PlatformAPI = memo.api
    checked = memo.drift_checked_at
    if time.monotonic() - checked.get(uid, 0.0) < api.settings.operator_drift_interval_seconds:
        return
    checked[uid] = time.monotonic()
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
