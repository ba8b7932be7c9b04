"""Schemathesis over every target's OpenAPI document, against the whole platform on a real port.

For each target in the registry (new targets are covered without editing this file) it runs the
``st`` command with every check (status codes, content types, headers, response schemas, Allow of
405s, ...; ``ROOMEE_SCHEMATHESIS_CHECKS`` narrows them), once
as a hotel administrator and once as a service holding every scope, so both member and
service-only routes are exercised past authentication. The number of examples per operation is
bounded to keep the run short; the seed is fixed so a failure can be replayed.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import pytest

from roomee import targets
from roomee.kit.auth import SERVICE_SCOPES
from tests.fixtures.people import make_admin
from tests.fixtures.platform import make_settings, running_platform

CHECKS = os.environ.get("ROOMEE_SCHEMATHESIS_CHECKS", "all")
MAX_EXAMPLES = int(os.environ.get("ROOMEE_SCHEMATHESIS_EXAMPLES", "5"))
SEED = 20261130
# positive_data_acceptance expects a schema-valid request to pass. Some rules cannot be put in a JSON
# schema: a signed cursor, a Stripe signature, a single-use token, an IANA time zone, a content type
# from the settings' allow-list, no NUL in text, a known plan. Those routes answer the documented
# 400/410/415/422 with an error code; a 405, an undocumented status or a 5xx is still a failure.
#
# GET /members/invitations/{token} and DELETE /members/invitations/{invitation_id} share one URL space:
# a UUID is both an invitation id and a (string) token, so no Allow can match both documented paths
# for it. Invitation tokens are 43 URL-safe characters, never a UUID: {token} gets a value of that shape.
CONFIG = """
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "3xx", "400", "401", "403", "404", "409", "410", "415", "422", "429", "5xx"]

[[operations]]
include-path = "/members/invitations/{token}"
parameters = { "path.token" = "nOtAnInViTaTiOnToKeNbUtOfThEsAmEsHaPe0123456" }
"""
ST = Path(sys.executable).with_name("st")
# Targets served by the platform's app (a target with a runner of its own, the operator, has no HTTP API).
HTTP_TARGETS = sorted(name for name, spec in targets.TARGETS.items() if getattr(spec, "runner", None) is None)


def _summary(output: str) -> str:
    """Operations tested, test cases and failures, from the run's summary."""
    tested = re.search(r"Tested: (\d+)", output)
    cases = re.search(r"(\d+) generated, (?:(\d+) found )?.*", output)
    parts = [f"{tested.group(1) if tested else '?'} operations", cases.group(0).strip() if cases else "no test cases"]
    return "; ".join(parts)


def _service_token_with_every_scope(running) -> str:
    scopes = tuple(sorted({scope for granted in SERVICE_SCOPES.values() for scope in granted}))
    return running.platform.services["auth"].state["issuer"].service_token("conformance", scopes)


async def _schemathesis(url: str, target: str, token: str, report: Path, phases: str) -> tuple[int, str]:
    config = report.with_suffix(".toml")
    config.write_text(CONFIG)
    process = await asyncio.create_subprocess_exec(
        str(ST), "--config-file", str(config), "run", f"{url}/openapi/{target}.json", "--url", url,
        "--checks", CHECKS, "--max-examples", str(MAX_EXAMPLES), "--seed", str(SEED),
        "--phases", phases, "--workers", "1", "--no-shrink",
        "--header", f"Authorization: Bearer {token}",
        "--request-timeout", "30", "--max-redirects", "0",
        "--report", "junit", "--report-junit-path", str(report),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "SCHEMATHESIS_HOOKS": ""},
    )
    output, _ = await process.communicate()
    return process.returncode, output.decode(errors="replace")


@pytest.mark.timeout(900)
@pytest.mark.parametrize("target", HTTP_TARGETS)
async def test_every_route_of_the_target_answers_its_documented_responses(target, tmp_path):
    # Configured as a deployment would be (a webhook secret: billing's webhook answers 503 without one).
    settings = make_settings(tmp_path, log_level="ERROR", stripe_webhook_secret="whsec_conformance")
    async with running_platform(settings) as running, running.client() as client:
        admin = await make_admin(running, client, "admin@conformance.example.com")
        # The coverage phase (every boundary and invalid value of every parameter) is the slow one:
        # run once, as the administrator; the service pass gets examples and fuzzing.
        callers = {
            "admin": (admin.session["accessToken"], "examples,coverage,fuzzing"),
            "service": (_service_token_with_every_scope(running), "examples,fuzzing"),
        }
        failures = []
        for caller, (token, phases) in callers.items():
            code, output = await _schemathesis(running.url, target, token, tmp_path / f"{caller}.xml", phases)
            print(f"schemathesis {target} as {caller}: {_summary(output)}")  # the figures, with pytest -s
            if code != 0:
                failures.append(f"--- as {caller} (exit {code}) ---\n{output[-12000:]}")
        assert not failures, "\n".join(failures)


def _a_value(operations: dict, name: str) -> str:
    """A value of the path parameter ``name`` its schema takes (a UUID where it is one)."""
    for operation in operations.values():
        for parameter in operation.get("parameters", ()):
            if parameter["name"] == name and parameter["in"] == "path" and parameter["schema"].get("format") == "uuid":
                return "0b6f3a8e-7d1c-4c2e-9f1a-2b3c4d5e6f70"
    return "x"


async def test_a_405_allows_every_method_of_the_path_and_binary_routes_are_documented_as_such(tmp_path):
    async with running_platform(make_settings(tmp_path, log_level="ERROR")) as running, running.client() as client:
        documents = {target: (await client.get(f"/openapi/{target}.json")).json() for target in HTTP_TARGETS}
        for document in documents.values():
            for path, operations in document["paths"].items():
                concrete = re.sub(r"\{[^}]+\}", lambda found: _a_value(operations, found.group(0)[1:-1]), path)
                response = await client.request("OPTIONS", concrete)
                assert response.status_code == 405, (concrete, response.status_code)
                allowed = {method.strip().lower() for method in response.headers["allow"].split(",")}
                assert allowed == set(operations), (path, concrete, response.headers["allow"])
        # A path without parameters is a resource of its own, not a value of a template's parameter.
        for method, path, allow in (("DELETE", "/members/invitations/accept", "POST"), ("GET", "/hotel/add", "POST")):
            response = await client.request(method, path)
            assert (response.status_code, response.headers.get("allow")) == (405, allow), (method, path, response.text)
        media = documents["media"]["paths"]
        for path, kinds in (("/media/{media_id}/file", {"image/*", "application/octet-stream"}),
                            ("/media/{media_id}/thumbnail", {"image/*"})):
            operation = media[path]["get"]
            assert kinds <= set(operation["responses"]["200"]["content"]), path
            assert "application/json" not in operation["responses"]["200"]["content"], path
            assert "Location" in operation["responses"]["307"]["headers"], path
            assert {} in operation["security"] and {"HTTPBearer": []} in operation["security"], path


async def test_the_documents_can_be_turned_off(tmp_path):
    async with running_platform(make_settings(tmp_path, log_level="ERROR", api_docs=False)) as running, \
            running.client() as client:
        for path in ("/docs", "/redoc", "/openapi.json", "/openapi/news.json"):
            assert (await client.get(path)).status_code == 404, path
        assert (await client.get("/health")).status_code == 200
