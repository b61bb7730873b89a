"""Webhooks and the integration API against a real server and a local aiohttp receiver:
signed JSON bodies for room started/ended, participant joined/left and lobby entered, recording
finished and rehab report ready (from a real recording and a real counting session), retries
with backoff after receiver errors, delivery after a restart, never blocking the room while a
receiver hangs;
`GET /api/rooms` and `/api/rooms/{room}/participants` with the admin key; frame-ancestors."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from rtc_server.keys import SIGNALING
from rtc_server.webhooks import SIGNATURE_HEADER, WEBHOOKS, verify
from tests.conftest import Live
from tests.helpers import Client

WAIT_S = 15.0


@dataclass
class Receiver:
    """A local HTTP endpoint that records webhook calls; can fail or hang on purpose."""

    url: str = ""
    calls: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    fail_next: int = 0
    hang: asyncio.Event | None = None
    arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        async with self.arrived:
            self.calls.append((dict(request.headers), body))
            self.arrived.notify_all()
        if self.hang is not None:
            await self.hang.wait()
        if self.fail_next > 0:
            self.fail_next -= 1
            return web.Response(status=503)
        return web.Response(status=204)

    def delivered(self) -> list[dict[str, Any]]:
        """Bodies of the calls, without the failed first attempts' duplicates."""
        seen: dict[str, dict[str, Any]] = {}
        for _headers, body in self.calls:
            doc = json.loads(body)
            seen.setdefault(doc["id"], doc)
        return list(seen.values())

    async def wait_for(self, event: str, count: int = 1, **match: Any) -> list[dict[str, Any]]:
        def found() -> list[dict[str, Any]]:
            return [
                d
                for d in self.delivered()
                if d["event"] == event and all(d.get(k) == v for k, v in match.items())
            ]

        async with asyncio.timeout(WAIT_S), self.arrived:
            await self.arrived.wait_for(lambda: len(found()) >= count)
        return found()


@pytest.fixture
async def receiver(aiohttp_server: Any) -> Receiver:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/hook", rec.handle)
    server = await aiohttp_server(app)
    rec.url = str(server.make_url("/hook"))
    return rec


def _hooks(receiver: Receiver) -> dict[str, Any]:
    return {"webhooks": {"urls": [receiver.url], "retry_min_s": 0.05, "retry_max_s": 0.2}}


async def _join(live: Live, room: str, identity: str, role: str, name: str) -> Client:
    client = Client(live.url, live.tokens(room, identity, role, name))
    await client.connect()
    client.joined = await client.call("join", {})
    return client


def connector(live: Live) -> tuple[Any, list[Client]]:
    """connect(room, identity, role) -> a connected (not joined) client, and the list of them
    (the shape tests.media's media_peer expects)."""
    clients: list[Client] = []

    async def connect(room: str, identity: str, role: str, join: bool = False) -> Client:
        client = Client(live.url, live.tokens(room, identity, role))
        await client.connect()
        clients.append(client)
        return client

    return connect, clients


async def test_lifecycle_events_are_signed_and_ordered(
    start_server: Any, receiver: Receiver, data_dir: Path
) -> None:
    live: Live = await start_server(**_hooks(receiver))
    key_file = data_dir / "webhook.key"
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    key = key_file.read_text().strip().encode()

    host = await _join(live, "clinic-3", "dr-chen", "host", "陈医生")
    patient = await _join(live, "clinic-3", "pat-9", "patient", "王芳")
    assert patient.joined["status"] == "waiting"
    await receiver.wait_for("lobby_entered")
    assert (await host.call("lobby:admit", {"identity": "pat-9"}))["ok"]
    await receiver.wait_for("participant_joined", 2)
    assert (await host.call("host:end", {}))["ok"]
    ended = (await receiver.wait_for("room_ended"))[0]
    assert ended["room"] == "clinic-3" and ended["reason"] == "ended"
    await host.close()
    await patient.close()

    events = [(d["event"], d.get("participant", {}).get("identity")) for d in receiver.delivered()]
    assert events[:4] == [
        ("room_started", None),
        ("participant_joined", "dr-chen"),
        ("lobby_entered", "pat-9"),
        ("participant_joined", "pat-9"),
    ]
    assert ("room_ended", None) in events
    assert events.index(("room_ended", None)) > events.index(("participant_left", "pat-9"))
    names = {d["participant"]["name"] for d in receiver.delivered() if "participant" in d}
    assert names == {"陈医生", "王芳"}
    for headers, body in receiver.calls:
        assert headers["Content-Type"] == "application/json"
        assert headers[SIGNATURE_HEADER].startswith("sha256=")
        assert verify(key, body, headers[SIGNATURE_HEADER])
        assert not verify(b"another key", body, headers[SIGNATURE_HEADER])


async def test_receiver_errors_are_retried_with_backoff(
    start_server: Any, receiver: Receiver
) -> None:
    receiver.fail_next = 3
    live: Live = await start_server(**_hooks(receiver))
    host = await _join(live, "ward-1", "dr-li", "host", "李医生")
    # recording finished and rehab report ready go through the namespace listeners too
    ns = live.app[SIGNALING]
    await ns.notify("recording_finished", "ward-1", {"id": "rec1", "files": 2})
    await ns.notify(
        "rehab_report",
        "ward-1",
        {"session_id": "s1", "patient": "pat-1", "exercise": "squat", "reps": 10, "score": 88},
    )
    report = (await receiver.wait_for("rehab_report_ready"))[0]
    assert report["report"]["reps"] == 10
    events = [d["event"] for d in receiver.delivered()]
    assert events == [
        "room_started",
        "participant_joined",
        "recording_finished",
        "rehab_report_ready",
    ]
    # the first event was refused 3 times, then delivered; none was sent out of order
    first_id = receiver.delivered()[0]["id"]
    attempts = [json.loads(b)["id"] for _h, b in receiver.calls]
    assert attempts[:4] == [first_id] * 4
    assert live.app[WEBHOOKS].failed_attempts == 3
    await host.close()


async def test_a_hanging_receiver_never_blocks_the_room(
    start_server: Any, receiver: Receiver
) -> None:
    receiver.hang = asyncio.Event()
    live: Live = await start_server(
        webhooks={"urls": [receiver.url], "timeout_s": 30, "retry_min_s": 0.05}
    )
    try:
        host = await _join(live, "ward-2", "dr-li", "host", "李医生")
        async with asyncio.timeout(WAIT_S), receiver.arrived:
            await receiver.arrived.wait_for(lambda: receiver.calls)
        # the receiver holds the first delivery open: joins and chat carry on regardless
        other = await _join(live, "ward-2", "dr-he", "clinician", "何医生")
        assert (await other.call("chat:send", {"text": "会诊开始"}))["ok"]
        assert len(receiver.calls) == 1
        await other.close()
        await host.close()
    finally:
        receiver.hang.set()


async def test_undelivered_events_survive_a_restart(start_server: Any, receiver: Receiver) -> None:
    receiver.fail_next = 10**6  # down for the whole first run
    live: Live = await start_server(**_hooks(receiver))
    host = await _join(live, "ward-3", "dr-li", "host", "李医生")
    async with asyncio.timeout(WAIT_S), receiver.arrived:
        await receiver.arrived.wait_for(lambda: receiver.calls)
    await host.close()
    await live.server.close()
    receiver.fail_next = 0
    receiver.calls.clear()
    await start_server(**_hooks(receiver))
    await receiver.wait_for("participant_left")
    assert [d["event"] for d in receiver.delivered()][:2] == ["room_started", "participant_joined"]


async def _admin_get(live: Live, path: str, key: str | None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with aiohttp.ClientSession() as http, http.get(live.url + path, headers=headers) as resp:
        return resp.status, await resp.json()


async def test_rooms_and_participants_api(start_server: Any) -> None:
    live: Live = await start_server()
    key = live.settings.admin_api_key.get_secret_value()
    host = await _join(live, "mdt-5", "dr-wu", "host", "吴医生")
    patient = await _join(live, "mdt-5", "pat-2", "patient", "赵敏")
    try:
        assert (await _admin_get(live, "/api/rooms", None))[0] == 401
        assert (await _admin_get(live, "/api/rooms", "wrong"))[0] == 401
        status, body = await _admin_get(live, "/api/rooms", key)
        assert status == 200
        assert [(r["name"], r["participants"], r["waiting"]) for r in body["rooms"]] == [
            ("mdt-5", 1, 1)
        ]
        status, body = await _admin_get(live, "/api/rooms/mdt-5/participants", key)
        assert status == 200
        assert [(p["identity"], p["name"], p["role"]) for p in body["participants"]] == [
            ("dr-wu", "吴医生", "host")
        ]
        assert [w["identity"] for w in body["waiting"]] == ["pat-2"]
        assert (await _admin_get(live, "/api/rooms/nope/participants", key))[0] == 404
        assert (await _admin_get(live, "/api/rooms/mdt-5/participants", None))[0] == 401
    finally:
        await patient.close()
        await host.close()


async def test_join_page_framing_follows_settings(start_server: Any) -> None:
    live: Live = await start_server()
    async with aiohttp.ClientSession() as http, http.get(live.url + "/join") as resp:
        assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]
        assert resp.headers["X-Frame-Options"] == "DENY"
    await live.server.close()
    portal = "https://portal.hospital.example"
    live = await start_server(frame_ancestors=[portal, "https://his.hospital.example"])
    async with aiohttp.ClientSession() as http, http.get(live.url + "/join") as resp:
        csp = resp.headers["Content-Security-Policy"]
        assert f"frame-ancestors {portal} https://his.hospital.example" in csp
        assert "X-Frame-Options" not in resp.headers


async def test_a_real_recording_reports_recording_finished(
    start_server: Any, receiver: Receiver
) -> None:
    """recording_finished from a consult actually recorded (aiortc camera and microphone), not
    only through the listener: the room, the recording's id, who stopped it and its files."""
    from media.client import SyntheticVideoTrack, ToneAudioTrack
    from recording.service import RECORDING
    from tests.helpers import wait_until
    from tests.media.test_signaling_integration import media_peer

    live: Live = await start_server(**_hooks(receiver))
    connect, clients = connector(live)
    host_sio, host = await media_peer(connect, "ward-7", "dr-wu", "host", decode=False)
    try:
        await host.publish({"camera": SyntheticVideoTrack(), "microphone": ToneAudioTrack()})
        recordings = live.app[RECORDING]
        await wait_until(lambda: len(recordings.media.rooms["ward-7"].publications) == 2, 30)
        started = await host_sio.call("record:start", {"reason": "教学"})
        assert started["ok"], started
        rec_id = started["recording"]["recording_id"]

        def frames() -> int:
            rec = recordings.active.get("ward-7")
            return sum(entry[0].frames for entry in rec.sinks.values()) if rec else 0

        await wait_until(lambda: frames() >= 20, 30)
        stopped = await host_sio.call("record:stop", {})
        assert stopped["ok"], stopped
        (hook,) = await receiver.wait_for("recording_finished")
        assert hook["room"] == "ward-7"
        assert hook["recording"]["id"] == rec_id and hook["recording"]["stopped_by"] == "dr-wu"
        assert hook["recording"]["files"] == len(stopped["files"]) == 2
    finally:
        await host.close()
        for client in clients:
            await client.close()


@pytest.mark.slow  # loads the pose model
async def test_a_real_rehab_session_reports_rehab_report_ready(
    start_server: Any, receiver: Receiver
) -> None:
    """rehab_report_ready from a counting session that ran on a published camera (no person in
    the synthetic picture: 0 reps), stopped by the clinician."""
    from media.client import SyntheticVideoTrack
    from tests.media.test_signaling_integration import media_peer

    live: Live = await start_server(**_hooks(receiver))
    connect, clients = connector(live)
    doctor = await connect("rehab-9", "dr-he", "host")
    doctor.joined = await doctor.call("join", {})
    _patient_sio, patient = await media_peer(connect, "rehab-9", "pat-5", "patient", decode=False)
    try:
        assert (await doctor.call("lobby:admit", {"identity": "pat-5"}))["ok"]
        await patient.wait_event(lambda ev, p: ev == "rtc:config" and p["can_publish"], 20)
        await patient.publish({"camera": SyntheticVideoTrack()})
        await doctor.next("rtc:track_published", timeout=20)
        started = await doctor.call("rehab:start", {"exercise": "squat", "target_reps": 5})
        assert started["ok"], started
        await doctor.next("rehab:update", timeout=30)  # the agent sees pictures
        stopped = await doctor.call("rehab:stop", {"session_id": started["session_id"]})
        assert stopped["ok"], stopped
        (hook,) = await receiver.wait_for("rehab_report_ready")
        assert hook["room"] == "rehab-9"
        assert hook["report"]["session_id"] == started["session_id"]
        assert hook["report"]["reps"] == stopped["report"]["reps"] == 0
    finally:
        await patient.close()
        for client in clients:
            await client.close()
