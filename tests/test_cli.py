"""The ``roomee`` command, run as a user would: a subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import httpx

from tests.fixtures.platform import BACKEND, PG_URL, free_port, make_settings

ROOMEE = [sys.executable, "-m", "roomee.cli"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOMEE_")}
    return env | extra


def test_version():
    out = subprocess.run([*ROOMEE, "--version"], capture_output=True, text=True, check=True, env=_env())
    assert out.stdout.strip() == "roomee 0.1.0"


def test_unknown_target_is_a_clear_error():
    out = subprocess.run([*ROOMEE, "run", "--target", "nope"], capture_output=True, text=True, env=_env())
    assert out.returncode == 2
    assert "unknown target(s): nope" in out.stderr


def test_up_on_a_fresh_data_dir_answers_health_and_lets_the_admin_log_in(tmp_path):
    port = free_port()
    data_dir = tmp_path / "fresh"
    process = subprocess.Popen(
        [*ROOMEE, "up", "--port", str(port), "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(),
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        else:
            raise AssertionError("roomee up did not answer /health")
        credentials_file = data_dir / "admin-credentials.json"
        while not credentials_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        credentials = json.loads(credentials_file.read_text())
        signed_in = httpx.post(f"http://127.0.0.1:{port}/users/signIn",
                               json={"email": credentials["email"], "password": credentials["password"]})
        assert signed_in.status_code == 200, signed_in.text
        assert signed_in.json()["member"]["permissions"] == ["manage_ecosystem", "manage_members", "manage_workspace",
                                                             "publish_pages"]
        assert (data_dir / "auth.db").exists() and (data_dir / "members.db").exists()
        # The demo admin was signed up by the bootstrap itself: no invitation email with a used link.
        time.sleep(1.0)
        assert list((data_dir / "mail").glob("*.eml")) == []
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
    assert f"Roomee is running at http://127.0.0.1:{port}" in output
    assert "Log in:" in output
    # uvicorn shuts down cleanly, then re-raises SIGTERM so the exit status tells how it ended.
    assert "Application shutdown complete" in output
    assert process.returncode in (0, -signal.SIGTERM), output[-2000:]


def test_migrate_brings_every_target_to_head(tmp_path):
    settings = make_settings(tmp_path)
    env = _env(ROOMEE_DATA_DIR=str(tmp_path))
    if BACKEND == "real":
        env |= {"ROOMEE_DATABASE_URL": PG_URL, "ROOMEE_SCHEMA_PREFIX": settings.schema_prefix}
    out = subprocess.run([*ROOMEE, "migrate"], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    lines = dict(line.split(": at ") for line in out.stdout.strip().splitlines() if ": at " in line)
    assert "queues declared" in out.stdout  # the broker's topology comes with the schema
    assert set(lines) >= {"auth", "members"}
    assert all(revision != "None" for revision in lines.values())
    again = subprocess.run([*ROOMEE, "migrate"], capture_output=True, text=True, env=env)
    assert again.stdout == out.stdout


def test_per_service_overrides(monkeypatch):
    from roomee.kit.settings import Settings

    monkeypatch.setenv("ROOMEE_DATABASE_URL", "postgresql://shared/db")
    monkeypatch.setenv("ROOMEE_MEMBERS_DATABASE_URL", "postgresql://members/db")
    monkeypatch.setenv("ROOMEE_HTTP_TIMEOUT_MS", "1500")
    settings = Settings()
    assert settings.for_service("members").database_url == "postgresql://members/db"
    assert settings.for_service("auth").database_url == "postgresql://shared/db"
    assert settings.for_service("members").http_timeout_ms == 1500


async def test_dead_letters_can_be_listed_and_replayed_from_the_cli(tmp_path):
    """A consumer fails every try; the CLI lists the dead letter and replays it to a fixed consumer."""
    import asyncio

    from roomee.kit.events import Message, broker_from_settings

    settings = make_settings(tmp_path, retry_delays_ms=[50, 50, 50])
    env = _env(ROOMEE_DATA_DIR=str(tmp_path), ROOMEE_QUEUE_PREFIX=settings.queue_prefix)
    if BACKEND == "real":
        env |= {"ROOMEE_BROKER_URL": settings.broker_url, "ROOMEE_EXCHANGE": settings.exchange}
    queue = settings.queue_prefix + "media_storage_queue"
    broker = broker_from_settings(settings)
    await broker.start()
    handled, failing = [], True

    async def handler(delivery):
        if failing:
            raise RuntimeError("provider down")
        handled.append(delivery.message_id)

    try:
        subscription = await broker.consume(queue, ["roomee.storage.media"], handler)
        await broker.publish_batch([Message("roomee.storage.media", b'{"id": "evt-1"}', {}, "evt-1")])
        for _ in range(100):
            if await broker.dead_letters(queue):
                break
            await asyncio.sleep(0.1)
        listed = await asyncio.to_thread(
            subprocess.run, [*ROOMEE, "events", "dead-letters", "--queue", "media_storage_queue"],
            capture_output=True, text=True, env=env,
        )
        assert listed.returncode == 0, listed.stderr
        letter = json.loads(listed.stdout.strip().splitlines()[0])
        assert letter["routingKey"] == "roomee.storage.media" and "provider down" in letter["error"]

        failing = False
        replayed = await asyncio.to_thread(
            subprocess.run, [*ROOMEE, "events", "replay", "--queue", "media_storage_queue", "--id", letter["id"]],
            capture_output=True, text=True, env=env,
        )
        assert replayed.stdout.strip() == "replayed 1 event(s) to media_storage_queue", replayed.stderr
        for _ in range(100):
            if handled:
                break
            await asyncio.sleep(0.1)
        assert handled == ["evt-1"]
        assert await broker.dead_letters(queue) == []
        await subscription.cancel()
    finally:
        await broker.delete_queue(queue)
        await broker.close()


def test_dead_letters_of_an_unknown_queue_are_refused_without_touching_the_broker(tmp_path):
    for command in (["events", "dead-letters", "--queue", "notification_queu"],
                    ["events", "replay", "--queue", "notification_queu"]):
        # An unreachable broker URL: the command must answer before connecting (or declaring) anything.
        out = subprocess.run([*ROOMEE, *command], capture_output=True, text=True, timeout=60,
                             env=_env(ROOMEE_DATA_DIR=str(tmp_path), ROOMEE_BROKER_URL="amqp://guest:guest@127.0.0.1:9/"))
        assert out.returncode == 2, out.stderr
        assert "unknown queue 'notification_queu'" in out.stderr and "notification_queue" in out.stderr


def _token_env(tmp_path, running=None) -> dict[str, str]:
    env = _env(ROOMEE_DATA_DIR=str(tmp_path), ROOMEE_SERVICE_SECRET="test-service-secret")
    if running is not None:
        env |= {"ROOMEE_PUBLIC_URL": running.url}
    return env


async def test_token_prints_a_service_token_of_a_client_and_its_secret(tmp_path):
    import asyncio

    import jwt

    from tests.fixtures.platform import running_platform

    settings = make_settings(tmp_path)
    async with running_platform(settings, "auth") as running:
        env = _token_env(tmp_path, running)
        minted = await asyncio.to_thread(subprocess.run, [*ROOMEE, "token", "--client", "operator"],
                                         capture_output=True, text=True, env=env, timeout=60)
        assert minted.returncode == 0, minted.stderr
        claims = jwt.decode(minted.stdout.strip(), options={"verify_signature": False})
        assert claims["typ"] == "service" and claims["sub"] == "service:operator"
        assert set(claims["scope"].split()) == {"hotel:provision", "members:workspaces"}
        # The token is one the platform accepts: the auth service's JWKS verifies it.
        async with running.client() as client:
            jwks = (await client.get("/.well-known/jwks.json")).json()
        key = jwt.PyJWK(next(k for k in jwks["keys"] if k["kid"] == jwt.get_unverified_header(minted.stdout.strip())["kid"]))
        jwt.decode(minted.stdout.strip(), key.key, algorithms=["RS256"], audience=claims["aud"])

        narrowed = await asyncio.to_thread(
            subprocess.run, [*ROOMEE, "token", "--client", "operator", "--scope", "hotel:provision"],
            capture_output=True, text=True, env=env, timeout=60)
        assert narrowed.returncode == 0, narrowed.stderr
        assert jwt.decode(narrowed.stdout.strip(), options={"verify_signature": False})["scope"] == "hotel:provision"

        refused = await asyncio.to_thread(
            subprocess.run, [*ROOMEE, "token", "--client", "news", "--scope", "hotel:provision"],
            capture_output=True, text=True, env=env, timeout=60)
        assert refused.returncode == 2 and "invalid_scope" in refused.stderr and refused.stdout == ""

    shown = subprocess.run([*ROOMEE, "token", "--client", "operator", "--secret"], capture_output=True, text=True,
                           env=_token_env(tmp_path), timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == settings.client_secret_of("operator")
    assert len(shown.stdout.strip()) == 64 and int(shown.stdout.strip(), 16) >= 0  # hex of HMAC-SHA256


def test_token_of_an_unknown_client_is_a_one_line_error(tmp_path):
    out = subprocess.run([*ROOMEE, "token", "--client", "nobody"], capture_output=True, text=True,
                         env=_token_env(tmp_path), timeout=60)
    assert out.returncode == 2
    assert out.stdout == ""
    assert len(out.stderr.strip().splitlines()) == 1
    assert "unknown client 'nobody'" in out.stderr and "operator" in out.stderr


# --- bootstrap's errors: one line naming what failed and what to set, the exit code of the README ---

BOOTSTRAP = [*ROOMEE, "bootstrap", "--hotel-name", "Hôtel Test", "--email", "admin@test.example.com",
             "--phone", "+33 1 02 03 04 05", "--address", "1 rue de Test"]


def _one_error_line(out: subprocess.CompletedProcess) -> str:
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    assert "Traceback" not in out.stderr and "developer.mozilla.org" not in out.stderr
    return lines[0]


def test_bootstrap_with_the_platform_unreachable_names_the_url_and_the_setting(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    out = subprocess.run(BOOTSTRAP, capture_output=True, text=True, timeout=60,
                         env=_env(ROOMEE_PUBLIC_URL=url, ROOMEE_DATA_DIR=str(tmp_path)))
    assert out.returncode == 3, out.stderr
    line = _one_error_line(out)
    assert f"{url}/oauth/token" in line and "ROOMEE_PUBLIC_URL" in line
    # Without ROOMEE_PUBLIC_URL: the default it tried is named, and that the setting is not set.
    unset = subprocess.run(BOOTSTRAP, capture_output=True, text=True, timeout=60,
                           env=_env(ROOMEE_DATA_DIR=str(tmp_path), ROOMEE_PORT=str(free_port())))
    assert unset.returncode == 3, unset.stderr
    assert "ROOMEE_PUBLIC_URL (not set" in _one_error_line(unset)


def test_bootstrap_with_bad_settings_is_one_line_and_exit_2(tmp_path):
    out = subprocess.run(BOOTSTRAP, capture_output=True, text=True, timeout=60,
                         env=_env(ROOMEE_PORT="eighty", ROOMEE_DATA_DIR=str(tmp_path)))
    assert out.returncode == 2, out.stderr
    assert "ROOMEE_PORT" in _one_error_line(out)


def test_bootstrap_with_members_answering_500_prints_the_status_and_the_error_code(tmp_path):
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from threading import Thread

    class Platform(BaseHTTPRequestHandler):
        """Auth and hotel answer; members fails as a broken service does."""

        def _answer(self, status: int, body: dict) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_POST(self):
            answers = {"/oauth/token": (200, {"access_token": "t", "token_type": "Bearer"}),
                       "/hotel/add": (202, {"id": "hotel-1", "status": "provisioning"}),
                       "/members/add/hotel/member": (500, {"error": "internal_error",
                                                           "detail": "an unexpected error occurred"})}
            self._answer(*answers.get(self.path, (404, {"error": "not_found", "detail": "no route"})))

        def do_GET(self):
            self._answer(200, {"id": "hotel-1", "status": "ready"})

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Platform)
    Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        out = subprocess.run(BOOTSTRAP, capture_output=True, text=True, timeout=60,
                             env=_env(ROOMEE_PUBLIC_URL=url, ROOMEE_DATA_DIR=str(tmp_path)))
    finally:
        server.shutdown()
        server.server_close()
    assert out.returncode == 1, out.stderr
    line = _one_error_line(out)
    assert f"{url}/members/add/hotel/member answered 500 internal_error" in line, line
