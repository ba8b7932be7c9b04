"""A production process (a database URL is set) refuses the embedded defaults that are unsafe there."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest

from roomee import targets
from roomee.kit.platform import Platform
from roomee.kit.settings import Settings

ROOMEE = [sys.executable, "-m", "roomee.cli"]


def _env(**extra: str) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("ROOMEE_")} | extra


def test_every_unsafe_default_is_named(tmp_path):
    settings = Settings(data_dir=tmp_path, database_url="postgresql://db.internal/roomee", host="0.0.0.0")
    problems = settings.unsafe_production_defaults(["auth", "members"])
    assert len(problems) == 3
    assert "ROOMEE_AUTH_KEYS_DIR" in problems[0]
    assert "ROOMEE_SERVICE_CLIENT_SECRETS" in problems[1]
    assert "ROOMEE_PUBLIC_URL" in problems[2] and "http://0.0.0.0:8080" in problems[2]
    # A target that signs nothing does not need the keys.
    assert len(settings.unsafe_production_defaults(["members"])) == 2
    configured = settings.model_copy(update={
        "auth_keys_dir": tmp_path, "service_client_secrets": {"auth": "a", "members": "m"},
        "public_url": "https://api.roomee.example"})
    assert configured.unsafe_production_defaults(["auth", "members"]) == []
    # The embedded defaults (no database URL) stay as easy as before.
    assert Settings(data_dir=tmp_path).unsafe_production_defaults(["auth"]) == []


def test_run_refuses_to_start_and_says_why(tmp_path):
    env = _env(ROOMEE_DATA_DIR=str(tmp_path), ROOMEE_DATABASE_URL="postgresql://127.0.0.1:1/none",
               ROOMEE_HOST="0.0.0.0")
    out = subprocess.run([*ROOMEE, "run", "--target", "auth"], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 2, out.stderr
    assert "refusing to start" in out.stderr
    for name in ("ROOMEE_AUTH_KEYS_DIR", "ROOMEE_SERVICE_CLIENT_SECRETS", "ROOMEE_PUBLIC_URL"):
        assert name in out.stderr
    assert not (tmp_path / "keys").exists()  # nothing generated


async def test_the_platform_itself_refuses(tmp_path):
    settings = Settings(data_dir=tmp_path, database_url="postgresql://127.0.0.1:1/none")
    platform = Platform(settings, targets.resolve("auth"))
    with pytest.raises(RuntimeError, match="unsafe defaults"):
        await platform.start()


async def test_the_default_sign_up_link_serves_the_built_in_form(platform):
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{platform.settings.signup_link_base}?token=abcdefghijkl")
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
        assert 'name="token" value="abcdefghijkl"' in response.text
        cut = await client.get(f"{platform.settings.signup_link_base}?token=abc")  # a link cut short
    assert cut.status_code == 404 and cut.headers["content-type"].startswith("text/html")
