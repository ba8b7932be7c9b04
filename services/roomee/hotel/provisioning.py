"""The hotel's two sagas (seed Flow 1 and the deletion flow), run by the kit's saga engine.

Provisioning, keyed by the hotel id: ``hotel`` (done by ``POST /hotel/add`` itself) → ``qr`` (PNG
uploaded through media) → ``storage`` (``roomee.storage.media``) → ``subscription`` (billing) →
``admin`` (members) → ``announce`` (``hotel.created``, the hotel is ready). The storage step stays
``running`` while subscription and admin run: media applies the quota event meanwhile, and the
step waits for the quota (``settle``) just before ``announce``, or before a failure of either is
handled, so nothing is undone while the event is on its way (a quota created after its release
would be left behind). Each step is idempotent for the hotel id and, when an earlier attempt may have
taken effect (``run.resumed``), looks for that effect before creating anything. A permanent failure
compensates in reverse order (remove the members, cancel the subscription, release the storage,
delete the QR) and then marks the hotel failed with ``hotel.creation_failed``.

Deletion, keyed by the hotel id too: ``members`` → ``subscription`` → ``storage`` → ``qr`` →
``announce`` (``hotel.deleted``); each step retried until it succeeds.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from roomee.hotel import events
from roomee.hotel.models import saga_tables
from roomee.hotel.qr import qr_png
from roomee.hotel.repository import HotelRepository, retract_unpublished_event
from roomee.kit.clock import utcnow
from roomee.kit.errors import UpstreamError
from roomee.kit.http import raise_for_status
from roomee.kit.platform import ServiceContext
from roomee.kit.saga import RetryStep, SagaDefinition, SagaEngine, SagaPolicy, SagaStep, StepResult, StepRun

PROVISIONING = "hotel-provisioning"
DELETION = "hotel-deletion"
PLANS_CACHE_SECONDS = 60.0
# Calls of the sagas in flight to one service at once, per process. A burst of hotels queues here
# rather than in the callee: members creates its members one at a time (a row lock on its change
# counter), and 100 adds at once waited there past the 3 s call timeout, opened the circuit breaker
# and came back as retries (17 to 43 of 100 hotels retried their admin step in a run).
CALLS_IN_FLIGHT = 8


def policy_of(ctx: ServiceContext) -> SagaPolicy:
    s = ctx.settings
    return SagaPolicy(
        lease_seconds=s.saga_lease_seconds, max_attempts=s.saga_max_attempts,
        backoff_base_seconds=s.saga_backoff_base_seconds, backoff_max_seconds=s.saga_backoff_max_seconds,
        poll_interval_seconds=s.saga_poll_interval_seconds, retry_later_base_seconds=s.saga_retry_later_base_seconds,
        retry_later_max_seconds=s.saga_retry_later_max_seconds, retry_later_limit_seconds=s.saga_retry_later_limit_seconds,
    )


def _qr_key(hotel_id: str, data: dict[str, Any]) -> str:
    """Media's idempotency key of the QR upload: one per provisioning generation (a hotel run again
    after an undo uploads anew; the first generation keeps the key it always had)."""
    generation = data.get("generation", 0)
    return f"hotel-qr:{hotel_id}" if not generation else f"hotel-qr:{hotel_id}:{generation}"


def _gone_is_fine(response: httpx.Response) -> None:
    """Compensations and deletions are idempotent: what is already gone is done."""
    if response.status_code != 404:
        raise_for_status(response)


class _Bounded:
    """A service client whose calls wait for one of the slots of their target."""

    def __init__(self, client: Any, slots: asyncio.Semaphore) -> None:
        self._client, self._slots = client, slots

    async def get(self, path: str, **kwargs: Any) -> httpx.Response:
        async with self._slots:
            return await self._client.get(path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> httpx.Response:
        async with self._slots:
            return await self._client.post(path, **kwargs)

    async def delete(self, path: str, **kwargs: Any) -> httpx.Response:
        async with self._slots:
            return await self._client.delete(path, **kwargs)


class Provisioner:
    """The steps' calls to media, billing and members, and the local writes they commit with."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self._plans: dict[str, dict] = {}
        self._plans_at = 0.0
        self._slots: dict[str, asyncio.Semaphore] = {}
        self.provisioning = SagaEngine(ctx.db, self.provisioning_saga(), saga_tables, policy_of(ctx))
        self.deletion = SagaEngine(ctx.db, self.deletion_saga(), saga_tables, policy_of(ctx),
                                   owner=self.provisioning.owner)

    def client(self, target: str) -> "_Bounded":
        """The service client of ``target``, at most :data:`CALLS_IN_FLIGHT` calls at once."""
        slots = self._slots.get(target)
        if slots is None:
            slots = self._slots[target] = asyncio.Semaphore(CALLS_IN_FLIGHT)
        return _Bounded(self.ctx.client(target), slots)

    # -- shared look-ups -------------------------------------------------------------------------

    async def plans(self) -> dict[str, dict]:
        """Billing's catalogue (``GET /sub/plans``), cached for a minute."""
        if not self._plans or time.monotonic() - self._plans_at > PLANS_CACHE_SECONDS:
            response = raise_for_status(await self.client("billing").get("/sub/plans"))
            body = response.json()
            items = body.get("items", []) if isinstance(body, dict) else body
            self._plans = {plan["id"]: plan for plan in items}
            self._plans_at = time.monotonic()
        return self._plans

    async def storage_quota(self, plan: str) -> dict[str, Any]:
        found = (await self.plans()).get(plan)
        if found is None:
            raise UpstreamError(f"billing has no plan '{plan}'")
        quota = found["storageQuota"]
        return {"max_size": int(quota["maxSize"]), "unit": quota.get("unit", "MO")}

    def _update_hotel(self, hotel_id: str, **values: Any):
        async def apply(session: AsyncSession) -> None:
            await HotelRepository(session).update(hotel_id, {**values, "updated_at": utcnow()})

        return apply

    # -- provisioning ----------------------------------------------------------------------------

    def provisioning_saga(self) -> SagaDefinition:
        return SagaDefinition(
            PROVISIONING,
            (
                SagaStep("hotel", self._nothing),
                SagaStep("qr", self.upload_qr, self.delete_qr),
                # Media applies the quota event while subscription and admin run: waited for before announce.
                SagaStep("storage", self.create_storage, self.release_storage, settle=self.wait_for_storage,
                         settle_before="announce"),
                SagaStep("subscription", self.assign_subscription, self.cancel_subscription),
                SagaStep("admin", self.create_admin, self.remove_members),
                SagaStep("announce", self.announce_created),
            ),
            on_failed=self.mark_failed,
            retry_later=True, on_waiting=self.mark_waiting, on_resumed=self.mark_resumed,
        )

    async def _nothing(self, run: StepRun) -> StepResult:
        return StepResult(external_id=run.key)

    async def upload_qr(self, run: StepRun) -> StepResult:
        hotel_id = run.key
        # Media keeps one object per idempotency key: a retry whose first answer was lost gets it back.
        form = httpx.Request(
            "POST", "http://media/media/upload",
            data={"ecosystemId": hotel_id, "public": "true", "idempotencyKey": _qr_key(hotel_id, run.data)},
            files={"file": (f"qr-{hotel_id}.png", qr_png(run.data["joinLink"]), "image/png")},
        )
        body = form.read()
        response = raise_for_status(await self.client("media").post(
            "/media/upload", content=body, headers={"Content-Type": form.headers["Content-Type"]},
        ))
        media = response.json()
        return StepResult(
            external_id=media["id"], data={"qrMediaId": media["id"], "qrLink": media["fileUrl"]},
            apply=self._update_hotel(hotel_id, qr_link=media["fileUrl"], qr_media_id=media["id"]),
        )

    async def delete_qr(self, run: StepRun) -> None:
        media = self.client("media")
        if run.external_id:
            _gone_is_fine(await media.delete("/media/{id}", path_params={"id": run.external_id}))
        else:
            # The upload's answer was lost, so its id is unknown: remove every object of the hotel.
            _gone_is_fine(await media.delete("/media/storage/{ecosystemId}", path_params={"ecosystemId": run.key}))

    async def create_storage(self, run: StepRun) -> StepResult:
        """Emit ``roomee.storage.media`` (once per attempt's intent); :meth:`wait_for_storage` waits for
        media's quota after the subscription and admin steps, which run meanwhile."""
        if run.external_id is None:
            hotel_id, event_id = run.key, str(uuid.uuid4())
            quota = await self.storage_quota(run.data["plan"])

            async def emit_quota(session: AsyncSession) -> None:
                await events.emit_storage_quota(session, event_id=event_id, hotel_id=hotel_id, **quota)

            # The event id is stored with the event itself: it is emitted once, whatever happens next.
            await run.remember(event_id, apply=emit_quota)
        return StepResult(external_id=run.external_id)

    async def wait_for_storage(self, run: StepRun) -> StepResult:
        """Until media has the quota (the storage step's ``settle``, run before ``announce``)."""
        hotel_id = run.key
        quota = await self.storage_quota(run.data["plan"])
        media = self.client("media")
        deadline = time.monotonic() + self.ctx.settings.hotel_storage_wait_seconds
        # Media has usually applied the event by the time subscription and admin are done: the first
        # read finds it. Otherwise backing off to 0.5 s keeps a burst of sagas from flooding media.
        pause = 0.02
        while True:
            response = await media.get("/media/storage/{ecosystemId}", path_params={"ecosystemId": hotel_id})
            # A quota row may exist before the event (the QR counts as usage): wait for its size.
            if response.status_code == 200 and response.json().get("maxSize") == quota["max_size"]:
                return StepResult(external_id=run.external_id, data={"storageQuota": quota})
            if response.status_code not in (200, 404):
                raise_for_status(response)
            if time.monotonic() >= deadline:
                raise RetryStep("media has not created the storage quota yet (is the broker up?)")
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.5)

    async def release_storage(self, run: StepRun) -> None:
        if run.external_id:
            async with self.ctx.db.transaction() as session:
                # Not published yet (the broker is down): take it back, so no quota appears later.
                await retract_unpublished_event(session, run.external_id)
        media = self.client("media")
        _gone_is_fine(await media.delete("/media/storage/{ecosystemId}", path_params={"ecosystemId": run.key}))

    async def assign_subscription(self, run: StepRun) -> StepResult:
        hotel_id = run.key
        billing = self.client("billing")
        subscription = None
        if run.resumed:
            found = await billing.get("/sub/customers/{customerId}/subscription",
                                      path_params={"customerId": hotel_id})
            if found.status_code != 404:
                subscription = raise_for_status(found).json()
                if subscription.get("status") == "canceled":
                    subscription = None
        if subscription is None:
            subscription = raise_for_status(await billing.post("/sub/assign-subscription/", json={
                "customerId": hotel_id, "productId": run.data["plan"], "email": run.data["email"],
                "name": run.data["name"], "generation": run.data.get("generation", 0),
            })).json()
        return StepResult(
            external_id=subscription["id"], data={"subscriptionId": subscription["id"]},
            apply=self._update_hotel(hotel_id, subscription_id=subscription["id"]),
        )

    async def cancel_subscription(self, run: StepRun) -> None:
        """Undo: billing cancels the subscription, deletes the Stripe customer and refuses a late assign
        of this attempt (one whose answer the saga never saw may still be on its way)."""
        await self.close_billing(run.key, generation=run.data.get("generation", 0))

    async def close_billing(self, hotel_id: str, generation: int | None) -> None:
        """``DELETE /sub/customers/{id}``: of one provisioning attempt, or (None) of the hotel for good."""
        params = {"generation": generation} if generation is not None else None
        raise_for_status(await self.client("billing").delete(
            "/sub/customers/{customerId}", path_params={"customerId": hotel_id}, params=params))

    async def _hotel_members(self, hotel_id: str) -> list[dict]:
        """The seed's ``GET /members/get/by/hotel_id/{id}``, every page."""
        members, cursor, found = self.client("members"), None, []
        while True:
            page = raise_for_status(await members.get(
                "/members/get/by/hotel_id/{id}", path_params={"id": hotel_id},
                params={"cursor": cursor} if cursor else None,
            )).json()
            found += page["items"]
            cursor = page.get("nextCursor")
            if not cursor:
                return found

    async def _find_admin(self, hotel_id: str, email: str) -> dict | None:
        email = email.strip().lower()
        return next((m for m in await self._hotel_members(hotel_id) if m["email"] == email and m["isAdmin"]), None)

    async def create_admin(self, run: StepRun) -> StepResult:
        hotel_id = run.key
        admin = run.data["administrator"]
        member = await self._find_admin(hotel_id, admin["email"]) if run.resumed else None
        if member is None:
            created = raise_for_status(await self.client("members").post("/members/add/hotel/member", json={
                "hotelId": hotel_id, "hotelName": run.data["name"], "workspaceName": run.data["name"],
                "email": admin["email"], "firstName": admin["firstName"], "lastName": admin["lastName"],
                "locale": admin.get("locale") or "fr", "dashboardAccess": True, "isAdmin": True,
                "sendInvitation": admin.get("sendInvitation", True),
            })).json()
            member = created["member"]
            workspace_name = created["workspace"]["name"]
        else:
            workspace_name = member.get("workspaceName") or run.data["name"]
        return StepResult(
            external_id=member["id"],
            data={"adminMemberId": member["id"], "adminWorkspaceId": member["workspaceId"],
                  "adminWorkspaceName": workspace_name},
            apply=self._update_hotel(hotel_id, admin_member_id=member["id"], admin_workspace_id=member["workspaceId"]),
        )

    async def remove_members(self, run: StepRun) -> None:
        response = await self.client("members").delete("/members/by/hotel_id/{hotel_id}",
                                                           path_params={"hotel_id": run.key})
        _gone_is_fine(response)

    async def announce_created(self, run: StepRun) -> StepResult:
        hotel_id, data = run.key, run.data

        async def apply(session: AsyncSession) -> None:
            repository = HotelRepository(session)
            await repository.update(hotel_id, {"status": "ready", "error": None, "updated_at": utcnow()})
            hotel = await repository.get(hotel_id)
            await events.publish(
                session, events.HOTEL_CREATED, hotel, workspace_id=data["adminWorkspaceId"],
                workspace_name=data.get("adminWorkspaceName"), receiver_ids=[data["adminMemberId"]],
            )

        return StepResult(apply=apply)

    async def mark_waiting(self, session: AsyncSession, hotel_id: str, data: dict[str, Any], error: str | None) -> None:
        """A provider outage outlasted the step's attempts: ``failed`` until the saga retries it later
        (``nextRetryAt`` in the provisioning document), or ``POST /hotel/{id}/retry``."""
        await HotelRepository(session).update(hotel_id, {"status": "failed", "error": error, "updated_at": utcnow()})

    async def mark_resumed(self, session: AsyncSession, hotel_id: str, data: dict[str, Any], error: str | None) -> None:
        await HotelRepository(session).update(hotel_id, {"status": "provisioning", "error": None, "updated_at": utcnow()})

    async def mark_failed(self, session: AsyncSession, hotel_id: str, data: dict[str, Any], error: str | None) -> None:
        repository = HotelRepository(session)
        await repository.update(hotel_id, {"status": "failed", "error": error, "updated_at": utcnow()})
        hotel = await repository.get(hotel_id)
        await events.publish(session, events.HOTEL_CREATION_FAILED, hotel,
                             extra={"error": error, "step": (error or "").partition(":")[0]})

    # -- deletion --------------------------------------------------------------------------------

    def deletion_saga(self) -> SagaDefinition:
        return SagaDefinition(
            DELETION,
            (
                SagaStep("members", self.delete_members),
                SagaStep("subscription", self.delete_subscription),
                SagaStep("storage", self.delete_storage),
                SagaStep("qr", self.delete_qr_object),
                SagaStep("announce", self.announce_deleted),
            ),
            compensate=False,
        )

    async def delete_members(self, run: StepRun) -> StepResult:
        """The seed's deletion flow: read the hotel's members, then remove them."""
        # Read before removing: hotel.deleted is sent to them.
        removed = run.data.get("memberIds") or [m["id"] for m in await self._hotel_members(run.key)]
        await self.remove_members(run)
        return StepResult(external_id=str(len(removed)), data={"memberIds": removed})

    async def delete_subscription(self, run: StepRun) -> StepResult:
        await self.close_billing(run.key, generation=None)
        return StepResult()

    async def delete_storage(self, run: StepRun) -> StepResult:
        media = self.client("media")
        _gone_is_fine(await media.delete("/media/storage/{ecosystemId}", path_params={"ecosystemId": run.key}))
        return StepResult()

    async def delete_qr_object(self, run: StepRun) -> StepResult:
        if run.data.get("qrMediaId"):
            media = self.client("media")
            _gone_is_fine(await media.delete("/media/{id}", path_params={"id": run.data["qrMediaId"]}))
        return StepResult()

    async def announce_deleted(self, run: StepRun) -> StepResult:
        hotel_id, data = run.key, run.data

        async def apply(session: AsyncSession) -> None:
            repository = HotelRepository(session)
            now = utcnow()
            await repository.update(hotel_id, {"status": "deleted", "deleted_at": now, "updated_at": now})
            hotel = await repository.get(hotel_id, include_deleted=True)
            await events.publish(session, events.HOTEL_DELETED, hotel, receiver_ids=data.get("memberIds") or [])

        return StepResult(apply=apply)
