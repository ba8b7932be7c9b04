"""The Hotel CRD refuses at ``kubectl apply`` what the hotel service would refuse: one corpus of
emails, phones and names goes through both the CRD's schema (with its CEL rules, as the API
server checks it) and the hotel service's pydantic schema for ``POST /hotel/add``, and each value
gets the same verdict from both. (Non-ASCII addresses, which the service accepts, are outside the
corpus: the CRD keeps to ASCII.)"""

from __future__ import annotations

import copy

import pydantic
import pytest

from roomee.hotel.schemas import HotelCreate
from roomee.operator import hotels
from tests.fixtures.kube import CRD_DIR, load_crds, load_yaml_documents, validation_errors

HOTEL = load_yaml_documents(CRD_DIR / "examples" / "hotel.yaml")[0]
CRD = load_crds()["Hotel"]

EMAILS = [
    "contact@grand-paris.example.com", "a@b.co", "first.last+tag@sub.domain.org", "o'brien@hotel.fr",
    "x_y-z@h-1.example.net", "UPPER@EXAMPLE.COM", "a" * 64 + "@example.com",
    "hello@seaside-inn.test", "front@desk.local", "ops@localhost", "a@b.invalid", "x@y.onion", "r@in-addr.arpa",
    "a" * 65 + "@example.com", "no-at-sign.example.com", "two@@example.com", "a@b", "a@b.", "a@.b.com",
    ".dot@example.com", "dot.@example.com", "do..t@example.com", "sp ace@example.com", "a@exa mple.com",
    "a@-bad.com", "a@bad-.com", "a@b.123", "a@1.2.3.4", "", "@example.com", "a@" + "b" * 64 + ".com",
    "quote\"d@example.com", "a@b_c.com",
]
PHONES = ["+33 1 23 45 67 89", "123", "(01) 23.45/67-89", "12", "+" * 3, "0" * 64, "0" * 65, "+33 1 23 45 67 89 ext 2",
          "phone", "+33-1-23", "", "12\n34", "١٢٣"]
NAMES = ["Grand Hôtel Paris", "x", "", "y" * 200, "y" * 201, "  ", "酒店", "Hotel\tTab"]


def with_value(field: str, value: str) -> dict:
    document = copy.deepcopy(HOTEL)
    spec = document["spec"]
    if field == "email":
        spec["contact"]["email"] = value
    elif field == "adminEmail":
        spec["administrator"]["email"] = value
    elif field == "phone":
        spec["contact"]["phone"] = value
    else:
        spec["name"] = value
    return document


def service_accepts(document: dict) -> bool:
    try:
        HotelCreate.model_validate(hotels.add_body(document["spec"]))
    except pydantic.ValidationError:
        return False
    return True


CORPUS = ([("email", v) for v in EMAILS] + [("adminEmail", v) for v in EMAILS]
          + [("phone", v) for v in PHONES] + [("name", v) for v in NAMES])


@pytest.mark.parametrize(("field", "value"), CORPUS, ids=[f"{f}={v[:30]!r}" for f, v in CORPUS])
def test_the_crd_and_the_hotel_service_agree(field, value):
    document = with_value(field, value)
    crd_accepts = validation_errors(CRD, document) == []
    assert crd_accepts == service_accepts(document), (
        f"{field}={value!r}: CRD {'accepts' if crd_accepts else 'refuses'}, the hotel service "
        f"{'accepts' if service_accepts(document) else 'refuses'}")


def test_the_corpus_has_both_verdicts_for_each_field():
    for field in ("email", "phone", "name"):
        verdicts = {service_accepts(with_value(f, v)) for f, v in CORPUS if f == field}
        assert verdicts == {True, False}
