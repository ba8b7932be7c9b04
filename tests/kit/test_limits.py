"""Bounded request bodies and malformed JSON (roomee.kit.limits, roomee.kit.app).

A body over its route's limit is answered 413 ``payload_too_large`` before it is read: a declared
Content-Length at once, a chunked body at the first chunk past the limit. The memory of the serving
process (a real ``roomee run``) is read from /proc before and after a 20 MB body and printed; its
peak may not grow by anything near the body's size. Upload routes keep their own, larger limits.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from roomee.kit.settings import Settings
from tests.kit.test_startup import Process, roomee_env, wait_for

MiB = 1024 * 1024
JSON_LIMIT = Settings.model_fields["max_json_body_bytes"].default
BIG = 20 * MiB
# The serving process's peak resident memory may grow by less than this over a 20 MB body (reading
# it, as before the limit, grew it by more than the body).
FLAT_BYTES = 8 * MiB


async def _chunks(total: int, size: int = 64 * 1024):
    """``total`` bytes of a JSON-looking body, made as it is sent (the client holds none of it)."""
    yield b'{"title": "'
    sent = 11
    while sent < total - 2:
        piece = min(size, total - 2 - sent)
        yield b"a" * piece
        sent += piece
    yield b'"}'


def _memory(pid: int) -> dict[str, int]:
    """Resident and peak resident memory (bytes) of a process, from /proc."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) * 1024
    return fields


async def test_a_20_mb_body_is_refused_before_it_is_read_and_memory_stays_flat(tmp_path):
    process = Process(["run", "--target", "news"], roomee_env(tmp_path), tmp_path / "news.log")
    try:
        await wait_for(process, "/health/ready")
        async with httpx.AsyncClient(base_url=process.url, timeout=60) as client:
            for how in ("content-length", "chunked"):
                before = _memory(process.popen.pid)
                headers = {"content-type": "application/json"}
                if how == "content-length":
                    headers["content-length"] = str(BIG)
                started = time.perf_counter()
                response = await client.post("/api/v1/pages", content=_chunks(BIG), headers=headers)
                took = time.perf_counter() - started
                after = _memory(process.popen.pid)
                print(f"\n[limits] 20 MB body ({how}): {response.status_code} in {took:.3f} s; server RSS "
                      f"{before['VmRSS'] / MiB:.1f} -> {after['VmRSS'] / MiB:.1f} MiB, peak "
                      f"{before['VmHWM'] / MiB:.1f} -> {after['VmHWM'] / MiB:.1f} MiB")
                assert response.status_code == 413, response.text
                assert response.json() == {"error": "payload_too_large", "detail": {"maxBytes": JSON_LIMIT}}
                assert after["VmHWM"] - before["VmHWM"] < FLAT_BYTES
            # The connection the 413 closed does not keep the next request from being served.
            assert (await client.get("/health")).status_code == 200
    finally:
        await process.terminate()
        process.kill()


async def test_a_body_within_the_limit_reaches_its_route_and_uploads_keep_their_own_limit(platform):
    async with platform.client() as client:
        near = await client.post("/users/signIn", content=b'{"email": "' + b"a" * (JSON_LIMIT - 100) + b'"}',
                                 headers={"content-type": "application/json"})
        assert near.status_code == 422, near.text  # read and validated, not refused for its size
        over = await client.post("/users/signIn", content=b"x" * (JSON_LIMIT + 1), headers={"content-type": "text/plain"})
        assert over.status_code == 413 and over.json()["error"] == "payload_too_large"  # any content type
        # The local storage's signed PUT and the service upload take files up to the media limit.
        put = await client.put("/media/objects/h/m/file?expires=1&signature=x", content=b"\0" * (JSON_LIMIT + MiB),
                               headers={"content-type": "image/png"})
        assert put.status_code == 403, put.text  # its own check (the signature), not the JSON limit
        upload = await client.post("/media/upload", files={"file": ("a.png", b"\0" * (JSON_LIMIT + MiB), "image/png")},
                                   data={"ecosystemId": "h"})
        assert upload.status_code == 401, upload.text
        limit = platform.settings.media_max_file_bytes + MiB
        too_big = await client.put("/media/objects/h/m/file?expires=1&signature=x",
                                   headers={"content-type": "image/png", "content-length": str(limit + 1)},
                                   content=_chunks(limit + 1))
        assert too_big.status_code == 413 and too_big.json()["detail"] == {"maxBytes": limit}


async def test_malformed_json_is_a_documented_400_invalid_json(platform):
    async with platform.client() as client:
        for body in (b'{"email": "a@b.c", ', b"{'email': 1}", b'{"email": "\xff\xfe"}', b"[" * 100_000):
            response = await client.post("/users/signIn", content=body, headers={"content-type": "application/json"})
            assert response.status_code == 400, (body[:20], response.text)
            assert response.json()["error"] == "invalid_json", response.text
            assert response.json()["detail"].startswith("the body is not valid JSON: ")
        # Without a JSON Content-Type the body is not parsed: it is not the object the route takes.
        bare = await client.post("/users/signIn", content=b"{nope")
        assert bare.status_code == 422 and bare.json()["error"] == "validation_error", bare.text
        document = (await client.get("/openapi.json")).json()
    operations = [(path, method, op) for path, item in document["paths"].items() for method, op in item.items()]
    with_json = [(p, m, op) for p, m, op in operations if "application/json" in op.get("requestBody", {}).get("content", {})]
    assert len(with_json) > 20
    for path, method, op in with_json:
        assert "`invalid_json`" in op["responses"]["400"]["description"], (method, path)
    for path, method, op in operations:
        if "requestBody" in op:
            assert "`payload_too_large`" in op["responses"]["413"]["description"], (method, path)

