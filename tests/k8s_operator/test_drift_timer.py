"""The drift timer only looks at Hotels whose current spec the operator has handled."""

from __future__ import annotations

from roomee.operator.handlers.hotel_drift import _provisioned

READY = {"conditions": [{"type": "Ready", "status": "True", "reason": "Provisioned"}], "hotelId": "h1"}


def test_a_ready_hotel_whose_spec_is_handled_is_checked():
    assert _provisioned(status={**READY, "observedGeneration": 3}, meta={"generation": 3})


def test_a_spec_change_not_handled_yet_is_not_drift():
    # A plan change bumps generation; until the update handler has sent it, the platform differs from the
    # spec because of the change itself, not behind the operator's back.
    assert not _provisioned(status={**READY, "observedGeneration": 3}, meta={"generation": 4})


def test_a_hotel_not_ready_or_without_an_id_is_not_checked():
    not_ready = {"conditions": [{"type": "Ready", "status": "False", "reason": "Provisioning"}], "hotelId": "h1"}
    assert not _provisioned(status={**not_ready, "observedGeneration": 1}, meta={"generation": 1})
    assert not _provisioned(status={"conditions": READY["conditions"], "observedGeneration": 1}, meta={"generation": 1})


def test_a_hotel_found_broken_behind_the_platforms_back_stays_checked_until_repaired():
    for reason in ("SubscriptionCancelled", "QRMissing"):
        broken = {"conditions": [{"type": "Ready", "status": "False", "reason": reason}], "hotelId": "h1"}
        assert _provisioned(status={**broken, "observedGeneration": 2}, meta={"generation": 2})
    # Other Ready=False reasons belong to other handlers (NotFound: nothing left to repair).
    gone = {"conditions": [{"type": "Ready", "status": "False", "reason": "NotFound"}], "hotelId": "h1"}
    assert not _provisioned(status={**gone, "observedGeneration": 2}, meta={"generation": 2})
