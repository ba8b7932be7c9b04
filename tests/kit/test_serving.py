"""The ``roomee`` command as a Deployment runs it: trusted proxies, ``migrate --wait-seconds``."""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import threading
from urllib.parse import urlsplit

from tests.fixtures.platform import PG_URL, RUN_ID, free_port, make_settings
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


class LateDatabase:
    """A port in front of this machine's PostgreSQL that refuses connections until ``open()``."""

    def __init__(self) -> None:
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        self.port = self.socket.getsockname()[1]

    def open(self) -> None:
        self.socket.listen()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.socket.accept()
            except OSError:
                return
            upstream = socket.create_connection((urlsplit(PG_URL).hostname, urlsplit(PG_URL).port or 5432))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.socket.close()


def test_migrate_waits_for_a_database_that_comes_up_late(tmp_path):
    late = LateDatabase()
    prefix = f"t{RUN_ID}_late_"
    url = urlsplit(PG_URL)._replace(netloc=f"{urlsplit(PG_URL).username or 'postgres'}@127.0.0.1:{late.port}").geturl()
    settings = make_settings(tmp_path / "data", database_url=url, schema_prefix=prefix, allow_unsafe_defaults=True)
    process = subprocess.Popen([*ROOMEE, "migrate", "--target", "auth", "--wait-seconds", "120"], text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environment(settings))
    try:
        first = process.stderr.readline()  # said once it was refused...
        assert first.startswith("waiting up to 120 s for the auth database at postgresql+asyncpg://"), first
        late.open()  # ...and the database comes up
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
        late.close()
        asyncio.run(_drop_schema(f"{prefix}auth"))
    assert process.returncode == 0, first + err
    assert "waiting" not in err, err  # said once, however many attempts
    assert re.search(r"^auth: at \w+$", out, re.M)


async def _drop_schema(name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_URL)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    finally:
        await conn.close()
