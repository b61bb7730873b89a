"""Recording with consent: only consenting participants are recorded, files play back whole."""

from __future__ import annotations

import hashlib

import aiohttp
import av

from media.client import SyntheticVideoTrack, ToneAudioTrack
from recording.service import RECORDING
from tests.helpers import server_sql, wait_until
from tests.media.test_signaling_integration import media_peer
from tests.validators import check_fhir, ffprobe, probe_span


def sink_frames(live, room, key):
    rec = live.app[RECORDING].active.get(room)
    entry = rec.sinks.get(key) if rec else None
    return entry[0].frames if entry else 0


async def test_recording_needs_consent_and_produces_playable_files(live, connect):
    host_sio, host = await media_peer(connect, "r", "dr", "host", decode=False)
    clin_sio, clin = await media_peer(connect, "r", "cardio", "clinician", decode=False)
    try:
        await host.publish({"camera": SyntheticVideoTrack(), "microphone": ToneAudioTrack()})
        await clin.publish({"camera": SyntheticVideoTrack(), "microphone": ToneAudioTrack()})
        media = live.app[RECORDING].media
        await wait_until(lambda: len(media.rooms["r"].publications) == 4, 30)

        # only a participant with the record grant may start one
        ack = await clin_sio.call("record:start", {})
        assert ack["error"]["code"] == "permission_denied"

        ack = await host_sio.call("record:start", {"reason": "teaching file"})
        assert ack["ok"], ack
        rec_id = ack["recording"]["recording_id"]
        assert ack["recording"]["consented"] == ["dr"]
        request = await clin_sio.next("record:consent_request")
        assert request == {"recording_id": rec_id, "by": "dr", "reason": "teaching file"}
        state = await clin_sio.next("record:state", where=lambda s: s.get("active"))
        assert state["by"] == "dr"

        # the clinician declines: nothing of theirs is recorded
        ack = await clin_sio.call("record:consent", {"recording_id": rec_id, "consent": False})
        assert ack["recording"]["declined"] == ["cardio"]
        await wait_until(lambda: sink_frames(live, "r", ("dr", "camera")) >= 30, 30)
        await wait_until(lambda: sink_frames(live, "r", ("dr", "microphone")) >= 50, 30)
        assert sink_frames(live, "r", ("cardio", "camera")) == 0

        # ... then changes their mind
        ack = await clin_sio.call("record:consent", {"recording_id": rec_id, "consent": True})
        assert ack["recording"]["consented"] == ["cardio", "dr"]
        await wait_until(lambda: sink_frames(live, "r", ("cardio", "camera")) >= 20, 30)

        ack = await host_sio.call("record:stop", {})
        assert ack["ok"], ack
        files = {(f["identity"], f["source"]): f for f in ack["files"]}
        assert set(files) == {
            ("dr", "camera"),
            ("dr", "microphone"),
            ("cardio", "camera"),
            ("cardio", "microphone"),
        }
        stopped = await clin_sio.next("record:state", where=lambda s: not s.get("active"))
        assert stopped["recording_id"] == rec_id
    finally:
        await host.close()
        await clin.close()

    root = live.settings.data_dir / "recordings"
    for (identity, source), f in files.items():
        path = root / f["path"]
        with av.open(str(path)) as container:
            stream = container.streams[0]
            assert stream.codec_context.name == ("opus" if source == "microphone" else "vp8")
            if source == "camera":
                decoded = sum(1 for _ in container.decode(video=0))
                assert decoded == f["frames"], (identity, decoded, f["frames"])
                assert stream.codec_context.width == 320
            else:
                packets = sum(1 for p in container.demux(audio=0) if p.size)
                assert packets == f["frames"]
        # ffprobe reads it without a complaint, as long as it was recorded (not 90x)
        probe = ffprobe(path)
        assert len(probe["packets"]) == f["frames"]
        assert abs(probe_span(probe) - f["duration_s"]) < 0.05, (path.name, probe["format"])
        assert f["duration_s"] < 60, f

    # the files are in the record (Consent + DocumentReference) and in the audit log
    headers = {"Authorization": f"Bearer {live.settings.admin_api_key.get_secret_value()}"}
    url = f"{live.url}/api/rooms/r/record"
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as resp:
        bundle = await resp.json()
    check_fhir(bundle)  # the official FHIR R4 JSON schema and fhir.resources
    kinds = [e["resource"]["resourceType"] for e in bundle["entry"]]
    assert kinds.count("Consent") == 3  # dr by starting, cardio no, cardio yes
    assert kinds.count("DocumentReference") == 4
    # each file's DocumentReference URL serves that very file to the admin key
    by_hash = {
        hashlib.sha256((root / f["path"]).read_bytes()).hexdigest(): f for f in files.values()
    }
    async with aiohttp.ClientSession() as http:
        for e in bundle["entry"]:
            if e["resource"]["resourceType"] != "DocumentReference":
                continue
            attachment = e["resource"]["content"][0]["attachment"]
            assert attachment["url"].startswith(live.url + "/api/rooms/r/recordings/")
            async with http.get(attachment["url"], headers=headers) as resp:
                assert resp.status == 200 and resp.content_type == attachment["contentType"]
                data = await resp.read()
            assert hashlib.sha256(data).hexdigest() in by_hash
            assert len(data) == attachment["size"]
    rows = await server_sql(
        live.settings.data_dir / "teleconsult.db",
        "SELECT detail FROM audit_entries WHERE action = 'recording.file'",
    )
    hashes = {r[0] for r in rows}
    for f in files.values():
        digest = hashlib.sha256((root / f["path"]).read_bytes()).hexdigest()
        assert any(digest in h for h in hashes)


async def test_consent_for_unknown_recording(connect):
    host = await connect("r", "dr", "host")
    ack = await host.call("record:consent", {"recording_id": "nope", "consent": True})
    assert ack["error"]["code"] == "not_found"
    ack = await host.call("record:stop", {})
    assert ack["error"]["code"] == "not_found"
    assert host.joined["recording"] is None
