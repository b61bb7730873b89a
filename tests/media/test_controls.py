"""Subscriber and host controls: explicit subscribe, pause, mute, layers, active speaker, errors."""

from __future__ import annotations

import asyncio

import pytest

from media.client import SyntheticVideoTrack, ToneAudioTrack
from media.messages import MediaError
from media.room import RoomMedia
from media.settings import MediaSettings

from .conftest import SEND_PATHS, Harness, send_path_params, wait_for


@pytest.fixture(params=list(SEND_PATHS))
def send_path(request: pytest.FixtureRequest) -> dict[str, bool]:
    """Every test here runs on the compiled fast path, the Python one and aiortc's own."""
    return send_path_params(request)


class _R0:
    frames = 0


def frames(client: object, key: tuple[str, str]) -> int:
    return client.received.get(key, _R0).frames  # type: ignore[attr-defined]


async def settle_count(fn: object, quiet: float = 0.4) -> int:
    """The value of ``fn()`` once it has stopped changing for ``quiet`` seconds."""
    last = fn()  # type: ignore[operator]
    for _ in range(50):
        await asyncio.sleep(quiet)
        now = fn()  # type: ignore[operator]
        if now == last:
            return now
        last = now
    raise AssertionError("value never settled")


async def test_explicit_subscribe_and_unsubscribe(send_path: dict[str, bool]) -> None:
    harness = Harness(RoomMedia("r", MediaSettings(auto_subscribe=False, **send_path)))
    try:
        alice = await harness.join("alice", subscribe=False)
        bob = await harness.join("bob", publish=False, decode=False)
        await alice.publish({"camera": SyntheticVideoTrack(), "microphone": ToneAudioTrack()})
        await bob.wait_event(
            lambda ev, p: ev == "rtc:track_published" and p["source"] == "microphone"
        )
        assert not harness.room.sessions["bob"].subscriptions  # nothing until asked

        ack = await harness.request("bob", "rtc:subscribe", {"publisher": "alice"})
        assert sorted(ack["subscribed"]) == ["camera", "microphone"]  # type: ignore[index]
        await wait_for(lambda: frames(bob, ("alice", "camera")) >= 10, 30)

        ack = await harness.request(
            "bob", "rtc:unsubscribe", {"publisher": "alice", "sources": ["camera"]}
        )
        assert ack == {"unsubscribed": ["camera"]}
        assert list(harness.room.sessions["bob"].subscriptions) == [("alice", "microphone")]
        # the renegotiated offer turns the camera m-line inactive; audio keeps flowing
        await bob.wait_event(
            lambda ev, p: ev == "rtc:offer" and [t["source"] for t in p["tracks"]] == ["microphone"]
        )
        stopped = await settle_count(lambda: frames(bob, ("alice", "camera")))
        audio = frames(bob, ("alice", "microphone"))
        await wait_for(lambda: frames(bob, ("alice", "microphone")) > audio + 10, 10)
        assert frames(bob, ("alice", "camera")) == stopped
    finally:
        await harness.close()


async def test_pause_and_resume_restart_on_a_keyframe(harness: Harness) -> None:
    alice = await harness.join("alice", subscribe=False)
    bob = await harness.join("bob", publish=False, decode=False)
    await alice.publish({"camera": SyntheticVideoTrack()})
    await wait_for(lambda: frames(bob, ("alice", "camera")) >= 10, 30)
    pause = {"publisher": "alice", "source": "camera", "paused": True}
    assert await harness.request("bob", "rtc:pause", pause) == {"paused": True}
    paused_at = await settle_count(lambda: frames(bob, ("alice", "camera")))
    keyframes = bob.received[("alice", "camera")].keyframes
    await asyncio.sleep(0.5)
    assert frames(bob, ("alice", "camera")) == paused_at
    assert await harness.request("bob", "rtc:pause", {**pause, "paused": False}) == {
        "paused": False
    }
    await wait_for(lambda: frames(bob, ("alice", "camera")) > paused_at + 10, 10)
    assert bob.received[("alice", "camera")].keyframes > keyframes  # resumed on a keyframe


async def test_host_mute_stops_forwarding_and_blocks_self_unmute(harness: Harness) -> None:
    alice = await harness.join("alice", subscribe=False)
    bob = await harness.join("bob", publish=False, decode=False)
    await alice.publish({"camera": SyntheticVideoTrack(), "microphone": ToneAudioTrack()})
    mic = ("alice", "microphone")
    await wait_for(lambda: frames(bob, mic) >= 10, 30)

    await harness.room.set_forced_mute("alice", "audio", True)
    await bob.wait_event(
        lambda ev, p: ev == "rtc:track_muted" and p["source"] == "microphone" and p["forced"]
    )
    muted_at = await settle_count(lambda: frames(bob, mic))
    cam = frames(bob, ("alice", "camera"))
    await wait_for(lambda: frames(bob, ("alice", "camera")) > cam + 10, 10)  # video unaffected
    assert frames(bob, mic) == muted_at
    with pytest.raises(MediaError) as err:
        await harness.request("alice", "rtc:mute", {"source": "microphone", "muted": False})
    assert err.value.code == "forced_mute"

    await harness.room.set_forced_mute("alice", "audio", False)
    await wait_for(lambda: frames(bob, mic) > muted_at + 10, 10)

    # a publisher's own mute works the same way and can be lifted by itself
    await harness.request("alice", "rtc:mute", {"source": "camera", "muted": True})
    cam_muted = await settle_count(lambda: frames(bob, ("alice", "camera")))
    await harness.request("alice", "rtc:mute", {"source": "camera", "muted": False})
    await wait_for(lambda: frames(bob, ("alice", "camera")) > cam_muted + 5, 10)


async def test_low_layer_on_request_and_back(harness: Harness) -> None:
    alice = await harness.join("alice", subscribe=False)
    bob = await harness.join("bob", publish=False)
    await alice.publish(
        {"camera": SyntheticVideoTrack(320, 240), "camera_low": SyntheticVideoTrack(160, 120)}
    )
    cam = ("alice", "camera")
    # a subscription starts on the low layer; a padding probe moves it up
    await wait_for(lambda: bob.received.get(cam) is not None and bob.received[cam].size, 30)
    await wait_for(lambda: bob.received[cam].size == (320, 240), 30)
    # camera_low is a layer of camera, never a track of its own
    assert list(harness.room.sessions["bob"].subscriptions) == [cam]

    assert await harness.request("bob", "rtc:layer", {"publisher": "alice", "layer": "low"}) == {
        "layer": "low"
    }
    await wait_for(lambda: bob.received[cam].size == (160, 120), 10)
    sub = harness.room.sessions["bob"].subscriptions[cam]
    assert sub.layer == "low"
    await harness.request("bob", "rtc:layer", {"publisher": "alice", "layer": "high"})
    await wait_for(lambda: bob.received[cam].size == (320, 240), 10)
    assert sub.layer == "high"


async def test_active_speaker_follows_the_loud_publisher(harness: Harness) -> None:
    loud = await harness.join("loud", decode=False)
    quiet = await harness.join("quiet", decode=False)
    await loud.publish({"microphone": ToneAudioTrack(amplitude=0.5)})
    await quiet.publish({"microphone": ToneAudioTrack(amplitude=0.0)})
    _, payload = await quiet.wait_event(
        lambda ev, p: ev == "rtc:active_speaker" and p["identity"] is not None, timeout=20
    )
    assert payload["identity"] == "loud"
    assert payload["levels"]["loud"] > payload["levels"].get("quiet", 0)

    await harness.room.set_forced_mute("loud", "audio", True)  # a muted speaker is not active
    await quiet.wait_event(lambda ev, p: ev == "rtc:active_speaker" and p["identity"] is None)


async def test_stats_reach_the_client(harness: Harness) -> None:
    alice = await harness.join("alice", decode=False)
    bob = await harness.join("bob", publish=False, decode=False)
    await alice.publish({"camera": SyntheticVideoTrack()})
    await wait_for(lambda: frames(bob, ("alice", "camera")) >= 10, 30)
    ack = await harness.request("bob", "rtc:stats", {})
    sub = ack["stats"]["subscriptions"]["alice/camera"]  # type: ignore[index]
    assert sub["frames_forwarded"] >= 10 and sub["kind"] == "video"
    _, pushed = await alice.wait_event(
        lambda ev, p: ev == "rtc:stats" and p["publications"].get("camera", {}).get("frames_in")
    )
    assert pushed["publications"]["camera"]["codec"] == "video/vp8"
    _, later = await bob.wait_event(
        lambda ev, p: (
            ev == "rtc:stats"
            and (p["subscriptions"].get("alice/camera", {}).get("bitrate_kbps") or 0) > 0
            and p["subscriptions"]["alice/camera"]["rtt_ms"] is not None
        ),
        timeout=20,
    )
    assert later["subscriptions"]["alice/camera"]["fraction_lost"] is not None
    room = harness.room.stats()
    assert room["subscriptions"] == 1 and room["frames_forwarded"] >= 10


async def test_untrusted_requests_get_typed_errors(harness: Harness) -> None:
    await harness.join("alice")
    await harness.join("viewer", publish=False, subscribe=True)

    async def code(identity: str, event: str, data: dict[str, object]) -> str:
        with pytest.raises(MediaError) as err:
            await harness.request(identity, event, data)
        return err.value.code

    assert await code("viewer", "rtc:offer", {"sdp": "v=0\r\n" + "x" * 20, "tracks": []}) == (
        "permission_denied"
    )
    assert await code("alice", "rtc:offer", {"sdp": "not an sdp at all", "tracks": []}) in (
        "bad_sdp",
        "bad_request",
    )
    assert await code("alice", "rtc:answer", {"sdp": "v=0" + "x" * 20, "offer_id": 3}) == (
        "stale_answer"
    )
    assert await code("alice", "rtc:pause", {"publisher": "x", "source": "camera", "paused": True})
    early = {"pc": "publisher", "candidate": "candidate:1 1 udp 1 192.0.2.9 9 typ host"}
    for _ in range(32):  # trickled before any offer: kept (bounded) for when it lands
        assert await harness.request("alice", "rtc:candidate", early) is None
    assert await code("alice", "rtc:candidate", early) == "too_many_candidates"
    assert await code("alice", "rtc:mute", {"source": "camera", "muted": True}) == "not_published"
    assert await code("alice", "rtc:subscribe", {"publisher": "nobody"}) == "not_found"
    with pytest.raises(MediaError) as err:
        await harness.room.handle("ghost", "rtc:stats", harness_model("rtc:stats", {}))
    assert err.value.code == "not_joined"


def harness_model(event: str, data: dict[str, object]) -> object:
    from media.messages import CLIENT_EVENTS

    return CLIENT_EVENTS[event].model_validate(data)


async def test_offer_with_an_undeclared_or_simulcast_track_is_refused(harness: Harness) -> None:
    from aiortc import RTCConfiguration, RTCPeerConnection

    await harness.join("alice")
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.addTransceiver(SyntheticVideoTrack(), direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        sdp = pc.localDescription.sdp
        with pytest.raises(MediaError) as err:
            await harness.request("alice", "rtc:offer", {"sdp": sdp, "tracks": []})
        assert err.value.code == "bad_request"
        wrong_kind = [{"mid": "0", "source": "microphone"}]
        with pytest.raises(MediaError) as err:
            await harness.request("alice", "rtc:offer", {"sdp": sdp, "tracks": wrong_kind})
        assert err.value.code == "bad_request"
        simulcast = sdp + "a=rid:h send\r\na=simulcast:send h\r\n"
        with pytest.raises(MediaError) as err:
            await harness.request(
                "alice",
                "rtc:offer",
                {"sdp": simulcast, "tracks": [{"mid": "0", "source": "camera"}]},
            )
        assert err.value.code == "simulcast_unsupported"
    finally:
        await pc.close()


async def test_decoding_tap_gets_pictures_and_detaches(harness: Harness) -> None:
    alice = await harness.join("alice", subscribe=False)
    await alice.publish({"camera": SyntheticVideoTrack(320, 240)})
    await wait_for(lambda: ("alice", "camera") in harness.room.publications, 10)
    tap = harness.room.open_tap("alice", "camera")
    pictures = [await asyncio.wait_for(tap.recv(), 20) for _ in range(5)]
    assert all((p.width, p.height) == (320, 240) for p in pictures)
    assert tap.frames_decoded >= 5
    pub = harness.room.publications[("alice", "camera")]
    tap.stop()
    assert tap not in pub.subscriptions
    with pytest.raises(MediaError):
        harness.room.open_tap("alice", "microphone")


async def test_screen_share_added_by_renegotiation_and_unpublished(harness: Harness) -> None:
    alice = await harness.join("alice", subscribe=False)
    bob = await harness.join("bob", publish=False, decode=False)
    await alice.publish({"camera": SyntheticVideoTrack()})
    await wait_for(lambda: frames(bob, ("alice", "camera")) >= 5, 30)
    # a second offer on the same publisher PC adds the screen; the camera keeps flowing
    await alice.publish({"screen": SyntheticVideoTrack(640, 360, fps=5)})
    await wait_for(lambda: frames(bob, ("alice", "screen")) >= 3, 30)
    cam = frames(bob, ("alice", "camera"))
    await wait_for(lambda: frames(bob, ("alice", "camera")) > cam + 10, 10)
    assert set(harness.room.publications) == {("alice", "camera"), ("alice", "screen")}

    assert await harness.request("alice", "rtc:unpublish", {"source": "screen"}) is None
    await bob.wait_event(lambda ev, p: ev == "rtc:track_unpublished" and p["source"] == "screen")
    assert ("bob", "screen") not in harness.room.sessions["bob"].subscriptions
    assert set(harness.room.publications) == {("alice", "camera")}
    cam = frames(bob, ("alice", "camera"))
    await wait_for(lambda: frames(bob, ("alice", "camera")) > cam + 10, 10)


async def test_reoffer_with_an_inactive_m_line_unpublishes_it(harness: Harness) -> None:
    alice = await harness.join("alice", subscribe=False)
    bob = await harness.join("bob", publish=False, decode=False)
    await alice.publish({"camera": SyntheticVideoTrack(), "microphone": ToneAudioTrack()})
    await wait_for(lambda: frames(bob, ("alice", "microphone")) >= 5, 30)
    mic = next(t for t in alice.pub_pc.getTransceivers() if t.kind == "audio")  # type: ignore[union-attr]
    mic.direction = "inactive"
    await alice.publish({})
    await bob.wait_event(
        lambda ev, p: ev == "rtc:track_unpublished" and p["source"] == "microphone"
    )
    assert set(harness.room.publications) == {("alice", "camera")}
