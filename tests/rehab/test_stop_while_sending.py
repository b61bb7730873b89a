"""``rehab:stop`` while the patient's camera still sends: the tap's reader must end on cancel.

A real VP8 encoder feeds a real DecodingTap through the Publication fan-out (the SFU's path,
without the network leg), and a VisionAgent reads the tap with a stand-in pose model.
"""

from __future__ import annotations

import asyncio
import fractions
from collections.abc import AsyncIterator

import av
import numpy as np
import pytest
from aiortc.codecs import depayload
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from media.forwarder import Publication
from media.frames import EncodedFrame, is_vp8_keyframe
from media.settings import MediaSettings
from media.tap import DecodingTap
from rehab_vision.agent import VisionAgent
from rehab_vision.landmarks import Landmarks
from rehab_vision.models import RehabSessionStart

VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)


class NoPose:
    """Stand-in pose model: nobody in the picture (the test is about stopping, not counting)."""

    def process(self, rgb: np.ndarray, t: float) -> Landmarks | None:
        return None

    def close(self) -> None:
        return None


class Camera:
    """Encodes a moving test picture with aiortc's VP8 encoder and pushes whole frames into a
    publication, as the SFU's assembler does, every ``interval`` seconds until stopped."""

    def __init__(self, pub: Publication, interval: float = 0.02) -> None:
        self.pub = pub
        self.interval = interval
        self.encoder = Vp8Encoder()
        self.n = 0
        self.pushed = asyncio.Event()

    def encode(self) -> EncodedFrame:
        img = np.full((120, 160, 3), (self.n * 7) % 255, dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        frame.pts = self.n * 3000
        frame.time_base = fractions.Fraction(1, 90000)
        payloads, ts = self.encoder.encode(frame, force_keyframe=self.n == 0)
        data = b"".join(depayload(VP8, p) for p in payloads)
        self.n += 1
        return EncodedFrame(data=data, timestamp=ts, keyframe=is_vp8_keyframe(data), arrival=0.0)

    def push(self) -> None:
        frame = self.encode()
        for sub in self.pub.subscriptions:
            sub.push(frame)  # type: ignore[attr-defined]
        self.pushed.set()

    async def run(self) -> None:
        while True:
            self.push()
            await asyncio.sleep(self.interval)  # the camera's frame clock


@pytest.fixture
async def pub() -> AsyncIterator[Publication]:
    p = Publication("pat", "camera", VP8, MediaSettings())
    yield p
    p.closed = True


async def _waiting(task: asyncio.Task[object], tap: DecodingTap) -> None:
    """Let ``task`` run until it waits for a frame (bounded)."""
    for _ in range(1000):
        await asyncio.sleep(0)
        if not tap.queue and not task.done() and tap._wakeup.is_set() is False:
            return
    raise AssertionError("reader never waited")


async def test_cancel_landing_with_a_frame_is_not_swallowed(pub: Publication) -> None:
    """The exact race: a frame wakes the reader in the same tick as its cancellation."""
    tap = DecodingTap(pub)
    cam = Camera(pub)
    try:
        cam.push()  # keyframe
        first = await asyncio.wait_for(tap.recv(), 10)
        assert first.width == 160
        reader = asyncio.create_task(tap.recv())
        await _waiting(reader, tap)
        cam.push()
        reader.cancel()  # same tick as the wakeup
        done, _ = await asyncio.wait({reader}, timeout=10)
        assert reader in done
        assert reader.cancelled(), "recv() swallowed the cancellation and returned a frame"
    finally:
        tap.stop()


async def test_agent_stops_while_the_camera_still_sends(pub: Publication) -> None:
    tap = DecodingTap(pub)
    cam = Camera(pub)
    sending = asyncio.create_task(cam.run())
    updates: list[dict[str, object]] = []

    async def on_update(payload: dict[str, object]) -> None:
        updates.append(payload)

    agent = VisionAgent(
        tap, RehabSessionStart(exercise="squat"), on_update, estimator_factory=NoPose
    )
    try:
        await agent.start()
        for _ in range(500):  # bounded: until the agent has read a few frames
            if agent.stats.received >= 3:
                break
            cam.pushed.clear()
            await asyncio.wait_for(cam.pushed.wait(), 10)
        assert agent.stats.received >= 3
        report = await asyncio.wait_for(agent.stop(), 10)  # the bug: waited for the camera
        assert report["reps"] == 0
        assert all(t.done() for t in agent._tasks)
        assert not sending.done(), "the camera must still be sending when Stop returns"
        received = agent.stats.received
        cam.pushed.clear()
        await asyncio.wait_for(cam.pushed.wait(), 10)
        assert agent.stats.received == received  # nothing read after stop
    finally:
        sending.cancel()
        tap.stop()
        await asyncio.gather(sending, return_exceptions=True)


async def test_many_stops_under_a_fast_camera(pub: Publication) -> None:
    """Stop lands at every point of the read/decode cycle: none may hang."""
    cam = Camera(pub, interval=0.002)
    sending = asyncio.create_task(cam.run())
    try:
        for i in range(20):
            tap = DecodingTap(pub)
            reader = asyncio.create_task(tap.recv())
            for _ in range(i):  # vary where in the cycle the cancel lands
                await asyncio.sleep(0)
            reader.cancel()
            done, _ = await asyncio.wait({reader}, timeout=10)
            assert reader in done
            tap.stop()
    finally:
        sending.cancel()
        await asyncio.gather(sending, return_exceptions=True)
