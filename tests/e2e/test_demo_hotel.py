"""A newcomer's first minutes, as the README tells them: ``roomee up`` (a real process, a fresh data dir,
a free port) provisions the demo hotel through the hotel service (hotel record, QR code, storage quota,
subscription, administrator) and prints how to sign in; with those credentials the administrator uploads
an image (presigned URL, PUT, upload-complete) and attaches it to an article. On the real backend the
process runs on PostgreSQL and RabbitMQ."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import httpx

from tests.fixtures.media import jpeg
from tests.fixtures.platform import BACKEND, make_settings

ROOMEE = [sys.executable, "-m", "roomee.cli"]
LOG_IN = re.compile(r"""-d '(\{"email": .*\})'""")


def _env(settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOMEE_")}
    if BACKEND == "real":
        env |= {"ROOMEE_DATABASE_URL": settings.database_url, "ROOMEE_BROKER_URL": settings.broker_url,
                "ROOMEE_SCHEMA_PREFIX": settings.schema_prefix, "ROOMEE_EXCHANGE": settings.exchange,
                "ROOMEE_QUEUE_PREFIX": settings.queue_prefix, "ROOMEE_ALLOW_UNSAFE_DEFAULTS": "true",
                "ROOMEE_DB_POOL_SIZE": "1", "ROOMEE_DB_MAX_OVERFLOW": "6"}
    return env


def test_the_demo_administrator_uploads_an_image_into_an_article_on_a_fresh_roomee_up(tmp_path):
    settings = make_settings(tmp_path / "fresh")
    port, base = settings.port, f"http://127.0.0.1:{settings.port}"
    process = subprocess.Popen(
        [*ROOMEE, "up", "--port", str(port), "--data-dir", str(tmp_path / "fresh")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(settings),
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(process.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 180
        found = None
        while found is None and time.monotonic() < deadline and process.poll() is None:
            found = next((m for line in list(lines) if (m := LOG_IN.search(line))), None)
            time.sleep(0.2)
        assert found is not None, "".join(lines)[-3000:]
        credentials = json.loads(found.group(1))
        with httpx.Client(base_url=base, timeout=30) as client:
            session = client.post("/users/signIn", json=credentials)
            assert session.status_code == 200, session.text
            headers = {"Authorization": f"Bearer {session.json()['accessToken']}"}
            hotel_id = session.json()["member"]["ecosystemId"]

            # The demo hotel is a provisioned hotel: its record, QR code and plan are there.
            hotel = client.get(f"/hotel/{hotel_id}", headers=headers)
            assert hotel.status_code == 200, hotel.text
            assert hotel.json()["status"] == "ready" and hotel.json()["qrLink"]
            storage = client.get("/media/storage", headers=headers)
            assert storage.status_code == 200 and storage.json()["quotaBytes"] == 20_000_000_000, storage.text

            photo = jpeg(640, 480)
            signed = client.post("/media/generate-presigned-url", headers=headers,
                                 json={"fileName": "lobby.jpg", "contentType": "image/jpeg", "size": len(photo)})
            assert signed.status_code == 201, signed.text
            upload = signed.json()
            put = httpx.put(upload["uploadUrl"], content=photo, headers=upload["headers"], timeout=30)
            assert put.status_code in (200, 201), put.text
            done = client.post("/media/upload-complete", json={"id": upload["id"]}, headers=headers)
            assert done.status_code == 200, done.text
            media = done.json()

            feed = client.post("/api/v1/pages", headers=headers, json={"pageType": "feed", "title": "News"})
            assert feed.status_code == 201, feed.text
            article = client.post("/api/v1/pages", headers=headers, json={
                "pageType": "article", "parentId": feed.json()["id"], "title": "Our new lobby",
                "content": "<p>Come and see it.</p>", "medias": [media["id"]]})
            assert article.status_code == 201, article.text
            assert [m["fileUrl"] for m in article.json()["medias"]] == [media["fileUrl"]]
            served = client.get(media["fileUrl"], headers=headers)
            assert served.status_code == 200 and served.content == photo
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
        reader.join(timeout=10)
    # The administrator was signed up by `roomee up` itself: no invitation email with a used link.
    assert list((tmp_path / "fresh" / "mail").glob("*.eml")) == []
