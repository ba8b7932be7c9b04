"""Drift tells the truth: a Hotel whose subscription is canceled directly in Stripe (localstripe,
through the SDK), or whose QR code is deleted from media's storage (local files, or straight in the
fake-gcs-server bucket through the GCS SDK), turns Ready=False with the reason
and a Warning Event, then the operator repairs it through the hotel service (a new subscription on the
spec's plan; the QR code uploaded again, status.qrLink updated) and Ready=True returns with one
DriftCorrected Event. Real kubectl against the stand-in, the real platform, localstripe."""

from __future__ import annotations

import asyncio
import json

from tests.billing.test_closure import stripe_leftovers
from tests.fixtures.gcs import fake_gcs, gcs_settings  # noqa: F401 (fixture)
from tests.fixtures.platform import make_settings, running_platform
from tests.fixtures.stripe import WEBHOOK_SECRET, localstripe  # noqa: F401 (fixture)
from tests.hotel.support import FAST_SAGA
from tests.hotel.test_repair import cancel_in_stripe, delete_qr_object
from tests.k8s_operator.test_hotel_lifecycle import EXAMPLE, NAME, condition, eventually, stored

DRIFT_INTERVAL = 0.5  # seconds (tests.fixtures.kube.operator_running's; production: 30)


def ready_reason(kube) -> tuple[str, str]:
    ready = condition(stored(kube), "Ready")
    return ready.get("status"), ready.get("reason")


def events(kube, reason: str) -> list[dict]:
    return [e for e in kube.api.events_for(NAME) if e["reason"] == reason]


async def broken_then_repaired(kube, reason: str) -> tuple[float, float]:
    """Seconds from now to Ready=False with ``reason``, and to Ready=True (DriftCorrected) after it."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    await eventually(lambda: ready_reason(kube) == ("False", reason), timeout=30, interval=0.02)
    broken = loop.time()
    await kube.kubectl("wait", "--for=jsonpath={.status.conditions[?(@.type==\"Ready\")].reason}=DriftCorrected",
                       f"hotel/{NAME}", "--timeout=60s")
    assert ready_reason(kube) == ("True", "DriftCorrected")
    return broken - started, loop.time() - broken


async def test_a_subscription_canceled_in_stripe_and_a_lost_qr_are_reported_then_repaired(
        tmp_path, kube, run_operator, localstripe):  # noqa: F811
    await localstripe.reset()
    settings = make_settings(tmp_path / "platform", **FAST_SAGA, billing_provider="stripe",
                             stripe_api_key=localstripe.api_key, stripe_api_url=localstripe.url,
                             stripe_webhook_secret=WEBHOOK_SECRET)
    async with running_platform(settings) as platform, run_operator(kube, settings), platform.client() as client:
        await kube.kubectl("apply", "--validate=false", "-f", EXAMPLE)
        await kube.kubectl("wait", "--for=condition=Ready", f"hotel/{NAME}", "--timeout=60s")
        first = stored(kube)["status"]
        hotel_id = first["hotelId"]
        await asyncio.sleep(3 * DRIFT_INTERVAL)  # a few healthy checks: no Event
        assert events(kube, "DriftCorrected") == [] and ready_reason(kube) == ("True", "Provisioned")

        await cancel_in_stripe(localstripe, first["subscriptionId"])
        to_false, to_true = await broken_then_repaired(kube, "SubscriptionCancelled")
        warnings = events(kube, "SubscriptionCancelled")
        assert [w["type"] for w in warnings] == ["Warning"] and first["subscriptionId"] in warnings[0]["message"]
        assert [e["type"] for e in events(kube, "DriftCorrected")] == ["Normal"]
        repaired = json.loads((await kube.kubectl("get", "hotel", NAME, "-o", "json")).stdout)["status"]
        assert repaired["subscriptionId"] not in (None, first["subscriptionId"])
        subscription_ready = condition(stored(kube), "SubscriptionReady")
        assert subscription_ready["status"] == "True" and repaired["subscriptionId"] in subscription_ready["message"]
        customers, live = await stripe_leftovers(localstripe, hotel_id)
        assert [s["id"] for s in live] == [repaired["subscriptionId"]] and len(customers) == 1
        assert live[0]["status"] in ("active", "trialing", "incomplete"), live
        headers = await platform.service_headers("hotel")
        subscription = (await client.get(f"/sub/customers/{hotel_id}/subscription", headers=headers)).json()
        assert (subscription["id"], subscription["productId"]) == (repaired["subscriptionId"], "premium")
        print(f"\nsubscription canceled in Stripe: Ready=False after {to_false:.2f} s, Ready=True {to_true:.2f} s "
              f"later (drift interval {DRIFT_INTERVAL} s)")

        lost = await delete_qr_object(platform, {"id": hotel_id, "qrLink": repaired["qrLink"]})
        assert (await client.get(repaired["qrLink"])).status_code == 404  # file_missing
        to_false, to_true = await broken_then_repaired(kube, "QRMissing")
        status = stored(kube)["status"]
        assert status["qrLink"] != repaired["qrLink"] and lost not in status["qrLink"]
        qr = await client.get(status["qrLink"])
        assert qr.status_code == 200 and qr.content.startswith(b"\x89PNG")
        assert [w["type"] for w in events(kube, "QRMissing")] == ["Warning"]
        print(f"QR object deleted: Ready=False after {to_false:.2f} s, Ready=True {to_true:.2f} s later")

        # One DriftCorrected Event per repair, and nothing more once whole.
        await asyncio.sleep(3 * DRIFT_INTERVAL)
        corrected = events(kube, "DriftCorrected")
        assert len(corrected) == 2 and all(e["type"] == "Normal" for e in corrected), corrected
        per_repair = {reason: len(events(kube, reason)) for reason in ("SubscriptionCancelled", "QRMissing",
                                                                        "DriftCorrected", "DriftNotCorrected")}
        print(f"Events over the two repairs: {per_repair}")
        assert per_repair == {"SubscriptionCancelled": 1, "QRMissing": 1, "DriftCorrected": 2, "DriftNotCorrected": 0}
        hotel = (await client.get(f"/hotel/{hotel_id}", headers=await platform.service_headers("operator"))).json()
        assert (hotel["qrLink"], hotel["subscriptionId"]) == (status["qrLink"], status["subscriptionId"])


async def test_a_qr_code_deleted_in_the_gcs_bucket_is_uploaded_again(tmp_path, kube, run_operator, fake_gcs):  # noqa: F811
    settings = make_settings(tmp_path / "platform", **FAST_SAGA, **gcs_settings(fake_gcs, tmp_path))
    async with running_platform(settings) as platform, run_operator(kube, settings), \
            platform.client(follow_redirects=True) as client:
        await kube.kubectl("apply", "--validate=false", "-f", EXAMPLE)
        await kube.kubectl("wait", "--for=condition=Ready", f"hotel/{NAME}", "--timeout=60s")
        first = stored(kube)["status"]
        media_id = first["qrLink"].rstrip("/").split("/")[-2]
        # Straight in the bucket, through the GCS SDK: media's row stays, its object is gone.
        with fake_gcs.client() as gcs:
            gcs.bucket(settings.media_gcs_bucket).blob(f"{first['hotelId']}/{media_id}/original").delete()
        assert (await client.get(first["qrLink"])).status_code == 404  # the signed GET of a deleted object
        to_false, to_true = await broken_then_repaired(kube, "QRMissing")
        status = stored(kube)["status"]
        assert status["qrLink"] != first["qrLink"] and status["subscriptionId"] == first["subscriptionId"]
        qr = await client.get(status["qrLink"])  # a redirect to a signed GET of the bucket
        assert qr.status_code == 200 and qr.content.startswith(b"\x89PNG")
        new_id = status["qrLink"].rstrip("/").split("/")[-2]
        assert f"{first['hotelId']}/{new_id}/original" in fake_gcs.object_names(settings.media_gcs_bucket)
        assert [e["type"] for e in events(kube, "QRMissing")] == ["Warning"]
        assert [e["type"] for e in events(kube, "DriftCorrected")] == ["Normal"]
        print(f"\nQR object deleted in GCS: Ready=False after {to_false:.2f} s, Ready=True {to_true:.2f} s later")
