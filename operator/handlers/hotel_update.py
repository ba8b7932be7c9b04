"""Hotel spec changed (name, contact, plan): ``PATCH /hotel/{id}`` with what changed; the hotel
service changes the subscription and the storage quota for a new plan. ``observedGeneration`` follows."""

from __future__ import annotations

import kopf

from roomee.operator import conditions, hotels
from roomee.operator.conditions import READY, Condition
from roomee.operator.handlers.hotel_create import provision
from roomee.operator.metrics import measured
from roomee.operator.platform import PlatformAPI, error_detail
from roomee.operator.settings import GROUP, VERSION


@kopf.on.update(GROUP, VERSION, "hotels", id="hotel-update", field="spec")
async def update_hotel(old, new, body, status, meta, uid, patch: kopf.Patch, memo, retry: int, **_) -> None:
    with measured("hotel", "update"):
        api: PlatformAPI = memo.api
        generation = meta.get("generation")
        hotel_id = status.get("hotelId")
        ready = conditions.find(status.get("conditions"), READY) or {}
        if not hotel_id or ready.get("reason") == "Provisioning":
            # Updates follow a finished create: without a hotel it was refused, and the edit may fix it.
            # Once submitted again (a retry of this handler sees the hotelId) this handler follows the
            # saga to the end, as the create handler would: nothing else is watching it.
            await provision(api, body, new, status, uid, patch, generation, retry, memo)
            return
        changes = hotels.differences(hotels.wanted_fields(dict(new or {})), hotels.wanted_fields(dict(old or {})))
        if changes:
            response = await api.call(api.hotel, "PATCH", f"/hotel/{hotel_id}", retry=retry, endpoint="/hotel/{id}",
                                      json=changes)
            if response.status_code == 404:
                hotels.not_found(body, patch, hotel_id, generation)
                raise kopf.PermanentError(f"hotel {hotel_id} was deleted outside Kubernetes")
            if response.status_code == 409:  # not ready yet: the plan changes once provisioning is over
                raise kopf.TemporaryError(error_detail(response), delay=api.poll_delay(retry) * 5)
            if response.status_code in (400, 422):
                hotels.set_conditions(body, patch, [Condition(READY, "False", "UpdateRejected", error_detail(response))],
                                      generation)
                raise kopf.PermanentError(f"the hotel service refused the change: {error_detail(response)}")
            if response.status_code >= 400:
                raise kopf.TemporaryError(f"PATCH answered {response.status_code}: {error_detail(response)}", delay=5)
            summary = ", ".join(f"{field}={value}" for field, value in sorted(changes.items()))
            kopf.event(body, type="Normal", reason="Updated", message=f"hotel {hotel_id}: {summary}")
        existing = (body.get("status") or {}).get("conditions") or []
        patch.status["conditions"] = [{**c, "observedGeneration": generation} for c in existing]
        patch.status["observedGeneration"] = generation
