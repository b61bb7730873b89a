"""Retention: consults older than the retention period are purged, nothing else is."""

import time

import aiohttp

from tests.helpers import Client, server_sql

SIXTEEN_YEARS = 16 * 365.25 * 24 * 3600


async def consult(live, room):
    host = await Client(live.url, live.tokens(room, "dr", "host")).connect()
    await host.call("join", {})
    patient = await Client(live.url, live.tokens(room, "pat", "patient")).connect()
    await patient.call("join", {"card": {"chief_complaint": "cough"}})
    await host.call("lobby:admit", {"identity": "pat"})
    await patient.next("lobby:admitted")
    await host.call("chat:send", {"text": f"note for {room}"})
    await host.call("host:end", {})
    await patient.wait_disconnected()
    await host.close()


async def purge(live, dry_run):
    headers = {"Authorization": f"Bearer {live.settings.admin_api_key.get_secret_value()}"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{live.url}/api/records/purge", json={"dry_run": dry_run}, headers=headers
        ) as resp,
    ):
        assert resp.status == 200
        return await resp.json()


async def sql(live, statement, params=()):
    return await server_sql(live.settings.data_dir / "teleconsult.db", statement, params)


async def count(live, table, room):
    rows = await sql(live, f"SELECT count(*) FROM {table} WHERE room = ?", (room,))
    return rows[0][0]


async def test_expired_consults_are_purged_and_recent_ones_kept(live):
    await consult(live, "old-consult")
    await consult(live, "new-consult")
    old_recordings = live.settings.data_dir / "recordings" / "old-consult"
    old_recordings.mkdir(parents=True)
    (old_recordings / "x.webm").write_bytes(b"...")
    shift = SIXTEEN_YEARS
    await sql(
        live,
        "UPDATE rooms SET created_at = created_at - ?, ended_at = ended_at - ? "
        "WHERE name = 'old-consult'",
        (shift, shift),
    )
    await sql(
        live,
        "UPDATE participant_sessions SET joined_at = joined_at - ?, left_at = left_at - ? "
        "WHERE room = 'old-consult'",
        (shift, shift),
    )

    listed = await purge(live, dry_run=True)
    assert listed["rooms"] == ["old-consult"] and listed["deleted"] == {}
    assert listed["retention_years"] == 15
    assert await count(live, "chat_messages", "old-consult") == 1

    done = await purge(live, dry_run=False)
    assert done["rooms"] == ["old-consult"]
    for table in ("chat_messages", "participant_sessions", "admissions"):
        assert await count(live, table, "old-consult") == 0
        assert await count(live, table, "new-consult") > 0
    assert await sql(live, "SELECT name FROM rooms") == [("new-consult",)]
    assert not old_recordings.exists()
    entry = await sql(live, "SELECT detail FROM audit_entries WHERE action = 'records.purge'")
    assert "old-consult" in entry[0][0]
    assert (await purge(live, dry_run=True))["rooms"] == []


async def test_retention_is_configurable(start_server):
    live = await start_server(record_retention_years=1)
    await consult(live, "c")
    two_years_ago = time.time() - 2 * 365.25 * 24 * 3600
    await sql(live, "UPDATE rooms SET created_at = ?, ended_at = ?", (two_years_ago,) * 2)
    await sql(
        live, "UPDATE participant_sessions SET joined_at = ?, left_at = ?", (two_years_ago,) * 2
    )
    assert (await purge(live, dry_run=True))["rooms"] == ["c"]
