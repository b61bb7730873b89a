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
