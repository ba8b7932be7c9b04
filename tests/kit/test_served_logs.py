"""What the ``roomee`` process writes, read as a person reads it: no secret in any line (access log
included), and no line per tick of periodic work."""

from __future__ import annotations

import io
import re
import time
from urllib.parse import quote

from PIL import Image

from tests.fixtures.platform import free_port
from tests.kit.served import served

# Secrets of the flow that must never reach a log line, whatever its form in a URL.
SECRET_FORMS = (lambda secret: secret, lambda secret: quote(secret, safe=""))


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 120, 200)).save(out, format="PNG")
    return out.getvalue()


def _signup_link(data_dir, deadline: float) -> str:
    while time.monotonic() < deadline:
        for text in sorted((data_dir / "mail").glob("*.txt")) if (data_dir / "mail").exists() else ():
            found = re.search(r"\S+/signup\?token=[A-Za-z0-9_-]+", text.read_text())
            if found and "nina@example.com" in text.read_text() + text.with_suffix(".eml").read_text():
                return found[0]
        time.sleep(0.2)
    raise AssertionError("no invitation email")


def test_a_whole_flow_leaves_no_token_or_signature_in_the_logs(tmp_path):
    with served(tmp_path, "up", log_level="INFO") as running:
        admin = running.admin_credentials()
        with running.client(forwarded_for="203.0.113.20") as client:
            session = client.post("/users/signIn", json={"email": admin["email"], "password": admin["password"]}).json()
            headers = {"Authorization": f"Bearer {session['accessToken']}"}
            invited = client.post("/members/", json={"email": "nina@example.com", "role": "staff", "firstName": "Nina",
                                                     "lastName": "New"}, headers=headers)
            assert invited.status_code == 201, invited.text
            link = _signup_link(running.settings.data_dir, time.monotonic() + 30)
            token = link.split("token=", 1)[1]
            assert client.get(link).status_code == 200  # the sign-up page
            created = client.post("/users/signUp", json={"token": token, "password": "nina's long password"})
            assert created.status_code == 201, created.text  # auth looked the invitation up by its token
            nina = {"Authorization": f"Bearer {created.json()['accessToken']}"}

            photo = _png()
            signed = client.post("/media/generate-presigned-url", headers=nina,
                                 json={"fileName": "lobby.png", "contentType": "image/png", "size": len(photo)})
            assert signed.status_code == 201, signed.text
            upload = signed.json()
            signature = re.search(r"[?&]signature=([^&]+)", upload["uploadUrl"])[1]
            put = client.put(upload["uploadUrl"], content=photo, headers=upload["headers"])
            assert put.status_code in (200, 201), put.text
            done = client.post("/media/upload-complete", json={"id": upload["id"]}, headers=nina)
            assert done.status_code == 200, done.text
            refreshed = client.post("/users/refresh", json={"refreshToken": created.json()["refreshToken"]})
            assert refreshed.status_code == 200
    log = running.log()
    # The routes that carried them are in the access log, their secrets are not.
    assert re.search(r'"GET /signup\?token=\[redacted\] HTTP', log), log[-3000:]
    assert re.search(r'"GET /members/invitations/\[redacted\] HTTP', log), log[-3000:]
    assert re.search(r'"PUT /media/objects/\S+signature=\[redacted\]\S* HTTP', log), log[-3000:]
    for name, secret in (("invitation token", token), ("upload signature", signature),
                         ("password", "nina's long password"),
                         ("access token", session["accessToken"]), ("refresh token", created.json()["refreshToken"])):
        for form in SECRET_FORMS:
            assert form(secret) not in log, f"the {name} is in the log"


def test_a_fresh_up_writes_what_a_person_reads(tmp_path):
    with served(tmp_path, "up", log_level="INFO") as running:
        admin = running.admin_credentials()
        started = len(running.log().splitlines())
        time.sleep(10)  # ten ticks of every once-a-second poll
        idle = running.log().splitlines()[started:]
        with running.client() as client:
            assert client.post("/users/signIn", json=admin).status_code == 200
            for path in ("/health", "/health/ready"):
                assert client.get(path).status_code == 200
        deadline = time.monotonic() + 10
        while "/users/signIn" not in running.log() and time.monotonic() < deadline:
            time.sleep(0.1)
    lines = running.log().splitlines()
    # Nothing per tick: the access-change and session polls, relays, samplers and probes stay out of INFO.
    assert len(idle) <= 2, "\n".join(idle)
    assert not [line for line in lines if "access-changes" in line or "sessions/revocations" in line
                or re.search(r'"GET /health', line)]
    # The whole start-up (migrations, the demo hotel's provisioning, the banner) and the sign-in: a screenful.
    assert len(lines) < 100, f"{len(lines)} lines:\n" + "\n".join(lines)
    assert [line for line in lines if re.search(r'"POST /users/signIn HTTP/1.1" 200', line)]


def test_a_peer_not_up_yet_is_said_once_and_its_arrival_once(tmp_path):
    peer_port = free_port()
    peer_url = f"http://127.0.0.1:{peer_port}"
    with served(tmp_path / "news", "run", "--target", "news", log_level="INFO", auth_url=peer_url,
                members_url=peer_url) as news:
        deadline = time.monotonic() + 30
        while news.log().count("failed (") < 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(4)  # several retries of every poll and of the directory sync
        with served(tmp_path / "peer", "run", "--target", "auth,members", log_level="INFO", port=peer_port):
            deadline = time.monotonic() + 60
            while "member directory sync recovered" not in news.log() and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(2)
    lines = news.log().splitlines()
    said = [line for line in lines if "member directory sync" in line]
    assert len(said) == 2, "\n".join(lines)
    assert " INFO " in said[0] and "member directory sync failed (" in said[0] and "retrying quietly" in said[0]
    assert " INFO " in said[1] and re.search(r"member directory sync recovered after \d+ failed attempt", said[1])
    # The rest of the waiting (the access-change and session feeds, the calls themselves) is no line a tick.
    assert len([line for line in lines if " WARNING " in line or " ERROR " in line]) <= 2, "\n".join(lines)
