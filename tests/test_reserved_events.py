"""Client events named like Socket.IO's own (connect, disconnect, ...) never reach the server's
lifecycle handlers: refused with `reserved_event`, audited; no forged address, no identity
switch, no way past the per-address limit."""

from __future__ import annotations

import asyncio
import json

import pytest

from rtc_server.keys import SIGNALING
from tests.helpers import Client, ConnectRefused, server_sql

FORGED_IP = "203.0.113.9"


async def _audit(live, action: str) -> list[tuple[str, str, dict]]:
    rows = await server_sql(
        live.settings.data_dir / "teleconsult.db",
        "SELECT subject, result, detail FROM audit_entries WHERE action = ? ORDER BY seq",
        (action,),
    )
    return [(s, r, json.loads(d)) for s, r, d in rows]


async def test_reserved_event_names_are_refused(start_server) -> None:
    live = await start_server(limits={"max_connections_per_ip": 2})
    ns = live.app[SIGNALING]
    patient = await Client(
        live.url, live.tokens("ward-9", "pt-zhang", "patient", "张患者")
    ).connect()
    sid = patient.sio.get_sid()
    host_token = live.tokens("ward-9", "dr-li", "host", "李医生")

    # a forged connect: another address in the "environ", the host's token as "auth"
    environ = {"REMOTE_ADDR": FORGED_IP, "HTTP_X_FORWARDED_FOR": FORGED_IP}
    ack = await patient.call("connect", (environ, {"token": host_token}))
    assert ack["ok"] is False and ack["error"]["code"] == "reserved_event", ack
    error = await patient.next("error", lambda e: e["event"] == "connect")
    assert error["code"] == "reserved_event"
    conn = ns.conns[sid]
    assert conn.caller.identity == "pt-zhang" and conn.caller.role.value == "patient"
    assert conn.ip == "127.0.0.1"

    # forged disconnects leave the connection (and its per-address count) as it was
    for _ in range(3):
        ack = await patient.call("disconnect", "client namespace disconnect")
        assert ack["error"]["code"] == "reserved_event", ack
    assert sid in ns.conns and ns.per_ip["127.0.0.1"] == 1
    for name in ("connect_error", "disconnecting", "error", "newListener"):
        ack = await patient.call(name, {})
        assert ack["error"]["code"] == "reserved_event", (name, ack)

    # the limit of 2 per address still holds
    second = await Client(live.url, live.tokens("ward-9", "pt-wu", "patient")).connect()
    with pytest.raises(ConnectRefused) as refused:
        await Client(live.url, live.tokens("ward-9", "pt-he", "patient")).connect()
    assert refused.value.code == "too_many_connections"

    # the patient still works as itself
    joined = await patient.call("join", {})
    assert joined["ok"] and joined["status"] == "waiting"

    # audited, with the real address; the forged one appears nowhere in the log
    async with asyncio.timeout(10):
        while len(reserved := await _audit(live, "event.reserved")) < 8:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    assert {(s, r) for s, r, _d in reserved} == {("pt-zhang", "reserved_event")}
    assert reserved[0][2] == {"event": "connect", "ip": "127.0.0.1"}
    connects = await _audit(live, "connect")
    assert all(d.get("ip") != FORGED_IP for _s, _r, d in connects)
    assert not any(s == "dr-li" for s, _r, _d in connects)
    await second.close()
    await patient.close()


def test_handlers_cannot_claim_reserved_names(live) -> None:
    ns = live.app[SIGNALING]
    from signaling.schemas import LeaveIn

    async def handler(_caller, _msg):
        return None

    for name in ("connect", "disconnect", "error"):
        with pytest.raises(ValueError, match="reserved"):
            ns.add_handler(name, LeaveIn, handler)
