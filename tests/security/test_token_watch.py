"""`teleconsult revoke` (another process) drops live connections like the HTTP revoke; an
expired token closes a connection still waiting, and an admitted one gets a refreshed token."""

from __future__ import annotations

import asyncio
import sys
import time

from kernel.tokens import verify_token
from rtc_server.token_watch import TOKEN_WATCH
from tests.helpers import Client


async def test_cli_revoke_drops_the_live_connection(live, connect):
    client = await connect("ward", "dr-c", "clinician")
    jti = verify_token(live.tokens.secret, client.token).jti
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "rtc_server.cli",
        "revoke",
        jti,
        "--reason",
        "链接发错了",
        "--data-dir",
        str(live.settings.data_dir),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0 and out.decode().strip() == "revoked", err.decode()
    removed = await client.next("removed", timeout=30)
    assert removed["reason"] == "链接发错了" and removed["by"] == "cli"
    await client.wait_disconnected(timeout=30)


async def test_expiry_closes_waiting_and_refreshes_admitted(live, connect):
    now = time.time()
    host = await connect("ward", "dr-host", "host")
    soon = dict(ttl_s=3600, now=now - 3600 + 120)  # expires two minutes from now
    waiting = Client(live.url, live.tokens("ward", "pt-wait", "patient", **soon))
    await waiting.connect()
    assert (await waiting.call("join", {}))["status"] == "waiting"
    joined = Client(live.url, live.tokens("ward", "dr-late", "host", **soon))
    await joined.connect()
    await joined.call("join", {})
    try:
        await live.app[TOKEN_WATCH].check_expiry(now=now + 200)  # both tokens expired
        assert (await waiting.next("removed"))["reason"] == "the join link has expired"
        await waiting.wait_disconnected()
        fresh = await joined.next("token:refresh")
        claims = verify_token(live.tokens.secret, fresh["token"])
        old = verify_token(live.tokens.secret, joined.token)
        assert claims.jti == old.jti and claims.exp > old.exp + 3000
        assert claims.identity == "dr-late" and claims.grants == old.grants
        assert not host.events["token:refresh"]  # its token is far from expiry
    finally:
        await waiting.close()
        await joined.close()


def test_a_refreshed_token_keeps_the_whole_grant_and_short_links_are_not_refreshed_per_tick():
    """The refresh is the same grant, hospital id included (it once left `mrn` out), signed
    by mint_token's own checks; a link valid for 2 minutes is refreshed at half-time, not on
    every tick (REFRESH_BEFORE_S is 5 minutes)."""
    import time

    from kernel.tokens import mint_token, verify_token
    from rtc_server.token_watch import refresh_due, refreshed_token

    now = time.time()
    old = verify_token(
        "s" * 32,
        mint_token(
            "s" * 32, room="r", identity="p-1", role="patient", name="王芳",
            mrn="12345", mrn_system="urn:oid:1.2.3", care_team=["dr-a"], now=now, ttl_s=600,
        ),
    )  # fmt: skip
    new = verify_token("s" * 32, refreshed_token("s" * 32, old, 3600, now))
    same = ("room", "identity", "role", "name", "grants", "mrn", "mrn_system", "care_team", "jti")
    assert all(getattr(new, k) == getattr(old, k) for k in same)
    assert new.mrn == "12345" and new.exp == int(now) + 3600
    assert not refresh_due(now + 120, now, 120) and refresh_due(now + 59, now, 120)
    assert refresh_due(now + 299, now, 3600) and not refresh_due(now + 301, now, 3600)
