"""Retention: consults older than the retention period are purged, nothing else is."""

import json
import os
import time
from io import BytesIO

import aiohttp
from PIL import Image

from tests.annotation.conftest import upload
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


def png(shade: int) -> bytes:
    out = BytesIO()
    Image.new("RGB", (8, 8), (shade, shade, shade)).save(out, "PNG")
    return out.getvalue()


async def test_purge_deletes_the_files_only_expired_documents_used(live):
    uploaded = {}
    for room, shade in [
        ("old-consult", 1),
        ("old-consult", 2),
        ("new-consult", 2),
        ("new-consult", 3),
    ]:
        status, body = await upload(live, room, "dr", "host", png(shade), f"{shade}.png")
        assert status == 201, body
        uploaded[(room, shade)] = body["document"]
    # shared during the consults (an ended consult takes no new documents)
    await consult(live, "old-consult")
    await consult(live, "new-consult")
    only_old, shared, only_new = (
        uploaded[k]["sha256"] for k in [("old-consult", 1), ("old-consult", 2), ("new-consult", 3)]
    )
    assert shared == uploaded[("new-consult", 2)]["sha256"]  # one file, two documents
    documents = live.settings.data_dir / "documents"
    files = {p.name: p for p in documents.rglob("*") if p.is_file()}
    assert set(files) == {only_old, shared, only_new}
    # sixteen years on: every file is old, the old consult is expired
    shift = SIXTEEN_YEARS
    for path in files.values():
        then = path.stat().st_mtime - shift
        os.utime(path, (then, then))
    await sql(
        live,
        "UPDATE rooms SET created_at = created_at - ?, ended_at = ended_at - ? "
        "WHERE name = 'old-consult'",
        (shift, shift),
    )
    await sql(
        live,
        "UPDATE participant_sessions SET joined_at = joined_at - ?, "
        "left_at = left_at - ? WHERE room = 'old-consult'",
        (shift, shift),
    )

    assert len(await sql(live, "SELECT * FROM document_files")) == 4
    # as if the documents came from a version that did not index their files yet
    await sql(live, "DELETE FROM document_files")

    done = await purge(live, dry_run=False)
    assert done["rooms"] == ["old-consult"]
    assert done["deleted"]["documents"] == 2 and done["deleted"]["document_blobs"] == 1
    assert not files[only_old].exists()
    assert files[shared].exists() and files[only_new].exists()
    assert sorted(r[0] for r in await sql(live, "SELECT sha256 FROM document_files")) == sorted(
        [shared, only_new]
    )  # re-indexed before anything was deleted
    entry = await sql(live, "SELECT detail FROM audit_entries WHERE action = 'records.purge_files'")
    assert json.loads(entry[0][0]) == {"document_blobs": 1}
    # the new consult's documents still show
    headers = {"Authorization": f"Bearer {live.tokens('new-consult', 'dr', 'host')}"}
    async with aiohttp.ClientSession() as http:
        for shade in (2, 3):
            doc = uploaded[("new-consult", shade)]
            async with http.get(
                f"{live.url}/api/rooms/new-consult/documents/{doc['id']}/frames/0.png",
                headers=headers,
            ) as resp:
                assert resp.status == 200
                assert (await resp.read()).startswith(b"\x89PNG")
