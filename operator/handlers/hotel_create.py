"""Hotel created (or found when the operator starts): ``POST /hotel/add`` once, keyed by the
object's uid, then follow ``GET /hotel/{id}/provisioning`` until the saga ends, mirroring each step
into a condition. kopf re-runs this handler after each TemporaryError (its delay is the poll). A
hotel waiting after a provider outage is retried with backoff (``POST /hotel/{id}/retry``).
A Hotel the hotel service refused is submitted again by the update handler once its spec changes."""

from __future__ import annotations

import time

import kopf

from roomee.operator import hotels
from roomee.operator.conditions import READY, Condition
from roomee.operator.metrics import measured
from roomee.operator.platform import PlatformAPI, backoff, error_detail
from roomee.operator.settings import GROUP, VERSION


async def _submit(api: PlatformAPI, body, spec, uid: str, patch: kopf.Patch, generation: int,
                  retry: int) -> str | None:
    response = await api.call(api.hotel, "POST", "/hotel/add", retry=retry, endpoint="/hotel/add",
                              json=hotels.add_body(dict(spec)), headers={"Idempotency-Key": hotels.idempotency_key(uid)})
    if response.status_code == 409:  # the first request with this key is still running
        raise kopf.TemporaryError(error_detail(response), delay=1)
    if response.status_code in (400, 410, 422):
        hotels.set_conditions(body, patch, [Condition(READY, "False", "Rejected", error_detail(response))], generation)
        patch.status["observedGeneration"] = generation  # seen and refused: an edit submits it again
        # Handled (not a handler failure): kopf records this spec as handled, so an edit runs the update.
        return None
    if response.status_code not in (200, 201, 202):
        raise kopf.TemporaryError(f"POST /hotel/add answered {response.status_code}: {error_detail(response)}",
                                  delay=5)
    hotel_id = response.json()["id"]
    patch.status["hotelId"] = hotel_id
    kopf.event(body, type="Normal", reason="Accepted", message=f"hotel {hotel_id} is being provisioned")
    return hotel_id


async def _retry_after_outage(api: PlatformAPI, memo, body, hotel_id: str, uid: str) -> None:
    """The saga gave up on a provider for now and waits (Ready=False ProviderUnavailable): the hotel
    service retries it on its own, maybe hours later; the operator retries it too
    (``POST /hotel/{id}/retry``), with its own backoff, so the Hotel is ready soon after the provider is
    back without anyone submitting it again. Raises TemporaryError: the saga is followed meanwhile."""
    settings, now = api.settings, time.monotonic()
    attempts, due = memo.outage_retries.get(uid, (0, now + settings.operator_outage_retry_seconds))
    if now >= due:
        response = await api.call(api.hotel, "POST", f"/hotel/{hotel_id}/retry", retry=attempts,
                                  endpoint="/hotel/{id}/retry")
        if response.status_code == 404:
            raise kopf.PermanentError(f"hotel {hotel_id} was deleted outside Kubernetes")
        if response.status_code not in (202, 409):  # 409: running again already (its own retry came first)
            raise kopf.TemporaryError(f"POST /hotel/{hotel_id}/retry answered {response.status_code}: "
                                      f"{error_detail(response)}", delay=settings.operator_outage_retry_seconds)
        attempts += 1
        if response.status_code == 202:
            kopf.event(body, type="Normal", reason="RetryRequested",
                       message=f"hotel {hotel_id}: provisioning retried after a provider outage (retry {attempts})")
        due = now + backoff(attempts, base=settings.operator_outage_retry_seconds,
                            cap=settings.operator_outage_retry_max_seconds)
    memo.outage_retries[uid] = (attempts, due)
    # Read the provisioning again soon (the hotel service's own retry may come first), and at the due time.
    raise kopf.TemporaryError(f"hotel {hotel_id} waits for a provider (retry {attempts})",
                              delay=max(0.05, min(due - now, settings.operator_max_poll_seconds)))


async def provision(api: PlatformAPI, body, spec, status, uid: str, patch: kopf.Patch, generation: int,
                    retry: int, memo) -> None:
    """Submit the Hotel unless its hotel exists, then follow the saga until the hotel is ready."""
    hotel_id = status.get("hotelId") or await _submit(api, body, spec, uid, patch, generation, retry)
    if hotel_id is None:
        return  # refused: Ready=False Rejected until the spec is edited
    response = await api.call(api.hotel, "GET", f"/hotel/{hotel_id}/provisioning", retry=retry,
                              endpoint="/hotel/{id}/provisioning")
    if response.status_code == 404:
        hotels.not_found(body, patch, hotel_id, generation)
        raise kopf.PermanentError(f"hotel {hotel_id} was deleted outside Kubernetes")
    if response.status_code != 200:
        raise kopf.TemporaryError(f"provisioning answered {response.status_code}: {error_detail(response)}",
                                  delay=api.poll_delay(retry))
    document = response.json()
    hotels.mirror(body, patch, document, generation)
    if document["status"] == "failed" and document.get("nextRetryAt"):
        await _retry_after_outage(api, memo, body, hotel_id, uid)
    memo.outage_retries.pop(uid, None)
    if document["status"] == "failed":
        raise kopf.PermanentError(f"provisioning of hotel {hotel_id} failed")
    if document["status"] != "ready":
        raise kopf.TemporaryError(f"hotel {hotel_id} is {document['status']}", delay=api.poll_delay(retry))
    await _converge(api, body, spec, hotel_id, retry)
    patch.status["observedGeneration"] = generation


@kopf.on.resume(GROUP, VERSION, "hotels", id="hotel-resume")
@kopf.on.create(GROUP, VERSION, "hotels", id="hotel-create")
async def create_hotel(body, spec, status, meta, uid, patch: kopf.Patch, memo, retry: int, **_) -> None:
    with measured("hotel", "create"):
        await provision(memo.api, body, spec, status, uid, patch, meta.get("generation"), retry, memo)


async def _converge(api: PlatformAPI, body, spec, hotel_id: str, retry: int) -> None:
    """A spec edited while the hotel was provisioning: send what changed since the POST."""
    response = await api.call(api.hotel, "GET", f"/hotel/{hotel_id}", retry=retry, endpoint="/hotel/{id}")
    if response.status_code != 200:
        return
    changes = hotels.differences(hotels.wanted_fields(dict(spec)), response.json())
    if changes:
        updated = await api.call(api.hotel, "PATCH", f"/hotel/{hotel_id}", retry=retry, endpoint="/hotel/{id}",
                                 json=changes)
        if updated.status_code >= 400:
            raise kopf.TemporaryError(f"PATCH /hotel/{hotel_id} answered {updated.status_code}: "
                                      f"{error_detail(updated)}", delay=1)
        kopf.event(body, type="Normal", reason="Updated", message=f"hotel {hotel_id}: {', '.join(sorted(changes))} updated")
