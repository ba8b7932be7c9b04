"""The ``roomee`` command as a Deployment runs it: trusted proxies, ``migrate --wait-seconds``."""

from __future__ import annotations

import re
import subprocess

from tests.fixtures.platform import free_port, make_settings
from tests.kit.served import ROOMEE, environment, served


def test_the_client_address_comes_from_x_forwarded_for_only_through_a_trusted_proxy(tmp_path):
    with served(tmp_path, "run", "--target", "auth", log_level="INFO",
                forwarded_allow_ips="10.0.0.0/8,127.0.0.1") as running:
        with running.client(forwarded_for="203.0.113.7") as proxy:  # from 127.0.0.1: trusted
            assert proxy.get("/.well-known/jwks.json").status_code == 200
        with running.client(forwarded_for="203.0.113.8", source="127.0.0.2") as stranger:  # not trusted
            assert stranger.get("/.well-known/jwks.json").status_code == 200
    log = running.log()
    assert re.search(r'203\.0\.113\.7:\d+ - "GET /\.well-known/jwks\.json', log), log[-2000:]
    assert re.search(r'127\.0\.0\.2:\d+ - "GET /\.well-known/jwks\.json', log), log[-2000:]
    assert "203.0.113.8" not in log


def _migrate(tmp_path, *args: str, **overrides) -> subprocess.CompletedProcess:
    settings = make_settings(tmp_path / "data", **overrides)
    return subprocess.run([*ROOMEE, "migrate", *args], capture_output=True, text=True, timeout=120,
                          env=environment(settings))


def test_migrate_waits_for_a_database_then_ends_with_one_line_naming_the_setting(tmp_path):
    closed = free_port()  # nothing listens there
    out = _migrate(tmp_path, "--target", "auth", "--wait-seconds", "2",
                   database_url=f"postgresql://postgres@127.0.0.1:{closed}/test")
    assert out.returncode == 1, out
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 2 and "Traceback" not in out.stderr, out.stderr
    assert lines[0].startswith(f"waiting up to 2 s for the auth database at postgresql+asyncpg://postgres@127.0.0.1:{closed}")
    assert lines[1].startswith("error: the auth database at ") and "did not answer within 2 s" in lines[1]
    assert lines[1].endswith("check ROOMEE_DATABASE_URL (or ROOMEE_AUTH_DATABASE_URL)")


def test_migrate_without_waiting_tries_once(tmp_path):
    out = _migrate(tmp_path, "--target", "auth", database_url=f"postgresql://postgres@127.0.0.1:{free_port()}/test")
    assert out.returncode == 1
    assert out.stderr.strip().count("\n") == 0 and out.stderr.startswith("error: the auth database at "), out.stderr


def test_migrate_names_the_broker_setting_and_hides_its_password(tmp_path):
    out = _migrate(tmp_path, "--target", "auth", "--wait-seconds", "1",
                   broker_url=f"amqp://guest:s3cret@127.0.0.1:{free_port()}/")
    assert out.returncode == 1, out
    assert "auth: at " in out.stdout  # the database was migrated; the broker is what never answered
    error = out.stderr.strip().splitlines()[-1]
    assert error.startswith("error: the broker amqp://guest:***@127.0.0.1:") and error.endswith("check ROOMEE_BROKER_URL")
    assert "s3cret" not in out.stderr


def test_migrate_with_wait_seconds_migrates_a_database_that_answers(tmp_path):
    out = _migrate(tmp_path, "--target", "auth", "--wait-seconds", "30")
    assert out.returncode == 0, out.stderr
    assert re.search(r"^auth: at \w+$", out.stdout, re.M) and "waiting" not in out.stderr
