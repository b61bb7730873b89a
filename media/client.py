"""A Python (aiortc) client of the media protocol: for tests, benchmarks and server-side agents.

Transport-agnostic like the server side: ``request(event, payload)`` sends a client event and
returns its ack; server events are handed to :meth:`MediaClient.deliver` and processed in
order by the client's own task (as they would arrive over a socket).
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import av
import numpy as np
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.codecs.vpx import VpxPayloadDescriptor
from aiortc.mediastreams import AUDIO_PTIME, VIDEO_CLOCK_RATE, MediaStreamError
from aiortc.rtcconfiguration import RTCBundlePolicy

from .aiortc_patch import (
    count_packets_only,
    install_packer,
    negotiated_codec,
    observe_decoder_input,
    tap_receiver,
    use_encoder,
)
from .frames import EncodedFrame, FramePacker, make_assembler

logger = logging.getLogger(__name__)

Request = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any] | None]]


class SyntheticVideoTrack(MediaStreamTrack):
    """A moving test pattern (yuv420p) at ``fps``; cheap to generate."""

    kind = "video"

    def __init__(self, width: int = 320, height: int = 240, fps: int = 30) -> None:
        super().__init__()
        self.width, self.height, self.fps = width, height, fps
        self._start: float | None = None
        self._count = 0
        y = np.arange(height, dtype=np.uint16)[:, None]
        x = np.arange(width, dtype=np.uint16)[None, :]
        self._base = ((x + y) % 256).astype(np.uint8)

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        target = self._start + self._count / self.fps
        delay = target - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        luma = (self._base + (self._count * 4) % 256).astype(np.uint8)
        yuv = np.concatenate(
            [luma, np.full((self.height // 2, self.width), 128, dtype=np.uint8)], axis=0
        )
        frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        frame.pts = int(self._count * VIDEO_CLOCK_RATE / self.fps)
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK_RATE)
        self._count += 1
        return frame


class ToneAudioTrack(MediaStreamTrack):
    """A sine tone (or silence with ``amplitude=0``), 20 ms s16 mono frames at 48 kHz."""

    kind = "audio"

    def __init__(self, freq: float = 440.0, amplitude: float = 0.3) -> None:
        super().__init__()
        self.freq, self.amplitude = freq, amplitude
        self._start: float | None = None
        self._count = 0
        self.rate = 48000

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        delay = self._start + self._count * AUDIO_PTIME - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        samples = int(self.rate * AUDIO_PTIME)
        t = (np.arange(samples) + self._count * samples) / self.rate
        pcm = (self.amplitude * 32767 * np.sin(2 * math.pi * self.freq * t)).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.rate
        frame.pts = self._count * samples
        frame.time_base = fractions.Fraction(1, self.rate)
        self._count += 1
        return frame


class EncodedLoopTrack(MediaStreamTrack):
    """Replays pre-encoded frames in a loop at ``fps`` (a publisher that costs no encoding).

    ``keyframes[i]``, when given, is a keyframe encoding of picture i: on a PLI the next frame
    sent is that keyframe instead of the delta frame (so late joiners get a picture).
    """

    def __init__(
        self,
        kind: str,
        frames: list[bytes],
        fps: float,
        clock_rate: int,
        keyframes: list[bytes] | None = None,
    ) -> None:
        super().__init__()
        self.kind = kind
        self.frames = frames
        self.keyframes = keyframes
        self.fps = fps
        self.step = int(clock_rate / fps)
        self._count = 0
        self._start: float | None = None
        self._want_key = False
        self.sent_times: list[float] = []  # time.monotonic() of each frame handed to the sender
        self.keyframes_sent = 0

    def request_keyframe(self) -> None:
        self._want_key = True

    async def recv(self) -> EncodedFrame:  # type: ignore[override]
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        delay = self._start + self._count / self.fps - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        i = self._count % len(self.frames)
        data = self.frames[i]
        if self._want_key and self.keyframes is not None and i != 0:
            data = self.keyframes[i]
            self.keyframes_sent += 1
        self._want_key = False
        ts = self._count * self.step
        self._count += 1
        now = time.monotonic()
        self.sent_times.append(now)
        return EncodedFrame(data=data, timestamp=ts, keyframe=False, arrival=now)


@dataclass
class ReceivedTrack:
    publisher: str
    source: str
    kind: str
    mid: str
    frames: int = 0
    keyframes: int = 0
    bytes: int = 0
    first_frame_at: float | None = None
    offered_at: float = field(default_factory=time.monotonic)
    payloads: list[bytes] = field(default_factory=list)
    frame_times: list[float] = field(default_factory=list)
    size: tuple[int, int] | None = None  # last decoded picture (width, height)


def _lean_counter(rec: ReceivedTrack, mime: str) -> Callable[..., Awaitable[None]]:
    """A packet handler that only counts frames (load tests: the cheapest possible client)."""
    is_vp8 = mime.lower() == "video/vp8"
    state = {"start": True, "key": False}

    async def handle(packet: Any, arrival_time_ms: int = 0) -> None:
        if rec.kind == "audio":
            if rec.first_frame_at is None:
                rec.first_frame_at = time.monotonic()
            rec.frames += 1
            rec.frame_times.append(time.monotonic())
            return
        if state["start"]:
            key = False
            if is_vp8 and packet.payload:
                try:
                    descr, data = VpxPayloadDescriptor.parse(packet.payload)
                    key = bool(descr.partition_start) and bool(data) and not data[0] & 1
                except ValueError:
                    key = False
            state["key"] = key
        state["start"] = bool(packet.marker)
        if packet.marker:
            if rec.first_frame_at is None:
                if not state["key"]:
                    return
                rec.first_frame_at = time.monotonic()
            rec.frames += 1
            rec.keyframes += int(state["key"])
            rec.frame_times.append(time.monotonic())

    return handle


class MediaClient:
    """One participant's media: a publisher PC and a subscriber PC, like the server's session.

    ``decode=True`` lets aiortc decode what arrives (frames counted after decoding);
    ``decode=False`` taps the receivers like the SFU does and counts encoded frames (cheap).
    ``record=True`` keeps every received encoded frame's bytes (tests compare them);
    ``lean=True`` (load tests) replaces the receivers' packet handling with a counter of
    frames (marker bits) and keyframes: no NACK, no REMB, no receiver reports, no assembly.
    """

    def __init__(
        self,
        identity: str,
        request: Request,
        decode: bool = True,
        record: bool = False,
        video_codec: str | None = None,
        lean: bool = False,
    ) -> None:
        self.identity = identity
        self.lean = lean
        self.request = request
        self.decode = decode
        self.record = record
        self.video_codec = video_codec
        self.pub_pc: RTCPeerConnection | None = None
        self.sub_pc: RTCPeerConnection | None = None
        self.received: dict[tuple[str, str], ReceivedTrack] = {}
        self.by_mid: dict[str, ReceivedTrack] = {}
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.event_signal = asyncio.Condition()
        self.published_senders: dict[str, RTCRtpSender] = {}
        self.config: dict[str, Any] | None = None
        self._mids: dict[str, str] = {}
        self.sub_connected_at: float | None = None
        self._inbox: asyncio.Queue[tuple[str, dict[str, Any]] | None] = asyncio.Queue()
        self._pump = asyncio.ensure_future(self._run())
        self._tasks: set[asyncio.Task[Any]] = set()
        self.closed = False

    @staticmethod
    def _new_pc() -> RTCPeerConnection:
        return RTCPeerConnection(
            RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
        )

    # -- publishing -------------------------------------------------------------------------
    async def publish(
        self,
        tracks: dict[str, MediaStreamTrack],
        packers: dict[str, FramePacker] | None = None,
        encoders: dict[str, Any] | None = None,
    ) -> dict[str, RTCRtpSender]:
        """Publish ``{source: track}``.

        ``packers``: for tracks that return EncodedFrame (pre-encoded media);
        ``encoders``: aiortc encoder objects to use instead of the sender's own (tests).
        """
        if self.pub_pc is None:
            self.pub_pc = self._new_pc()
        pc = self.pub_pc
        added = {}
        for source, track in tracks.items():
            transceiver = pc.addTransceiver(track, direction="sendonly")
            if track.kind == "video" and self.video_codec:
                caps = RTCRtpSender.getCapabilities("video").codecs
                prefs = [c for c in caps if c.mimeType.lower() == self.video_codec.lower()][:1]
                prefs += [c for c in caps if c.mimeType.lower() == "video/rtx"][:1]
                transceiver.setCodecPreferences(prefs)
            added[source] = transceiver
            if packers and source in packers:
                hook = getattr(track, "request_keyframe", lambda: None)
                install_packer(transceiver.sender, packers[source], hook)
            elif encoders and source in encoders:
                use_encoder(transceiver.sender, encoders[source])
        await pc.setLocalDescription(await pc.createOffer())
        declared = [{"mid": t.mid, "source": s} for s, t in list(added.items())] + [
            {"mid": sender_mid, "source": s}
            for s, sender_mid in self._published_mids().items()
            if s not in added
        ]
        ack = await self.request(
            "rtc:offer", {"pc": "publisher", "sdp": pc.localDescription.sdp, "tracks": declared}
        )
        if not ack or "sdp" not in ack:
            raise RuntimeError(f"publish refused: {ack}")
        await pc.setRemoteDescription(RTCSessionDescription(sdp=ack["sdp"], type="answer"))
        for source, t in added.items():
            self.published_senders[source] = t.sender
            self._mids[source] = t.mid or ""
        return {s: t.sender for s, t in added.items()}

    def _published_mids(self) -> dict[str, str]:
        return dict(self._mids)

    # -- server events ----------------------------------------------------------------------
    def deliver(self, event: str, payload: dict[str, Any]) -> None:
        """Queue a server event (called by the transport)."""
        if not self.closed:
            self._inbox.put_nowait((event, payload))

    async def _run(self) -> None:
        while True:
            item = await self._inbox.get()
            if item is None:
                return
            event, payload = item
            try:
                if event == "rtc:offer":
                    await self._on_offer(payload)
                elif event == "rtc:disconnected":
                    await self._drop_connections()
                elif event == "rtc:config":
                    self.config = payload
            except Exception:
                logger.exception("client %s failed on %s", self.identity, event)
            async with self.event_signal:
                self.events.append((event, payload))
                self.event_signal.notify_all()

    async def wait_event(
        self, predicate: Callable[[str, dict[str, Any]], bool], timeout: float = 10.0
    ) -> tuple[str, dict[str, Any]]:
        async def _wait() -> tuple[str, dict[str, Any]]:
            async with self.event_signal:
                while True:
                    for ev in self.events:
                        if predicate(*ev):
                            return ev
                    await self.event_signal.wait()

        return await asyncio.wait_for(_wait(), timeout)

    async def _on_offer(self, payload: dict[str, Any]) -> None:
        if self.sub_pc is None:
            self.sub_pc = self._new_pc()
            pc = self.sub_pc

            @pc.on("connectionstatechange")
            def _connected() -> None:
                if pc.connectionState == "connected" and self.sub_connected_at is None:
                    self.sub_connected_at = time.monotonic()

        pc = self.sub_pc
        now = time.monotonic()
        await pc.setRemoteDescription(RTCSessionDescription(sdp=payload["sdp"], type="offer"))
        for info in payload["tracks"]:
            key = (info["publisher"], info["source"])
            current = self.by_mid.get(info["mid"])
            if current is not None and (current.publisher, current.source) == key:
                continue
            rec = ReceivedTrack(info["publisher"], info["source"], info["kind"], info["mid"])
            rec.offered_at = now
            self.received[key] = rec
            self.by_mid[info["mid"]] = rec
            transceiver = next(t for t in pc.getTransceivers() if t.mid == info["mid"])
            self._attach(transceiver, rec)
        await pc.setLocalDescription(await pc.createAnswer())
        await self.request(
            "rtc:answer",
            {"pc": "subscriber", "sdp": pc.localDescription.sdp, "offer_id": payload["offer_id"]},
        )

    def _attach(self, transceiver: Any, rec: ReceivedTrack) -> None:
        receiver = transceiver.receiver
        codec = negotiated_codec(transceiver)
        mime = codec.mimeType if codec else f"{rec.kind}/unknown"

        def on_encoded(frame: EncodedFrame) -> None:
            if rec.first_frame_at is None and (rec.kind == "audio" or frame.keyframe):
                rec.first_frame_at = time.monotonic()
            if rec.first_frame_at is None:
                return
            rec.frames += 1
            rec.keyframes += int(frame.keyframe)
            rec.bytes += len(frame.data)
            rec.frame_times.append(frame.arrival)
            if self.record:
                rec.payloads.append(frame.data)

        if self.lean:
            count_packets_only(receiver, _lean_counter(rec, mime))
            return
        if not self.decode:
            tap_receiver(receiver, make_assembler(mime, on_encoded, lambda: None))
            return
        if self.record:
            observe_decoder_input(receiver, rec.payloads.append)
        track = receiver.track

        async def consume() -> None:
            with contextlib.suppress(MediaStreamError, asyncio.CancelledError):
                while True:
                    frame = await track.recv()
                    if isinstance(frame, av.VideoFrame):
                        rec.size = (frame.width, frame.height)
                    if rec.first_frame_at is None:
                        rec.first_frame_at = time.monotonic()
                    rec.frames += 1
                    rec.frame_times.append(time.monotonic())

        task = asyncio.ensure_future(consume())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drop_connections(self) -> None:
        """The server reset our media session: start over with fresh peer connections."""
        for pc in (self.pub_pc, self.sub_pc):
            if pc is not None:
                await pc.close()
        self.pub_pc = self.sub_pc = None
        self.sub_connected_at = None
        self.by_mid.clear()
        self._mids.clear()
        self.published_senders.clear()

    # -- control ----------------------------------------------------------------------------
    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._inbox.put_nowait(None)
        with contextlib.suppress(asyncio.CancelledError):
            await self._pump
        for pc in (self.pub_pc, self.sub_pc):
            if pc is not None:
                await pc.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task


__all__ = [
    "EncodedLoopTrack",
    "MediaClient",
    "ReceivedTrack",
    "SyntheticVideoTrack",
    "ToneAudioTrack",
]
