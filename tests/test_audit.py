"""The audit log: complete, verifiable, and any tampering is named."""

import hashlib
import json
import os
import sqlite3
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives import serialization

from kernel.records.audit import (
    KEY_FILE,
    PUBLIC_KEY_FILE,
    AuditEntry,
    check_inclusion,
    prove_inclusion,
    verify_log,
)
from rtc_server.keys import SIGNALING
from rtc_server.migrations import open_store
from tests.helpers import Client, ConnectRefused, wait_until


async def joined(live, room, identity, role):
    client = Client(live.url, live.tokens(room, identity, role))
    await client.connect()
    client.joined = await client.call("join", {})
    return client


@pytest.fixture
async def audited(start_server, data_dir):
    """A data dir whose audit log holds a short consult, server stopped."""
    live = await start_server()
    host = await joined(live, "r", "dr", "host")
    patient = await joined(live, "r", "pat", "patient")
    await host.call("lobby:admit", {"identity": "pat"})
    await patient.next("lobby:admitted")
    await host.call("host:lock", {"locked": True})
    refused = Client(live.url, "forged.token.value")
    with pytest.raises(ConnectRefused):
        await refused.connect()
    await patient.close()
    await host.close()
    await live.server.close()
    return data_dir


def public_key(data_dir):
    return serialization.load_pem_public_key((data_dir / PUBLIC_KEY_FILE).read_bytes())


async def verify(data_dir):
    store = open_store(f"sqlite+aiosqlite:///{data_dir / 'teleconsult.db'}")
    try:
        return await verify_log(store, public_key(data_dir))
    finally:
        await store.engine.dispose()


def db(data_dir):
    return sqlite3.connect(data_dir / "teleconsult.db", isolation_level=None)


def entries(data_dir):
    with db(data_dir) as conn:
        return conn.execute(
            "SELECT seq, subject, action, object, result FROM audit_entries ORDER BY seq"
        ).fetchall()


async def test_log_records_the_consult_and_verifies(audited):
    rows = entries(audited)
    actions = [(subject, action, result) for _seq, subject, action, _obj, result in rows]
    assert ("dr", "connect", "ok") in actions
    assert ("dr", "join", "joined") in actions
    assert ("pat", "join", "waiting") in actions
    assert ("dr", "admit", "ok") in actions
    assert ("dr", "host.lock", "ok") in actions
    assert ("anonymous", "connect", "token_malformed") in actions
    assert ("pat", "disconnect", "disconnected") in actions
    report = await verify(audited)
    assert report.ok, report.problem
    assert report.entries == len(rows) and report.heads >= 1


async def test_altered_row_is_named(audited):
    with db(audited) as conn:
        conn.execute("UPDATE audit_entries SET subject = 'mallory' WHERE seq = 3")
    report = await verify(audited)
    assert not report.ok and report.first_bad_seq == 3
    assert "entry 3" in report.problem and "altered" in report.problem


async def test_altered_row_with_recomputed_hash_is_named(audited):
    with db(audited) as conn:
        row = conn.execute(
            "SELECT seq, ts_us, subject, action, object, result, detail "
            "FROM audit_entries WHERE seq = 2"
        ).fetchone()
        forged = AuditEntry(row[0], row[1], "mallory", *row[3:])
        digest = hashlib.sha256(b"\x00" + forged.canonical()).digest()
        conn.execute(
            "UPDATE audit_entries SET subject = 'mallory', leaf_hash = ? WHERE seq = 2", (digest,)
        )
    report = await verify(audited)
    assert not report.ok and report.first_bad_seq == 2


async def test_deleted_row_is_named(audited):
    with db(audited) as conn:
        conn.execute("DELETE FROM audit_entries WHERE seq = 4")
    report = await verify(audited)
    assert not report.ok and report.first_bad_seq == 4
    assert "entry 4 was removed" in report.problem


async def test_cut_tail_is_detected(audited):
    last = entries(audited)[-1][0]
    with db(audited) as conn:
        conn.execute("DELETE FROM audit_entries WHERE seq = ?", (last,))
    report = await verify(audited)
    assert not report.ok and report.first_bad_seq == last
    assert "removed" in report.problem


async def test_swapped_rows_are_named(audited):
    cols = "ts_us, subject, action, object, result, detail, leaf_hash, sig"
    with db(audited) as conn:
        a = conn.execute(f"SELECT {cols} FROM audit_entries WHERE seq = 1").fetchone()
        b = conn.execute(f"SELECT {cols} FROM audit_entries WHERE seq = 2").fetchone()
        sets = ", ".join(f"{c.strip()} = ?" for c in cols.split(","))
        conn.execute(f"UPDATE audit_entries SET {sets} WHERE seq = 1", b)
        conn.execute(f"UPDATE audit_entries SET {sets} WHERE seq = 2", a)
    report = await verify(audited)
    assert not report.ok and report.first_bad_seq == 1


async def test_inclusion_proof(audited):
    store = open_store(f"sqlite+aiosqlite:///{audited / 'teleconsult.db'}")
    try:
        doc = await prove_inclusion(store, 3)
    finally:
        await store.engine.dispose()
    key = public_key(audited)
    check_inclusion(doc, key)
    assert doc["entry"]["seq"] == 3
    doc["entry"]["subject"] = "mallory"
    with pytest.raises(ValueError, match="leaf hash"):
        check_inclusion(doc, key)


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "rtc_server.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ),
    )


async def test_cli_verify_and_prove(audited):
    out = run_cli("audit", "verify", "--data-dir", str(audited))
    assert out.returncode == 0, out.stderr
    assert "intact" in out.stdout
    out = run_cli("audit", "prove", "2", "--data-dir", str(audited))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["entry"]["seq"] == 2
    with db(audited) as conn:
        conn.execute("UPDATE audit_entries SET result = 'ok!' WHERE seq = 5")
    out = run_cli("audit", "verify", "--data-dir", str(audited))
    assert out.returncode == 1
    assert "entry 5" in out.stderr


async def test_revoked_token_is_dropped_and_refused(live):
    import aiohttp

    key = live.settings.admin_api_key.get_secret_value()
    headers = {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession() as http:
        body = {"room": "r", "identity": "dr", "role": "host"}
        async with http.post(f"{live.url}/api/tokens", json=body, headers=headers) as resp:
            minted = await resp.json()
        client = Client(live.url, minted["token"])
        await client.connect()
        await client.call("join", {})
        revoke = {"jti": minted["jti"], "reason": "link sent to the wrong person"}
        async with http.post(f"{live.url}/api/tokens/revoke", json=revoke, headers=headers) as resp:
            assert resp.status == 200
            assert (await resp.json())["disconnected"] == 1
    removed = await client.next("removed")
    assert removed["reason"] == "link sent to the wrong person"
    await client.wait_disconnected()
    again = Client(live.url, minted["token"])
    with pytest.raises(ConnectRefused) as info:
        await again.connect()
    assert info.value.code == "token_revoked"


async def test_per_ip_connection_limit(start_server):
    live = await start_server(limits={"max_connections_per_ip": 2})
    clients = [Client(live.url, live.tokens("r", f"c{i}", "clinician")) for i in range(3)]
    try:
        await clients[0].connect()
        await clients[1].connect()
        with pytest.raises(ConnectRefused) as info:
            await clients[2].connect()
        assert info.value.code == "too_many_connections"
        await clients[0].close()
        ns = live.app[SIGNALING]
        await wait_until(lambda: sum(ns.per_ip.values()) == 1)
        third = Client(live.url, live.tokens("r", "c9", "clinician"))
        clients.append(third)
        await third.connect()
    finally:
        for c in clients:
            await c.close()


async def test_a_signing_key_in_the_data_dir_is_warned_about(
    start_server, data_dir, tmp_path, caplog
):
    """By default the audit key lives beside the database it signs (whoever can rewrite one can
    re-sign it): the server says so; with `audit_key_file` elsewhere it does not."""
    warning = "the audit signing key is in the data dir"
    with caplog.at_level("WARNING", logger="rtc_server.app"):
        live = await start_server()
        await live.server.close()
    assert any(warning in r.getMessage() for r in caplog.records)
    assert (data_dir / KEY_FILE).exists()
    caplog.clear()
    elsewhere = tmp_path / "keys" / "audit.key"
    elsewhere.parent.mkdir()
    with caplog.at_level("WARNING", logger="rtc_server.app"):
        live = await start_server(audit_key_file=elsewhere)
        await live.server.close()
    assert not any(warning in r.getMessage() for r in caplog.records)
    assert elsewhere.exists()
