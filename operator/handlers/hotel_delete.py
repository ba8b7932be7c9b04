"""Hotel deleted: run the hotel service's deletion flow (``DELETE /hotel/{id}``) and keep the
finalizer until it has finished (``GET /hotel/{id}`` answers 404 or status ``deleted``).

Safe at every moment: without ``status.hotelId`` (the delete came before the POST, or the POST's
answer was lost to a timeout or a crash) the hotel is deleted by the POST's ``Idempotency-Key``;
the hotel service then either deletes the hotel that key made or marks the key deleted, so an add
still in flight creates nothing. A hotel still provisioning (or compensating) is deleted once its
saga has ended."""

from __future__ import annotations

import kopf

from roomee.operator import hotels
from roomee.operator.conditions import READY, Condition
from roomee.operator.metrics import measured
from roomee.operator.platform import PlatformAPI, error_detail
from roomee.operator.settings import GROUP, VERSION


def _gone(body, hotel_id: str | None) -> None:
    what = f"hotel {hotel_id} and its tenant data are deleted" if hotel_id else "no hotel was created"
    kopf.event(body, type="Normal", reason="Deprovisioned", message=what)


async def _delete_by_key(api: PlatformAPI, body, uid: str, patch: kopf.Patch, retry: int) -> str | None:
    """The hotel the POST made, being deleted (its id), or None when nothing exists or ever will."""
    key = hotels.idempotency_key(uid)
    response = await api.call(api.hotel, "DELETE", f"/hotel/by-idempotency-key/{key}", retry=retry,
                              endpoint="/hotel/by-idempotency-key/{key}")
    if response.status_code == 204:
        return None
    if response.status_code == 409:  # still provisioning: deletion waits for the saga to end
        raise kopf.TemporaryError(error_detail(response), delay=api.poll_delay(retry) * 5)
    if response.status_code != 202:
        raise kopf.TemporaryError(f"DELETE by key answered {response.status_code}: {error_detail(response)}",
                                  delay=api.poll_delay(retry) * 5)
    hotel_id = response.json()["id"]
    patch.status["hotelId"] = hotel_id
    return hotel_id


@kopf.on.delete(GROUP, VERSION, "hotels", id="hotel-delete")
async def delete_hotel(body, status, meta, uid, patch: kopf.Patch, memo, retry: int, **_) -> None:
    with measured("hotel", "delete"):
        api: PlatformAPI = memo.api
        hotel_id = status.get("hotelId")
        if not hotel_id:
            hotel_id = await _delete_by_key(api, body, uid, patch, retry)
            if hotel_id is None:
                _gone(body, None)
                return
        current = await api.call(api.hotel, "GET", f"/hotel/{hotel_id}", retry=retry, endpoint="/hotel/{id}")
        if current.status_code == 404 or (current.status_code == 200 and current.json()["status"] == "deleted"):
            _gone(body, hotel_id)
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
