"""Hotel deleted: run the hotel service's deletion flow (``DELETE /hotel/{id}``) and keep the
finalizer until it has finished (``GET /hotel/{id}`` answers 404 or status ``deleted``)."""

from __future__ import annotations

import kopf

from roomee.operator import hotels
from roomee.operator.conditions import READY, Condition
from roomee.operator.metrics import measured
from roomee.operator.platform import PlatformAPI, error_detail
from roomee.operator.settings import GROUP, VERSION


@kopf.on.delete(GROUP, VERSION, "hotels", id="hotel-delete")
async def delete_hotel(body, status, meta, patch: kopf.Patch, memo, retry: int, **_) -> None:
    with measured("hotel", "delete"):
        api: PlatformAPI = memo.api
        hotel_id = status.get("hotelId")
        if not hotel_id:
            return  # never reached the hotel service
        current = await api.call(api.hotel, "GET", f"/hotel/{hotel_id}", retry=retry, endpoint="/hotel/{id}")
        if current.status_code == 404 or (current.status_code == 200 and current.json()["status"] == "deleted"):
            kopf.event(body, type="Normal", reason="Deprovisioned", message=f"hotel {hotel_id} and its tenant data are deleted")
            return
        if current.status_code != 200:
            raise kopf.TemporaryError(f"GET /hotel answered {current.status_code}", delay=api.poll_delay(retry))
        if current.json()["status"] != "deleting":
            response = await api.call(api.hotel, "DELETE", f"/hotel/{hotel_id}", retry=retry, endpoint="/hotel/{id}")
            if response.status_code == 409:  # still provisioning: deletion waits for the saga to end
                raise kopf.TemporaryError(error_detail(response), delay=api.poll_delay(retry) * 5)
            if response.status_code not in (200, 202, 204, 404):
                raise kopf.TemporaryError(f"DELETE answered {response.status_code}: {error_detail(response)}",
                                          delay=api.poll_delay(retry) * 5)
            hotels.set_conditions(body, patch, [Condition(READY, "False", "Deleting",
                                                          f"hotel {hotel_id} is being de-provisioned")],
                                  meta.get("generation"))
        raise kopf.TemporaryError(f"hotel {hotel_id} is being deleted", delay=api.poll_delay(retry))
