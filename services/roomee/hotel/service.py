"""Business rules of the hotel service (api-hotel): hotels, their provisioning and deletion."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError

from roomee.hotel import events
from roomee.hotel.provisioning import Provisioner
from roomee.hotel.qr import join_link
from roomee.hotel.repository import HotelRepository, IdempotencyRepository
from roomee.kit.auth import Principal
from roomee.kit.clock import as_utc, utcnow
from roomee.kit.errors import Conflict, Forbidden, Gone, NotFound, Unprocessable
from roomee.kit.http import raise_for_status
from roomee.kit.platform import ServiceContext
from roomee.kit.saga import COMPENSATING, RUNNING, WAITING, StepResult, StepRun, describe_step
from roomee.kit.schemas import decode_cursor, encode_cursor

log = logging.getLogger("roomee.hotel")

PROVISION_SCOPE = "hotel:provision"
# A reservation older than this belongs to a request that died before creating its hotel.
IN_FLIGHT_ABANDONED_AFTER = timedelta(seconds=60)


async def setup(ctx: ServiceContext) -> None:
    provisioner = Provisioner(ctx)
    ctx.state["provisioner"] = provisioner

    async def stop() -> None:
        await provisioner.provisioning.stop()
        await provisioner.deletion.stop()

    ctx.on_stop(stop)


def workers(ctx: ServiceContext) -> list:
    provisioner: Provisioner = ctx.state["provisioner"]

    async def purge_idempotency_keys() -> None:
        while True:
            async with ctx.db.transaction() as session:
                await IdempotencyRepository(session).purge_expired(utcnow())
            await asyncio.sleep(600)

    return [provisioner.provisioning.worker, provisioner.deletion.worker, purge_idempotency_keys]


def request_hash(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def present(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "created_at": as_utc(row["created_at"]), "updated_at": as_utc(row["updated_at"])}


def accepted(row: dict[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], "name": row["name"], "status": row["status"], "plan": row["plan"],
            "qr_link": row["qr_link"], "links": {"provisioning": provisioning_path(row["id"])}}


def raise_key_deleted() -> None:
    raise Gone("the hotel of this Idempotency-Key was deleted; use a new key", code="idempotency_key_deleted")


def provisioning_path(hotel_id: str) -> str:
    return f"/hotel/{hotel_id}/provisioning"


class HotelService:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.db = ctx.db
        self.provisioner: Provisioner = ctx.state["provisioner"]

    # -- reading ---------------------------------------------------------------------------------

    def _authorize_read(self, principal: Principal, hotel_id: str) -> None:
        """A platform service with ``hotel:provision``, or a member of that very hotel."""
        if principal.is_service:
            if not principal.has_scope(PROVISION_SCOPE):
                raise Forbidden(f"service scope '{PROVISION_SCOPE}' required", code="insufficient_scope")
        elif principal.hotel_id != hotel_id:
            raise NotFound("hotel not found")

    async def _visible(self, session, principal: Principal, hotel_id: str) -> dict:
        self._authorize_read(principal, hotel_id)
        found = await HotelRepository(session).get(hotel_id)
        if found is None or found["status"] == "deleted":
            raise NotFound("hotel not found")
        return found

    async def get(self, principal: Principal, hotel_id: str) -> dict:
        async with self.db.transaction() as session:
            return present(await self._visible(session, principal, hotel_id))

    async def list(self, *, cursor: str | None, limit: int, status: str | None) -> dict:
        after = decode_cursor(cursor)
        if after is not None:
            try:
                after = (datetime.fromisoformat(after[0]), str(after[1]))
            except (ValueError, TypeError, IndexError):
                raise Unprocessable("invalid cursor", code="invalid_cursor") from None
        async with self.db.transaction() as session:
            rows = await HotelRepository(session).page(after=after, limit=limit, status=status)
        next_cursor = None
        if len(rows) == limit:
            next_cursor = encode_cursor(as_utc(rows[-1]["created_at"]).isoformat(), rows[-1]["id"])
        return {"items": [present(r) for r in rows], "next_cursor": next_cursor}

    async def provisioning(self, principal: Principal, hotel_id: str) -> dict:
        async with self.db.transaction() as session:
            hotel = await self._visible(session, principal, hotel_id)
            creation = await self.provisioner.provisioning.state(session, hotel_id)
            deletion = await self.provisioner.deletion.state(session, hotel_id)
        waiting = creation is not None and creation[0]["status"] == WAITING
        return {
            "hotel_id": hotel_id,
            "status": hotel["status"],
            "next_retry_at": as_utc(creation[0]["next_attempt_at"]) if waiting else None,
            "steps": [describe_step(s) for s in creation[1]] if creation else [],
            "qr_link": hotel["qr_link"],
            "subscription_id": hotel["subscription_id"],
            "admin_member_id": hotel["admin_member_id"],
            "error": hotel["error"],
            "deletion_steps": [describe_step(s) for s in deletion[1]] if deletion else None,
        }

    # -- creating --------------------------------------------------------------------------------

    async def add(self, caller: Principal, body: dict[str, Any], idempotency_key: str | None) -> tuple[dict, bool]:
        """Create the hotel and start its provisioning; ``(hotel, replayed)``.

        With an ``Idempotency-Key``: the same key and body give the same hotel (``replayed``); a key
        whose first request is still being handled answers 409; the key with another body, 422.
        """
        digest = request_hash(body)
        if idempotency_key:
            replay = await self._reserve_key(caller.subject, idempotency_key, digest)
            if replay is not None:
                return accepted(replay), True
        hotel_id = str(uuid.uuid4())
        now = utcnow()
        admin = body["administrator"]
        row = {
            "id": hotel_id, "name": body["name"], "email": body["email"], "phone": body["phone"],
            "address": body["address"], "type": body.get("type"), "settings": body.get("settings"),
            "plan": body["plan"], "status": "provisioning", "administrator": admin,
            "created_at": now, "updated_at": now,
        }
        saga_data = {
            "name": body["name"], "email": body["email"], "plan": body["plan"], "administrator": admin,
            "joinLink": self._join_link(hotel_id),
        }
        async with self.db.transaction() as session:
            if idempotency_key:
                await self._refuse_deleted_key(session, caller.subject, idempotency_key)
            await HotelRepository(session).insert(row)
            await self.provisioner.provisioning.start(session, hotel_id, saga_data, done={"hotel": hotel_id})
            if idempotency_key:
                await IdempotencyRepository(session).update(
                    caller.subject, idempotency_key, {"state": "done", "hotel_id": hotel_id}
                )
        log.info("hotel provisioning started", extra={"hotel_id": hotel_id, "plan": body["plan"]})
        return accepted({**row, "qr_link": None}), False

    def _join_link(self, hotel_id: str) -> str:
        join_base = self.ctx.settings.hotel_join_url or f"{self.ctx.settings.base_url}/join"
        return join_link(join_base, hotel_id)

    async def _reserve_key(self, caller: str, key: str, digest: str) -> dict | None:
        """Reserve ``key`` for this request, or return the hotel an identical earlier request made."""
        for _ in range(3):
            now = utcnow()
            try:
                async with self.db.transaction() as session:
                    keys = IdempotencyRepository(session)
                    await keys.lock()
                    found = await keys.get(caller, key)
                    if found is not None and as_utc(found["expires_at"]) < now:
                        await keys.delete(caller, key)
                        found = None
                    if found is None:
                        await keys.insert({
                            "caller": caller, "key": key, "request_hash": digest, "state": "in_flight",
                            "created_at": now,
                            "expires_at": now + timedelta(seconds=self.ctx.settings.hotel_idempotency_ttl_seconds),
                        })
                        return None
                    if found["state"] == "deleted":
                        raise_key_deleted()
                    if found["request_hash"] != digest:
                        raise Unprocessable("this Idempotency-Key was used with another request body",
                                            code="idempotency_key_reused")
                    if found["state"] == "done":
                        hotel = await HotelRepository(session).get(found["hotel_id"], include_deleted=True)
                        return hotel
                    if now - as_utc(found["created_at"]) < IN_FLIGHT_ABANDONED_AFTER:
                        raise Conflict("a request with this Idempotency-Key is still being handled; retry shortly",
                                       code="idempotency_key_in_flight", headers={"Retry-After": "1"})
                    await keys.update(caller, key, {"created_at": now})
                    return None
            except IntegrityError:
                continue  # another request reserved the key between our read and insert: read again
        raise Conflict("a request with this Idempotency-Key is still being handled; retry shortly",
                       code="idempotency_key_in_flight", headers={"Retry-After": "1"})

    @staticmethod
    async def _refuse_deleted_key(session, caller: str, key: str) -> None:
        """In the transaction creating the hotel: a delete of the key that came meanwhile wins."""
        keys = IdempotencyRepository(session)
        await keys.lock()
        current = await keys.get(caller, key, for_update=True)
        if current is None or current["state"] == "deleted":
            raise_key_deleted()

    async def find_by_key(self, caller: Principal, key: str) -> dict:
        """The hotel that ``POST /hotel/add`` with this caller's ``Idempotency-Key`` created."""
        async with self.db.transaction() as session:
            found = await IdempotencyRepository(session).get(caller.subject, key)
            if found is None or found["state"] != "done":
                raise NotFound("no hotel was added with this Idempotency-Key", code="idempotency_key_unknown")
            return present(await self._visible(session, caller, found["hotel_id"]))

    async def delete_by_key(self, caller: Principal, key: str) -> dict | None:
        """Delete whatever ``POST /hotel/add`` with this ``Idempotency-Key`` made or is making.

        No hotel yet (the add is in flight, or not even sent): the key is marked deleted, so that
        add creates nothing and a later one answers 410; None. A hotel: its deletion as
        :meth:`delete` (409 while it is provisioning); None once it is deleted.
        """
        for _ in range(3):
            try:
                async with self.db.transaction() as session:
                    keys = IdempotencyRepository(session)
                    await keys.lock()
                    found = await keys.get(caller.subject, key, for_update=True)
                    if found is None:
                        now = utcnow()
                        await keys.insert({
                            "caller": caller.subject, "key": key, "request_hash": "", "state": "deleted",
                            "created_at": now,
                            "expires_at": now + timedelta(seconds=self.ctx.settings.hotel_idempotency_ttl_seconds),
                        })
                    elif found["state"] == "in_flight":
                        await keys.update(caller.subject, key, {"state": "deleted"})
                break
            except IntegrityError:
                continue  # an add reserved the key between our read and insert: read again
        else:
            raise Conflict("the Idempotency-Key is being reserved; retry shortly", code="idempotency_key_in_flight",
                           headers={"Retry-After": "1"})
        if found is None or found["state"] != "done":
            return None
        try:
            return await self.delete(caller, found["hotel_id"])
        except NotFound:
            return None

    async def kick(self, hotel_id: str) -> None:
        """Start provisioning in this process now (after the response; the worker would in a second)."""
        self.provisioner.provisioning.kick(hotel_id)

    # -- changing --------------------------------------------------------------------------------

    async def update(self, caller: Principal, hotel_id: str, changes: dict[str, Any]) -> dict:
        async with self.db.transaction() as session:
            found = await self._visible(session, caller, hotel_id)
        if found["status"] in ("deleting", "deleted"):
            raise NotFound("hotel not found")
        new_plan = changes.get("plan")
        quota = None
        if new_plan and new_plan != found["plan"]:
            if found["status"] != "ready":
                raise Conflict(f"the plan can change once the hotel is ready (it is {found['status']})",
                               code="hotel_not_ready")
            billing = self.ctx.client("billing")
            raise_for_status(await billing.post("/sub/customers/{customerId}/change-plan",
                                                path_params={"customerId": hotel_id}, json={"productId": new_plan}))
            quota = await self.provisioner.storage_quota(new_plan)
        elif new_plan:
            changes.pop("plan")
        if not changes:
            return present(found)
        changes["updated_at"] = utcnow()
        async with self.db.transaction() as session:
            repository = HotelRepository(session)
            await repository.update(hotel_id, changes)
            updated = await repository.get(hotel_id)
            if quota is not None:
                await events.emit_storage_quota(session, event_id=str(uuid.uuid4()), hotel_id=hotel_id, **quota)
            await events.publish(
                session, events.HOTEL_UPDATED, updated, extra={"changes": sorted(k for k in changes if k != "updated_at")},
                workspace_id=updated["admin_workspace_id"],
                receiver_ids=[updated["admin_member_id"]] if updated["admin_member_id"] else [],
            )
        return present(updated)

    async def delete(self, caller: Principal, hotel_id: str) -> dict:
        async with self.db.transaction() as session:
            await HotelRepository(session).lock()
            found = await self._visible(session, caller, hotel_id)
            if found["status"] == "provisioning":
                raise Conflict("the hotel is still being provisioned; delete it once it is ready or failed",
                               code="hotel_provisioning", headers={"Retry-After": "5"})
            if found["status"] == "failed":
                await self._end_waiting_provisioning(session, hotel_id)
            if found["status"] != "deleting":
                await HotelRepository(session).update(hotel_id, {"status": "deleting", "updated_at": utcnow()})
                await self.provisioner.deletion.start(session, hotel_id, {"qrMediaId": found["qr_media_id"]})
                found = {**found, "status": "deleting"}
        return found

    async def _end_waiting_provisioning(self, session, hotel_id: str) -> None:
        """A failed hotel's provisioning may be waiting to retry: end it (the deletion undoes what it
        made). A worker that took it up meanwhile wins: the hotel is provisioning again (409)."""
        engine = self.provisioner.provisioning
        if await engine.abandon(session, hotel_id, "abandoned: the hotel was deleted"):
            return
        found = await engine.state(session, hotel_id)
        if found is not None and found[0]["status"] in (RUNNING, COMPENSATING):
            raise Conflict("the hotel is being provisioned again; delete it once it is ready or failed",
                           code="hotel_provisioning", headers={"Retry-After": "5"})

    async def retry(self, caller: Principal, hotel_id: str) -> dict:
        """Provision a failed hotel again without a new submission: a saga waiting after an outage
        retries now; an undone (compensated) one runs again from its first step, as the next
        generation (billing refuses late requests of the undone one)."""
        async with self.db.transaction() as session:
            hotels = HotelRepository(session)
            await hotels.lock()
            found = await self._visible(session, caller, hotel_id)
            if found["status"] != "failed":
                raise Conflict(f"only a failed hotel is retried (it is {found['status']})", code="hotel_not_failed")
            engine = self.provisioner.provisioning
            if not await engine.retry_now(session, hotel_id):
                state = await engine.state(session, hotel_id)
                generation = state[0]["data"].get("generation", 0) + 1 if state else 1
                if not await engine.restart(session, hotel_id, {"generation": generation}):
                    raise Conflict("the hotel's provisioning is already running again", code="hotel_not_failed")
                await hotels.update(hotel_id, {"status": "provisioning", "error": None, "updated_at": utcnow()})
            found = await hotels.get(hotel_id)
        log.info("hotel provisioning retried", extra={"hotel_id": hotel_id})
        return present(found)

    async def kick_deletion(self, hotel_id: str) -> None:
        self.provisioner.deletion.kick(hotel_id)

    # -- health and repair -----------------------------------------------------------------------
    # A ready hotel's subscription may be canceled in Stripe and its QR code deleted from storage
    # behind the platform's back; both are checked against their owners (billing asks Stripe, media
    # its storage) and repaired by the same steps provisioning ran.

    async def _ready_hotel(self, principal: Principal, hotel_id: str) -> dict:
        async with self.db.transaction() as session:
            hotel = await self._visible(session, principal, hotel_id)
        if hotel["status"] != "ready":
            raise Conflict(f"only a ready hotel is checked and repaired (it is {hotel['status']})",
                           code="hotel_not_ready")
        return hotel

    async def _saga_data(self, hotel_id: str) -> dict:
        """The provisioning saga's data, which the repaired steps run with."""
        async with self.db.transaction() as session:
            state = await self.provisioner.provisioning.state(session, hotel_id)
        return state[0]["data"] if state else {}

    async def _check_subscription(self, hotel: dict, *, refresh: bool) -> dict:
        # refresh: billing asks Stripe (a cancel whose webhook never came); else billing's own record.
        found = await self.ctx.client("billing").get(
            "/sub/customers/{customerId}/subscription", path_params={"customerId": hotel["id"]},
            params={"refresh": "true"} if refresh else None)
        if found.status_code == 404:
            return _check("subscription", False, "SubscriptionMissing", "billing has no subscription for the hotel")
        subscription = raise_for_status(found).json()
        detail = f"subscription {subscription['id']} ({subscription['productId']}) is {subscription['status']}"
        if subscription["endedAt"] is not None:
            return _check("subscription", False, "SubscriptionCancelled", detail)
        return _check("subscription", True, None, detail)

    async def _check_qr(self, hotel: dict) -> dict:
        media_id = hotel["qr_media_id"]
        if not media_id:
            return _check("qr", False, "QRMissing", "the hotel has no QR code")
        found = await self.ctx.client("media").get("/media/{id}/object", path_params={"id": media_id})
        if found.status_code == 404:
            return _check("qr", False, "QRMissing", f"media {media_id} (the QR code) no longer exists")
        if not raise_for_status(found).json()["stored"]:
            return _check("qr", False, "QRMissing", f"the object of media {media_id} (the QR code) is gone from storage")
        return _check("qr", True, None, f"media {media_id} is stored")

    async def _checks(self, hotel: dict, *, refresh: bool) -> list[dict]:
        return list(await asyncio.gather(self._check_subscription(hotel, refresh=refresh), self._check_qr(hotel)))

    async def health(self, principal: Principal, hotel_id: str) -> dict:
        """A provisioner (the operator's drift check) has billing ask Stripe; a member reads billing's record,
        so reading a hotel's health costs its members no provider call."""
        hotel = await self._ready_hotel(principal, hotel_id)
        return _health(hotel, await self._checks(hotel, refresh=principal.has_scope(PROVISION_SCOPE)), [])

    async def repair(self, caller: Principal, hotel_id: str) -> dict:
        """Check the hotel, then redo what is broken: a new subscription on the hotel's plan (with its
        storage quota again), the QR code generated and uploaded again. Idempotent: a healthy hotel is
        left as it is, and two repairs at once make one subscription and one QR code."""
        hotel = await self._ready_hotel(caller, hotel_id)
        checks = await self._checks(hotel, refresh=True)
        if all(check["healthy"] for check in checks):
            return _health(hotel, checks, [])
        saga_data = await self._saga_data(hotel_id)
        repaired = []
        for check in checks:
            if check["healthy"]:
                continue
            if check["name"] == "subscription":
                await self._repair_subscription(hotel, saga_data)
            else:
                await self._repair_qr(hotel, saga_data)
            repaired.append(check["name"])
        async with self.db.transaction() as session:
            hotel = await HotelRepository(session).get(hotel_id)
            await events.publish(
                session, events.HOTEL_UPDATED, hotel,
                extra={"changes": sorted({"subscription": "subscriptionId", "qr": "qrLink"}[r] for r in repaired)},
                workspace_id=hotel["admin_workspace_id"],
                receiver_ids=[hotel["admin_member_id"]] if hotel["admin_member_id"] else [],
            )
        log.info("hotel repaired", extra={"hotel_id": hotel_id, "repaired": repaired})
        return _health(hotel, await self._checks(hotel, refresh=False), repaired)  # billing recorded the new one

    def _step_run(self, hotel_id: str, name: str, data: dict, *, resumed: bool) -> StepRun:
        """A one-off run of a provisioning step outside its saga (repair uses the steps as they are)."""
        return StepRun(engine=self.provisioner.provisioning, key=hotel_id, name=name, attempt=1, external_id=None,
                       data=data, resumed=resumed)

    async def _apply_if_ready(self, hotel_id: str, result: StepResult, *extra) -> bool:
        """Record a repair's result unless the hotel stopped being ready meanwhile (a delete won)."""
        async with self.db.transaction() as session:
            repository = HotelRepository(session)
            await repository.lock()
            current = await repository.get(hotel_id)
            if current is None or current["status"] != "ready":
                return False
            await result.apply(session)
            for apply in extra:
                await apply(session)
        return True

    async def _repair_subscription(self, hotel: dict, saga_data: dict) -> None:
        # Resumed: billing's current subscription is read first (ended: a new one is assigned), so a
        # repair repeated or run twice at once adopts the one billing has.
        data = {**saga_data, "plan": hotel["plan"], "email": hotel["email"], "name": hotel["name"]}
        result = await self.provisioner.assign_subscription(self._step_run(hotel["id"], "subscription", data,
                                                                           resumed=True))
        quota = await self.provisioner.storage_quota(hotel["plan"])

        async def emit_quota(session) -> None:  # an ended subscription left the hotel the free plan's quota
            await events.emit_storage_quota(session, event_id=str(uuid.uuid4()), hotel_id=hotel["id"], **quota)

        if not await self._apply_if_ready(hotel["id"], result, emit_quota):
            raise NotFound("hotel not found")  # deleted meanwhile: billing refuses its late assigns

    async def _repair_qr(self, hotel: dict, saga_data: dict) -> None:
        lost = hotel["qr_media_id"]
        # One media upload key per lost object: a repeated repair gets the same new QR code back.
        data = {**saga_data, "joinLink": saga_data.get("joinLink") or self._join_link(hotel["id"]),
                "generation": f"repair-{lost or 'none'}"}
        result = await self.provisioner.upload_qr(self._step_run(hotel["id"], "qr", data, resumed=False))
        media = self.ctx.client("media")
        if not await self._apply_if_ready(hotel["id"], result):
            await media.delete("/media/{id}", path_params={"id": result.external_id})
            raise NotFound("hotel not found")
        if lost:  # its row still counted the lost object's bytes against the quota
            gone = await media.delete("/media/{id}", path_params={"id": lost})
            if gone.status_code != 404:
                raise_for_status(gone)


def _check(name: str, healthy: bool, reason: str | None, detail: str) -> dict:
    return {"name": name, "healthy": healthy, "reason": reason, "detail": detail}


def _health(hotel: dict, checks: list[dict], repaired: list[str]) -> dict:
    return {"hotel_id": hotel["id"], "status": hotel["status"], "healthy": all(c["healthy"] for c in checks),
            "checks": checks, "repaired": repaired, "qr_link": hotel["qr_link"],
            "subscription_id": hotel["subscription_id"]}
