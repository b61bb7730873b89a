"""Refused Socket.IO events are audited; floods of refusals and unauthenticated requests are
aggregated (the first of a kind per window, then one count entry) instead of a row each."""

from __future__ import annotations

import json

import aiohttp

from rtc_server.keys import AUDIT
from tests.helpers import server_sql


async def rows(live, action):
    found = await server_sql(
        live.settings.data_dir / "teleconsult.db",
        "SELECT subject, object, result, detail FROM audit_entries WHERE action = ? ORDER BY seq",
        (action,),
    )
    return [(s, o, r, json.loads(d)) for s, o, r, d in found]


async def test_refused_events_are_audited_and_aggregated(live, connect):
    host = await connect("ward", "dr-host", "host")
    patient = await connect("ward", "pt-zhang", "patient", join=False, name="张三")
    await patient.call("join", {})
    await host.call("lobby:admit", {"identity": "pt-zhang"})
    await patient.next("lobby:admitted")
    for _ in range(20):
        ack = await patient.call("host:lock", {"locked": True})
        assert ack["ok"] is False and ack["error"]["code"] == "permission_denied"
    await patient.call("no:such", {})
    await live.app[AUDIT].flush_aggregated()
    await live.app[AUDIT].sign_head()
    refused = await rows(live, "event.refused")
    assert [(s, o, r, d["event"]) for s, o, r, d in refused] == [
        ("pt-zhang", "room:ward", "permission_denied", "host:lock"),
        ("pt-zhang", "room:ward", "unknown_event", "no:such"),
    ]
    [summary] = await rows(live, "audit.aggregated")
    counts = summary[3]["counts"]
    assert {
        "action": "event.refused",
        "subject": "pt-zhang",
        "object": "room:ward",
        "result": "permission_denied",
        "key": "host:lock",
        "repeats": 19,
    } in counts


async def test_unauthenticated_floods_write_a_count_not_a_row_each(live):
    async with aiohttp.ClientSession() as http:
        for _ in range(300):
            async with http.get(f"{live.url}/api/rooms/ward/documents/{'0' * 32}") as resp:
                assert resp.status == 401
        for _ in range(100):
            async with http.post(f"{live.url}/api/tokens", json={}) as resp:
                assert resp.status == 401
        # a valid token of someone never admitted: refused (403) and aggregated too
        outsider = {"Authorization": f"Bearer {live.tokens('ward', 'pt-x', 'patient')}"}
        for _ in range(50):
            async with http.get(
                f"{live.url}/api/rooms/ward/documents/{'0' * 32}", headers=outsider
            ) as resp:
                assert resp.status == 403
    views = await rows(live, "document.view")
    assert [(s, r) for s, _o, r, _d in views] == [("anonymous", "401"), ("pt-x", "403")]
    assert len(await rows(live, "admin.token_mint")) == 1
    await live.app[AUDIT].flush_aggregated()
    [summary] = await rows(live, "audit.aggregated")
    repeats = {(c["action"], c["subject"]): c["repeats"] for c in summary[3]["counts"]}
    assert repeats == {
        ("document.view", "anonymous"): 299,
        ("document.view", "pt-x"): 49,
        ("admin.token_mint", "admin"): 99,
    }
