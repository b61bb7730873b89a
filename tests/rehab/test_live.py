"""Rehab through the real server: a patient publishes a labelled clip over the SFU, a clinician
starts a session over signaling, the room gets rehab:update rep events, the report lands in
the consult record."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kernel.records.consult_record import gather_record, to_fhir_bundle
from media.client import MediaClient
from rehab_vision.service import REHAB
from rehab_vision.sources import VideoFileTrack
from rtc_server.keys import RECORD_CONTRIBUTORS, RECORDS
from tests.validators import check_fhir

from .conftest import DATA, entry

RTC_EVENTS = (
    "rtc:config",
    "rtc:offer",
    "rtc:track_published",
    "rtc:track_unpublished",
    "rtc:track_muted",
    "rtc:active_speaker",
    "rtc:disconnected",
)


def bridge(client: Any, identity: str) -> MediaClient:
    """An aiortc media client whose signaling goes through a joined Socket.IO client."""

    async def request(event: str, data: dict[str, Any]) -> dict[str, Any]:
        ack = await client.call(event, data)
        if not ack.get("ok"):
            raise RuntimeError(f"{event} refused: {ack}")
        return ack

    media = MediaClient(identity, request, decode=False)
    for event in RTC_EVENTS:
        client.sio.on(event, lambda data=None, _e=event: media.deliver(_e, data))
    return media


async def test_start_errors(live: Any, connect: Any) -> None:
    doc = await connect("rehab-e", "dr-a", "host")
    ack = await doc.call("rehab:start", {"exercise": "squat"})
    assert ack["ok"] is False and ack["error"]["code"] == "invalid_payload"  # no patient here
    ack = await doc.call("rehab:start", {"exercise": "squat", "patient_identity": "pat"})
    assert ack["ok"] is False and ack["error"]["code"] == "not_found"  # no camera published
    ack = await doc.call("rehab:start", {"exercise": "zumba", "patient_identity": "pat"})
    assert ack["ok"] is False and ack["error"]["code"] == "invalid_payload"
    ack = await doc.call("rehab:stop", {"session_id": "nope"})
    assert ack["ok"] is False and ack["error"]["code"] == "not_found"
    assert live.app[REHAB].sessions == {}


@pytest.mark.slow
async def test_live_session_counts_reps_of_a_published_clip(live: Any, connect: Any) -> None:
    clip = entry("postop_squat")
    room = "rehab-live"
    doc = await connect(room, "dr-a", "host")
    patient = await connect(room, "pat-1", "patient", join=False)
    media = bridge(patient, "pat-1")
    try:
        joined = await patient.call("join", {})
        if joined.get("status") == "waiting":
            assert (await doc.call("lobby:admit", {"identity": "pat-1"}))["ok"]
        await media.wait_event(lambda ev, p: ev == "rtc:config" and p["can_publish"], 20)
        # the first picture repeats until the session runs, then the clip plays in real time
        go = asyncio.Event()
        # ... and the last one stays 2 s: the final frames of a stream that simply stops may
        # never come out of a jitter buffer, and the fourth rep ends 0.5 s before the clip
        # Played at 10 fps (the movement at half speed): half the encode, decode and pose work,
        # so a machine loaded by other jobs still carries every picture.
        track = VideoFileTrack(DATA / clip["video"], fps=10, hold=go, tail_s=2.0)
        await media.publish({"camera": track})
        await doc.next("rtc:track_published", timeout=20)
        ack = await doc.call("rehab:start", {"exercise": "squat", "target_reps": 4})
        assert ack["ok"], ack
        assert ack["patient"] == "pat-1"
        session_id = ack["session_id"]
        started = await patient.next("rehab:started", timeout=10)
        assert started["session_id"] == session_id
        run = live.app[REHAB].sessions[session_id]
        # a page that joins late (or again, after a lost connection) learns of the session
        late = await connect(room, "dr-b", "clinician", join=False)
        joined_late = await late.call("join", {})
        assert [r["session_id"] for r in joined_late["rehab_sessions"]] == [session_id]
        assert joined_late["rehab_sessions"][0] == started

        def diag() -> str:
            tap = run.tap
            trace = [
                (u["t"], u["angle"], u["phase"][:4], u["rep"])
                for u in list(doc.events["rehab:update"])[-60:]
            ]
            return (
                f"agent {run.agent.stats.summary()}, tap decoded {tap.frames_decoded} "
                f"returned {tap.frames_returned} dropped {tap.frames_dropped}; "
                f"last updates {trace}"
            )

        try:  # the agent gets pictures: start the clip
            await doc.next("rehab:update", timeout=30)
        except TimeoutError:
            pytest.fail(f"no rehab:update: {diag()}")
        go.set()
        reps: list[dict[str, Any]] = []
        for n in (1, 2, 3, 4):
            try:
                up = await doc.next(
                    "rehab:update", lambda u: u["rep_detail"] is not None, timeout=60
                )
            except TimeoutError:
                pytest.fail(f"rep {n} never came: {diag()}")
            assert up["rep"] == n and up["session_id"] == session_id
            reps.append(up)
        # the updates carry the processed frame's 2D pose, or none where the pose was lost (a
        # rep may end on such a frame: its return was seen on the frames before; counter.py)
        posed = [u for u in reps + list(doc.events["rehab:update"]) if u["landmarks"] is not None]
        assert len(posed) >= 10, diag()
        upright = []
        for u in posed:
            xyv = u["landmarks"]
            assert len(xyv) == 33 * 3, u
            assert all(0 <= v <= 1 for v in xyv[2::3])
            assert u["frame_w"] * 3 == u["frame_h"] * 4, u  # the clip's 4:3, any scale
            # a squat in view: shoulders above hips (image y grows downwards)
            upright.append(xyv[11 * 3 + 1] < xyv[23 * 3 + 1] and xyv[12 * 3 + 1] < xyv[24 * 3 + 1])
        # the model may misplace a frame under load (a degraded, dropped-to frame, the deepest
        # point of a squat): a plausible pose on most updates shows the landmarks are the
        # person's, not noise
        assert sum(upright) >= 0.8 * len(upright), (sum(upright), len(upright))
        assert up["set_complete"] is True
        again = await doc.call("rehab:start", {"exercise": "squat", "patient_identity": "pat-1"})
        assert again["ok"] is False and again["error"]["code"] == "conflict"
        stop = await doc.call("rehab:stop", {"session_id": session_id})
        assert stop["ok"], stop
        report = stop["report"]
        assert report["reps"] == clip["reps"] == 4
        assert report["end_reason"] == "stopped" and report["patient"] == "pat-1"
        assert (await patient.next("rehab:report", timeout=10))["session_id"] == session_id
        # no rep event beyond the clip's four
        assert not [u for u in doc.drain("rehab:update") if u["rep_detail"] and u["rep"] > 4]
    finally:
        await media.close()
    record = await gather_record(live.app[RECORDS], room, live.app[RECORD_CONTRIBUTORS])
    bundle = to_fhir_bundle(record)
    obs = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation"]
    assert len(obs) == 1
    assert obs[0]["component"][0]["valueQuantity"]["value"] == 4
    assert obs[0]["code"]["coding"][0]["code"] == "73985-4"  # LOINC exercise activity
    check_fhir(bundle)  # the official FHIR R4 JSON schema and fhir.resources
