"""HTTP routes of the hotel service (api-hotel). ``POST /hotel/add`` is the seed's path."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Depends, Header, Path, Query, Response
from fastapi.responses import HTMLResponse

from roomee.hotel import join, schemas
from roomee.hotel.service import PROVISION_SCOPE, HotelService, provisioning_path
from roomee.kit.auth import CurrentPrincipal, Principal, require_service_scope
from roomee.kit.deps import context_of
from roomee.kit.html import html_responses
from roomee.kit.platform import ServiceContext
from roomee.kit.schemas import Page

router = APIRouter(tags=["hotel"])

Context = Annotated[ServiceContext, Depends(context_of("hotel"))]
Provisioner = Annotated[Principal, Depends(require_service_scope(PROVISION_SCOPE))]
Limit = Annotated[int, Query(ge=1, le=200, description="Page size.")]
Cursor = Annotated[str | None, Query(description="The `nextCursor` of the previous page.")]
# As long as the other services accept a hotel id (media, billing, members: 64).
HotelId = Annotated[str, Path(min_length=1, max_length=64, description="The hotel id.")]


async def _service(ctx: Context) -> HotelService:
    return HotelService(ctx)


Hotels = Annotated[HotelService, Depends(_service)]

_AUTH = {401: {"description": "No or an invalid bearer token."},
         403: {"description": "Not a platform service holding `hotel:provision`."}}
_READ = {401: _AUTH[401], 403: _AUTH[403],
         404: {"description": "No such hotel, deleted, or another hotel's (a member token)."}}


@router.post(
    "/hotel/add", status_code=202, response_model=schemas.HotelAccepted,
    responses={**_AUTH, 409: {"description": "`idempotency_key_in_flight`: the first request with this key is "
                                             "still being handled (retry after `Retry-After`)."},
               410: {"description": "`idempotency_key_deleted`: the hotel of this key was deleted "
                                    "(`DELETE /hotel/by-idempotency-key/{key}`); nothing was created."},
               422: {"description": "Invalid body, or `idempotency_key_reused` with another body."}},
)
async def add_hotel(
    body: schemas.HotelCreate,
    service: Hotels,
    caller: Provisioner,
    response: Response,
    background: BackgroundTasks,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", min_length=1, max_length=255)] = None,
):
    """Create a hotel and provision it (platform operators' services, scope `hotel:provision`).

    Answers 202 at once with the hotel in status `provisioning`; follow it at `links.provisioning`
    (also the `Location` header). The saga then uploads the QR code, creates the storage quota,
    assigns the subscription, creates the administrator and emits `hotel.created`; on a permanent
    failure it undoes what it did and the hotel ends `failed` (`hotel.creation_failed`).
    With an `Idempotency-Key` (kept 24 h), repeating the request returns the same hotel.
    """
    hotel, replayed = await service.add(caller, body.model_dump(mode="json", by_alias=True), idempotency_key)
    response.headers["Location"] = provisioning_path(hotel["id"])
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    else:
        background.add_task(service.kick, hotel["id"])
    return hotel


@router.get("/hotel", response_model=Page[schemas.HotelOut], responses=_AUTH)
async def list_hotels(
    service: Hotels, _caller: Provisioner, limit: Limit = 50, cursor: Cursor = None,
    status: Annotated[schemas.HotelStatus | None, Query(description="Only hotels in this status.")] = None,
):
    """Hotels, oldest first, paginated by cursor (scope `hotel:provision`)."""
    return await service.list(cursor=cursor, limit=limit, status=status)


IdempotencyKey = Annotated[str, Path(min_length=1, max_length=255, description="The `Idempotency-Key` of `POST /hotel/add`.")]


@router.get("/hotel/by-idempotency-key/{key}", response_model=schemas.HotelOut,
            responses={**_AUTH, 404: {"description": "`idempotency_key_unknown`: no hotel was added with this key "
                                                     "by this caller (yet), or it is deleted."}})
async def get_hotel_by_key(key: IdempotencyKey, service: Hotels, caller: Provisioner):
    """The hotel that this caller's `POST /hotel/add` with this `Idempotency-Key` created
    (scope `hotel:provision`): how a client whose answer was lost finds its hotel."""
    return await service.find_by_key(caller, key)


@router.delete(
    "/hotel/by-idempotency-key/{key}", status_code=202, response_model=schemas.HotelOut,
    responses={**_AUTH, 204: {"description": "No hotel exists for this key (none was added, the add is still in "
                                             "flight, or it is deleted): the key is marked deleted, so that add "
                                             "creates nothing and a later one answers 410."},
               409: {"description": "`hotel_provisioning`: the hotel is still being provisioned; retry after "
                                    "`Retry-After`."}},
)
async def delete_hotel_by_key(key: IdempotencyKey, service: Hotels, caller: Provisioner, background: BackgroundTasks):
    """Delete what this caller's `POST /hotel/add` with this `Idempotency-Key` made or is making
    (scope `hotel:provision`), whatever the timing: before the add, while it is in flight, or
    after its answer was lost. 202 with the hotel being deleted, as `DELETE /hotel/{id}`."""
    hotel = await service.delete_by_key(caller, key)
    if hotel is None:
        return Response(status_code=204)
    background.add_task(service.kick_deletion, hotel["id"])
    return hotel


@router.get("/hotel/{hotel_id}", response_model=schemas.HotelOut, responses=_READ)
async def get_hotel(hotel_id: HotelId, service: Hotels, principal: CurrentPrincipal):
    """A hotel (scope `hotel:provision`, or a member of that hotel)."""
    return await service.get(principal, hotel_id)


@router.get("/hotel/{hotel_id}/provisioning", response_model=schemas.ProvisioningOut, responses=_READ)
async def hotel_provisioning(hotel_id: HotelId, service: Hotels, principal: CurrentPrincipal):
    """Each provisioning step with its status, attempts, last error, external id and timestamps
    (scope `hotel:provision`, or a member of that hotel)."""
    return await service.provisioning(principal, hotel_id)


@router.patch(
    "/hotel/{hotel_id}", response_model=schemas.HotelOut,
    responses={**_READ, 409: {"description": "`hotel_not_ready`: the plan changes once the hotel is ready."},
               422: {"description": "Invalid body."},
               502: {"description": "Billing failed to change the plan."},
               503: {"description": "Billing is unavailable; nothing was changed."}},
)
async def update_hotel(hotel_id: HotelId, body: schemas.HotelUpdate, service: Hotels, caller: Provisioner):
    """Change a hotel's name, contact or plan (scope `hotel:provision`). A new plan goes through
    billing, and the storage quota follows it (`roomee.storage.media`); emits `hotel.updated`."""
    return await service.update(caller, hotel_id, body.model_dump(mode="json", exclude_unset=True))


@router.post(
    "/hotel/{hotel_id}/retry", status_code=202, response_model=schemas.HotelOut,
    responses={**_READ, 409: {"description": "`hotel_not_failed`: only a failed hotel is retried."}},
)
async def retry_hotel(hotel_id: HotelId, service: Hotels, caller: Provisioner, background: BackgroundTasks):
    """Provision a failed hotel again, without a new submission (scope `hotel:provision`): 202.

    A hotel failed by a provider outage longer than a step's retries waits and is retried on its own
    with backoff (`nextRetryAt` in its provisioning document); this retries it now. A hotel whose
    provisioning was undone runs again from its first step (status `provisioning` at once)."""
    hotel = await service.retry(caller, hotel_id)
    background.add_task(service.kick, hotel_id)
    return hotel


_HEALTH = {**_READ, 409: {"description": "`hotel_not_ready`: only a ready hotel is checked and repaired."},
           502: {"description": "Billing, Stripe or media answered with an error; nothing more was changed."},
           503: {"description": "Billing or media is unavailable; retry (the call is idempotent)."}}


@router.get("/hotel/{hotel_id}/health", response_model=schemas.HotelHealthOut, responses=_HEALTH)
async def hotel_health(hotel_id: HotelId, service: Hotels, principal: CurrentPrincipal):
    """Whether what provisioning made still holds (scope `hotel:provision`, or a member of that hotel):
    the subscription still running in Stripe (billing asks it) and the QR code still in storage (media
    checks its object). Changes nothing but billing's record of a subscription Stripe has ended."""
    return await service.health(principal, hotel_id)


@router.post("/hotel/{hotel_id}/repair", response_model=schemas.HotelHealthOut, responses=_HEALTH)
async def repair_hotel(hotel_id: HotelId, service: Hotels, caller: Provisioner):
    """Check a ready hotel and redo what was undone behind the platform's back (scope `hotel:provision`):
    a subscription canceled in Stripe is replaced by a new one on the hotel's plan (the storage quota
    follows), a QR code deleted from storage is generated and uploaded again (new `qrLink`); emits
    `hotel.updated`. Idempotent: `repaired` is empty when nothing needed it."""
    return await service.repair(caller, hotel_id)


@router.delete(
    "/hotel/{hotel_id}", status_code=202, response_model=schemas.HotelOut,
    responses={**_READ, 409: {"description": "`hotel_provisioning`: wait until provisioning ends."}},
)
async def delete_hotel(hotel_id: HotelId, service: Hotels, caller: Provisioner, background: BackgroundTasks):
    """Delete a hotel (scope `hotel:provision`): 202 with status `deleting`, then its members are
    removed, its subscription canceled, its storage and QR code deleted and `hotel.deleted` emitted;
    from then on the hotel answers 404. Follow it at `/hotel/{id}/provisioning` (`deletionSteps`)."""
    hotel = await service.delete(caller, hotel_id)
    background.add_task(service.kick_deletion, hotel_id)
    return hotel


@router.get(
    "/join/{hotel_id}", response_class=HTMLResponse, tags=["join"],
    responses={**html_responses({200: "How staff join this hotel (an HTML page).",
                                 404: "No such hotel (an HTML page, never JSON: a phone's browser opens it)."}),
               307: {"description": "To the app (`ROOMEE_HOTEL_JOIN_APP_URL`), with `?hotelId=<id>`."}},
)
async def join_page(hotel_id: str, ctx: Context) -> Response:
    """What a hotel's QR code opens (no token needed): the hotel's name and how its staff join, or, when
    `ROOMEE_HOTEL_JOIN_APP_URL` is set, a 307 redirect to the app with `?hotelId=`."""
    return join.join_answer(ctx, await join.joinable_hotel(ctx, hotel_id))
