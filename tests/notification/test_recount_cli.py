"""``roomee notifications recount``, run as an operator would: the installed executable, on the
platform's database, while the platform runs (it does not need it)."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import sqlalchemy as sa

from roomee.kit.clock import utcnow
from roomee.notification.models import unread_counter
from tests.fixtures.people import make_admin
from tests.fixtures.platform import free_port
from tests.notification.support import event, publish, team_platform, unread, wait_directory, wait_handled

ROOMEE = Path(sys.executable).with_name("roomee")
RECOUNTED = re.compile(r"recounted (\d+) counter\(s\); (\d+) had drifted")


async def _roomee(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """Run the ``roomee`` executable with only these ``ROOMEE_*`` variables set."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("ROOMEE_")}
    process = await asyncio.create_subprocess_exec(
        str(ROOMEE), *args, env=base | {"ROOMEE_LOG_LEVEL": "WARNING"} | env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    return process.returncode, out.decode().strip(), err.decode().strip()


async def _recount(running, *args: str) -> str:
    """``roomee notifications recount ARGS`` on this platform's database; its output line."""
    settings = running.settings
    env = {"ROOMEE_DATA_DIR": str(settings.data_dir)}
    if settings.database_url:
        env |= {"ROOMEE_DATABASE_URL": settings.database_url, "ROOMEE_SCHEMA_PREFIX": settings.schema_prefix}
    code, out, err = await _roomee(env, "notifications", "recount", *args)
    assert code == 0, err
    return out


async def _set_counter(team, person, count: int | None) -> None:
    """Overwrite a member's stored counter behind the service's back (None: delete its row)."""
    async with team.ctx.db.transaction() as session:
        await session.execute(
            sa.delete(unread_counter).where(
                unread_counter.c.member_id == person.member_id, unread_counter.c.workspace_id == person.workspace_id
            )
        )
        if count is not None:
            await session.execute(
                sa.insert(unread_counter).values(
                    member_id=person.member_id, workspace_id=person.workspace_id, count=count, updated_at=utcnow()
                )
            )


async def _stored_counters(team, workspace_id: str | None = None) -> dict[str, int]:
    query = sa.select(unread_counter.c.member_id, unread_counter.c.count)
    if workspace_id is not None:
        query = query.where(unread_counter.c.workspace_id == workspace_id)
    async with team.ctx.db.transaction() as session:
        return {member_id: count for member_id, count in (await session.execute(query)).all()}


async def test_dry_run_reports_corrupted_counters_and_the_recount_repairs_them(tmp_path):
    async with team_platform(tmp_path, members=3) as team:
        client, admin, (bob, carol, dan) = team.client, team.admin, team.members
        page = event(admin, [bob, carol])
        await publish(team.running, page)
        await wait_handled(team.running, page)
        assert (await client.post("/api/v1/notifications/read-all", headers=dan.headers)).status_code == 200
        expected = {person.member_id: await unread(client, person) for person in (bob, carol, dan)}
        assert expected[bob.member_id] > 0 and expected[carol.member_id] > 0 and expected[dan.member_id] == 0
        assert RECOUNTED.fullmatch(await _recount(team.running)).group(2) == "0"

        # Too high, missing while there are unread rows, and not zero with none unread.
        await _set_counter(team, bob, 99)
        await _set_counter(team, carol, None)
        await _set_counter(team, dan, 7)
        corrupted = await _stored_counters(team)

        assert await _recount(team.running, "--dry-run") == "3 counter(s) drifted; nothing changed"
        assert await _stored_counters(team) == corrupted
        assert await unread(client, bob) == 99 and await unread(client, dan) == 7

        counters, drifted = map(int, RECOUNTED.fullmatch(await _recount(team.running)).groups())
        assert drifted == 3
        repaired = await _stored_counters(team)
        assert counters == len(repaired) and repaired[carol.member_id] == expected[carol.member_id]
        for person in (bob, carol, dan):
            assert await unread(client, person) == expected[person.member_id]
        recount = await client.post("/api/v1/notifications/counters/recount", headers=admin.headers)
        assert recount.json() == {"workspaceId": admin.workspace_id, "corrected": 0}
        assert await _recount(team.running) == f"recounted {counters} counter(s); 0 had drifted"


async def test_workspace_option_recounts_only_that_workspace(tmp_path):
    async with team_platform(tmp_path, members=1) as team:
        client, ada, bob = team.client, team.admin, team.members[0]
        eve = await make_admin(team.running, client, "eve@other.example.com", hotel_name="Other Hotel")
        await wait_directory(team.running, [eve])
        assert eve.workspace_id != bob.workspace_id
        page = event(ada, [bob])
        await publish(team.running, page)
        await wait_handled(team.running, page)
        bob_unread, eve_unread = await unread(client, bob), await unread(client, eve)
        await _set_counter(team, bob, bob_unread + 5)
        await _set_counter(team, eve, eve_unread + 3)

        assert await _recount(team.running, "--dry-run", "--workspace", eve.workspace_id) == (
            "1 counter(s) drifted; nothing changed"
        )
        counters, drifted = map(int, RECOUNTED.fullmatch(
            await _recount(team.running, "--workspace", eve.workspace_id)
        ).groups())
        assert (counters, drifted) == (len(await _stored_counters(team, eve.workspace_id)), 1)
        assert await unread(client, eve) == eve_unread
        assert await unread(client, bob) == bob_unread + 5  # the other workspace is left alone

        assert await _recount(team.running, "--dry-run") == "1 counter(s) drifted; nothing changed"
        assert RECOUNTED.fullmatch(await _recount(team.running, "--workspace", bob.workspace_id)).group(2) == "1"
        assert await unread(client, bob) == bob_unread
        assert RECOUNTED.fullmatch(await _recount(team.running)).group(2) == "0"


async def test_an_unreachable_database_is_a_clear_error(tmp_path):
    port = free_port()  # nothing listens there
    code, out, err = await _roomee(
        {"ROOMEE_DATA_DIR": str(tmp_path), "ROOMEE_DATABASE_URL": f"postgresql://roomee:s3cret@127.0.0.1:{port}/roomee"},
        "notifications", "recount",
    )
    assert code == 1 and out == ""
    assert err.startswith(f"error: cannot use the notification database at postgresql+asyncpg://roomee:***@127.0.0.1:{port}/roomee")
    assert "s3cret" not in err

    missing = tmp_path / "no-data-here"
    code, out, err = await _roomee({"ROOMEE_DATA_DIR": str(missing)}, "notifications", "recount", "--dry-run")
    assert code == 1 and err.startswith(f"error: no notification database at {missing / 'notification.db'}")
    assert not missing.exists()  # nothing created on the way
