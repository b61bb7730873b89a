"""Publication.close() cascades to what consumes it (mediasoup's producer -> consumers)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from media.forwarder import Publication, Subscription
from media.frames import EncodedFrame
from media.settings import MediaSettings
from media.sink import FrameSink
from media.tap import DecodingTap
from recording.sink import EncodedFileSink

VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)
SETTINGS = MediaSettings()


def keyframe(ts: int = 0) -> EncodedFrame:
    return EncodedFrame(data=b"\x10" + bytes(20), timestamp=ts, keyframe=True, arrival=0.0)


def subscribe(pub: Publication, who: str, closed: list[str]) -> Subscription:
    sub = Subscription(who, pub, SETTINGS)
    sub.on_closed = lambda s: closed.append(s.subscriber)
    return sub


async def test_close_closes_every_subscription_once() -> None:
    pub = Publication("alice", "camera", VP8, SETTINGS)
    closed: list[str] = []
    bob, carol = subscribe(pub, "bob", closed), subscribe(pub, "carol", closed)
    pub.on_frame(keyframe())
    assert len(bob.queue) == len(carol.queue) == 1

    pub.close()
    pub.close()  # idempotent: nothing closes twice
    assert bob.closed and carol.closed
    assert sorted(closed) == ["bob", "carol"]
    assert not pub.subscriptions
    assert len(bob.queue) == 0  # nothing left to forward
    bob.close()  # closing again by hand is harmless
    assert sorted(closed) == ["bob", "carol"]


async def test_closing_a_layer_being_switched_to_keeps_the_subscription() -> None:
    high = Publication("alice", "camera", VP8, SETTINGS)
    low = Publication("alice", "camera_low", VP8, SETTINGS)
    closed: list[str] = []
    sub = subscribe(high, "bob", closed)
    high.on_frame(keyframe())
    await sub.track.recv()  # forwarding high: a switch now waits for low's next keyframe
    sub.switch_to(low)
    assert sub.pending is low

    low.close()
    assert not sub.closed and sub.pending is None and sub.current is high
    high.close()
    assert sub.closed and closed == ["bob"]


async def test_closing_the_layer_in_use_closes_the_subscription() -> None:
    high = Publication("alice", "camera", VP8, SETTINGS)
    low = Publication("alice", "camera_low", VP8, SETTINGS)
    closed: list[str] = []
    sub = subscribe(high, "bob", closed)
    sub.switch_to(low)
    low.on_frame(keyframe())  # the switch completes on low's keyframe
    assert sub.current is low and sub.layer == "low"

    low.close()
    assert sub.closed and closed == ["bob"]
    assert sub not in high.subscriptions


async def test_a_tap_drains_then_ends() -> None:
    pub = Publication("alice", "camera", VP8, SETTINGS)
    tap = DecodingTap(pub)
    try:
        reader = asyncio.ensure_future(tap.recv())
        await asyncio.sleep(0)
        pub.close()  # wakes the waiting reader
        with pytest.raises(MediaStreamError):
            await asyncio.wait_for(reader, 5)
    finally:
        tap.stop()


async def test_a_recording_sink_is_left_to_its_owner(tmp_path: Path) -> None:
    pub = Publication("alice", "camera", VP8, SETTINGS)
    sink = EncodedFileSink(pub, tmp_path / "cam")
    pub.close()
    assert not sink.closed  # its recording closes it, to write the file out
    result = await asyncio.wait_for(sink.close(), 10)
    assert result.frames == 0 and result.dropped == 0


async def test_every_consumer_is_a_frame_sink(tmp_path: Path) -> None:
    pub = Publication("alice", "camera", VP8, SETTINGS)
    tap = DecodingTap(pub)
    sink = EncodedFileSink(pub, tmp_path / "cam")
    sub = Subscription("bob", pub, SETTINGS)
    try:
        assert all(isinstance(s, FrameSink) for s in (sub, tap, sink))
        assert pub.subscriptions == {sub, tap, sink}
    finally:
        tap.stop()
        await asyncio.wait_for(sink.close(), 10)
