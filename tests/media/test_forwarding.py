"""Forwarding with real aiortc peers over UDP: decodable frames, identical bytes, no transcoding."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from aiortc import rtcrtpreceiver, rtcrtpsender
from aiortc.codecs.h264 import H264Encoder, h264_depayload
from aiortc.codecs.opus import OpusEncoder
from aiortc.codecs.vpx import Vp8Encoder, vp8_depayload

from media.aiortc_patch import fast_sender, sender_packer
from media.client import MediaClient, SyntheticVideoTrack, ToneAudioTrack
from media.frames import FramePacker

from .conftest import SEND_PATHS, Harness, send_path_params, wait_for


@pytest.fixture(params=list(SEND_PATHS))
def send_path(request: pytest.FixtureRequest) -> dict[str, bool]:
    """Every test here runs on the compiled fast path, the Python one and aiortc's own."""
    return send_path_params(request)


def recording_encoder(mime: str) -> tuple[list[bytes], Any]:
    """An aiortc encoder that records every encoded frame's bytes (as RTP will carry them)."""
    frames: list[bytes] = []
    encoder: Any
    if mime == "video/vp8":
        encoder = Vp8Encoder()
        depay = vp8_depayload
    elif mime == "video/h264":
        encoder = H264Encoder()
        depay = h264_depayload
    else:
        encoder = OpusEncoder()

        def depay(payload: bytes) -> bytes:
            return payload

    original = encoder.encode

    def encode(frame: Any, force_keyframe: bool = False) -> tuple[list[bytes], int]:
        payloads, ts = original(frame, force_keyframe)
        if mime.startswith("audio/"):
            frames.extend(payloads)
        elif payloads:
            frames.append(b"".join(depay(p) for p in payloads))
        return payloads, ts

    encoder.encode = encode
    return frames, encoder


async def publish_recorded(
    client: MediaClient, video_mime: str = "video/vp8"
) -> dict[str, list[bytes]]:
    video, audio = SyntheticVideoTrack(), ToneAudioTrack()
    recorded_v, enc_v = recording_encoder(video_mime)
    recorded_a, enc_a = recording_encoder("audio/opus")
    pc_senders = await client.publish(
        {"camera": video, "microphone": audio}, encoders={"camera": enc_v, "microphone": enc_a}
    )
    assert set(pc_senders) == {"camera", "microphone"}
    return {"camera": recorded_v, "microphone": recorded_a}


def assert_contiguous_subsequence(received: list[bytes], sent: list[bytes], minimum: int) -> None:
    """Every received frame is a sent frame, in order, without gaps (no transcoding, no loss)."""
    assert len(received) >= minimum, f"only {len(received)} frames received"
    start = sent.index(received[0])
    assert sent[start : start + len(received)] == received


async def test_publisher_to_three_subscribers_frames_decode(harness: Harness) -> None:
    alice = await harness.join("alice", subscribe=False)
    subs = [await harness.join(f"sub{i}", publish=False) for i in range(3)]
    await alice.publish({"camera": SyntheticVideoTrack(), "microphone": ToneAudioTrack()})

    def decoded_enough() -> bool:
        return all(
            s.received.get(("alice", src)) is not None and s.received[("alice", src)].frames >= 20
            for s in subs
            for src in ("camera", "microphone")
        )

    await wait_for(decoded_enough, timeout=30)
    for s in subs:
        video = s.received[("alice", "camera")]
        assert video.kind == "video" and video.size == (320, 240)
    assert not harness.errors


@pytest.mark.parametrize("video_mime", ["video/vp8", "video/h264"])
async def test_subscriber_bytes_equal_publisher_encoder_output(
    harness: Harness, video_mime: str
) -> None:
    alice = await harness.join("alice", subscribe=False, video_codec=video_mime)
    bob = await harness.join("bob", publish=False, record=True)
    sent = await publish_recorded(alice, video_mime)
    await wait_for(
        lambda: all(
            len(bob.received.get(("alice", s), _EMPTY).payloads) >= 30
            for s in ("camera", "microphone")
        ),
        timeout=30,
    )
    pub = harness.room.publications[("alice", "camera")]
    assert pub.mime == video_mime
    video = list(bob.received[("alice", "camera")].payloads)
    audio = list(bob.received[("alice", "microphone")].payloads)
    if video_mime == "video/h264":
        # RTP carries NAL units: compare them (start-code length is not payload)
        def nals(frames: list[bytes]) -> list[list[bytes]]:
            return [list(H264Encoder._split_bitstream(f)) for f in frames]

        got, want = nals(video), nals(sent["camera"])
        start = want.index(got[0])
        assert want[start : start + len(got)] == got
    else:
        assert_contiguous_subsequence(video, sent["camera"], 30)
    assert_contiguous_subsequence(audio, sent["microphone"], 30)


class _Empty:
    payloads: list[bytes] = []


_EMPTY = _Empty()


async def test_nothing_in_the_sfu_encodes_or_decodes(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    encoders: list[str] = []
    decoders: list[str] = []
    encode_calls: dict[int, int] = {}
    real_get_encoder, real_get_decoder = rtcrtpsender.get_encoder, rtcrtpreceiver.get_decoder

    def get_encoder(codec: Any) -> Any:
        encoders.append(codec.mimeType)
        return real_get_encoder(codec)

    def get_decoder(codec: Any) -> Any:
        decoders.append(codec.mimeType)
        return real_get_decoder(codec)

    for cls in (Vp8Encoder, H264Encoder):
        real = cls.encode

        def counting(self: Any, frame: Any, force_keyframe: bool = False, _r: Any = real) -> Any:
            encode_calls[id(self)] = encode_calls.get(id(self), 0) + 1
            return _r(self, frame, force_keyframe)

        monkeypatch.setattr(cls, "encode", counting)
    monkeypatch.setattr(rtcrtpsender, "get_encoder", get_encoder)
    monkeypatch.setattr(rtcrtpreceiver, "get_decoder", get_decoder)

    alice = await harness.join("alice", subscribe=False)
    # subscribers that do not decode either: any decoder in this process would be the SFU's
    subs = [await harness.join(f"s{i}", publish=False, decode=False) for i in range(3)]
    await alice.publish({"camera": SyntheticVideoTrack(), "microphone": ToneAudioTrack()})
    await wait_for(
        lambda: all(s.received.get(("alice", "camera"), _R0).frames >= 30 for s in subs),
        timeout=30,
    )
    own = id(sender_packer(alice.published_senders["camera"]))
    assert encoders == ["video/VP8", "audio/opus"]  # the publisher's two, nothing else
    assert decoders == []
    assert set(encode_calls) == {own}
    server_senders = [
        sub.sender
        for session in harness.room.sessions.values()
        for sub in session.subscriptions.values()
    ]
    assert len(server_senders) == 6
    assert all(isinstance(sender_packer(s), FramePacker) for s in server_senders)


class _R0:
    frames = 0


async def test_late_joiner_gets_a_picture_promptly(harness: Harness) -> None:
    alice = await harness.join("alice", subscribe=False)
    early = await harness.join("early", publish=False, decode=False)
    await alice.publish({"camera": SyntheticVideoTrack()})
    await wait_for(lambda: early.received.get(("alice", "camera"), _R0).frames >= 45, 30)
    pub = harness.room.publications[("alice", "camera")]
    keyframes_before, plis_before = pub.assembler.keyframes, pub.plis_sent

    late = await harness.join("late", publish=False)
    await wait_for(lambda: late.received.get(("alice", "camera"), _R0).frames >= 1, 30)
    rec = late.received[("alice", "camera")]
    sub = harness.room.sessions["late"].subscriptions[("alice", "camera")]
    # the new subscription asked the publisher for a keyframe once its sender started pulling
    assert pub.plis_sent > plis_before
    assert pub.assembler.keyframes > keyframes_before
    assert sub.first_pull_at is not None and rec.first_frame_at is not None
    # generous bound on the part the SFU controls (pull -> picture); the requirement is 1 s
    assert rec.first_frame_at - sub.first_pull_at < 1.0, rec.first_frame_at - sub.first_pull_at


async def test_stalled_subscriber_does_not_slow_the_others(harness: Harness) -> None:
    alice = await harness.join("alice", subscribe=False)
    healthy = [await harness.join(f"ok{i}", publish=False, decode=False) for i in range(2)]
    stalled = await harness.join("stalled", publish=False, decode=False)
    await alice.publish({"camera": SyntheticVideoTrack(), "microphone": ToneAudioTrack()})
    everyone = [*healthy, stalled]
    await wait_for(
        lambda: all(c.received.get(("alice", "camera"), _R0).frames >= 15 for c in everyone), 30
    )

    # stall the stalled subscriber's sending path: every RTP/RTCP send now blocks forever
    # (aiortc's path awaits each packet's send; the fast path awaits nothing per packet and
    # sends from the forwarder's stack, so there its senders' task blocks and the direct
    # send declines: either way its senders stop taking frames)
    gate = asyncio.Event()
    session = harness.room.sessions["stalled"]
    transceivers = session.sub_pc.getTransceivers()  # type: ignore[union-attr]
    transport = transceivers[0].sender.transport

    async def blocked_send(data: bytes) -> None:
        await gate.wait()

    transport._send_rtp = blocked_send  # type: ignore[method-assign]
    for t in transceivers:
        fast = fast_sender(t.sender)
        if fast is not None:
            fast.ready = lambda: False

            async def blocked_frame(codec: Any, _next: Any = t.sender._next_encoded_frame) -> None:
                await gate.wait()
                await _next(codec)

            t.sender._next_encoded_frame = blocked_frame  # type: ignore[method-assign]
    pub = harness.room.publications[("alice", "camera")]
    frames0 = pub.assembler.frames
    got0 = [c.received[("alice", "camera")].frames for c in healthy]
    t0 = time.monotonic()
    await wait_for(lambda: pub.assembler.frames - frames0 >= 60, 30)
    await asyncio.sleep(0.3)  # let the last frames reach the healthy subscribers
    published = pub.assembler.frames - frames0
    for c, before in zip(healthy, got0, strict=True):
        ratio = (c.received[("alice", "camera")].frames - before) / published
        assert ratio > 0.9, f"healthy subscriber got {ratio:.2f} of the frames"
    stalled_sub = session.subscriptions[("alice", "camera")]
    assert len(stalled_sub.queue) <= stalled_sub.capacity
    assert stalled_sub.frames_dropped > 0
    audio_sub = session.subscriptions[("alice", "microphone")]
    assert len(audio_sub.queue) <= audio_sub.capacity
    assert time.monotonic() - t0 < 30
    gate.set()
