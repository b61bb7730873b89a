"""Document HTTP routes check current membership and revocation, like the Socket.IO side."""

from __future__ import annotations

import json

import aiohttp

from kernel.tokens import verify_token
from tests.annotation.conftest import CT_BYTES, http_get, upload


async def _doc(live) -> str:
    status, body = await upload(live, "ward", "dr-host", "host", CT_BYTES, "ct.dcm")
    assert status == 201, body
    return body["document"]["id"]


async def _paths(doc_id: str) -> list[str]:
    base = "/api/rooms/ward/documents"
    return [
        base,
        f"{base}/{doc_id}",
        f"{base}/{doc_id}/frames/0.png",
        f"{base}/{doc_id}/export.json",
    ]


async def _codes(live, token: str, doc_id: str) -> set[tuple[int, str]]:
    seen = set()
    for path in await _paths(doc_id):
        status, body, _ = await http_get(live, path, token)
        code = json.loads(body)["error"]["code"] if status >= 400 else "ok"
        seen.add((status, code))
    return seen


async def test_waiting_denied_and_removed_patients_read_nothing(live, connect):
    doc_id = await _doc(live)
    host = await connect("ward", "dr-host", "host")
    # a patient still in the waiting room
    waiting = await connect("ward", "pt-wait", "patient")
    assert waiting.joined["status"] == "waiting"
    token = waiting.token
    assert await _codes(live, token, doc_id) == {(403, "not_joined")}
    # denied: still nothing
    await host.call("lobby:deny", {"identity": "pt-wait", "reason": "wrong room"})
    await waiting.wait_disconnected()
    assert await _codes(live, token, doc_id) == {(403, "not_joined")}
    # admitted: reads; removed: reads nothing again
    admitted = await connect("ward", "pt-in", "patient")
    await host.call("lobby:admit", {"identity": "pt-in"})
    await admitted.next("lobby:admitted")
    assert await _codes(live, admitted.token, doc_id) == {(200, "ok")}
    await host.call("host:remove", {"identity": "pt-in", "reason": "test"})
    await admitted.wait_disconnected()
    assert await _codes(live, admitted.token, doc_id) == {(403, "removed")}


async def test_revoked_token_reads_nothing(live, connect):
    doc_id = await _doc(live)
    clinician = await connect("ward", "dr-c", "clinician")
    assert clinician.joined["status"] == "joined"
    assert await _codes(live, clinician.token, doc_id) == {(200, "ok")}
    jti = verify_token(live.tokens.secret, clinician.token).jti
    key = live.settings.admin_api_key.get_secret_value()
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{live.url}/api/tokens/revoke",
            json={"jti": jti},
            headers={"Authorization": f"Bearer {key}"},
        ) as resp,
    ):
        assert resp.status == 200
    await clinician.wait_disconnected()
    assert await _codes(live, clinician.token, doc_id) == {(401, "token_revoked")}


async def test_membership_holds_when_the_room_is_not_loaded(live, connect):
    """Room unloaded (nobody connected): the records decide (admitted before, bans)."""
    doc_id = await _doc(live)
    host = await connect("ward", "dr-host", "host")
    pt = await connect("ward", "pt-a", "patient")
    await host.call("lobby:admit", {"identity": "pt-a"})
    await pt.next("lobby:admitted")
    await pt.close()
    await host.close()
    never = live.tokens("ward", "pt-never", "patient")
    assert await _codes(live, pt.token, doc_id) == {(200, "ok")}
    assert await _codes(live, never, doc_id) == {(403, "not_joined")}


async def test_an_ended_consult_is_readable_by_members_but_takes_no_upload(live, connect):
    doc_id = await _doc(live)
    host = await connect("ward", "dr-host", "host")
    await host.call("host:end", {})
    token = live.tokens("ward", "dr-host", "host")
    assert await _codes(live, token, doc_id) == {(200, "ok")}
    status, body = await upload(live, "ward", "dr-host", "host", CT_BYTES, "late.dcm")
    assert status == 403 and body["error"]["code"] == "room_ended"
