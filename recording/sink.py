"""EncodedFileSink: write one publication's forwarded encoded frames to a file, never re-encoding.

The sink attaches to a :class:`media.forwarder.Publication` the way a subscription
does, so it receives the very frames the SFU forwards. A writer thread muxes them with PyAV
(``add_mux_stream``: no codec context, so no encoder exists) into WebM (VP8, Opus) or Matroska
(H264), keeping the disk off the event loop. Video starts at a keyframe; if the writer falls
behind, new frames are dropped (what is queued is kept) and video resumes at the next
keyframe (requested from the publisher): the shared queue of media/sink.py.

Timestamps: the muxer's time base is 1/1000 s whatever is asked for, so every frame's RTP
timestamp goes through a :class:`RecordingTimeline` (RTP clock -> milliseconds since the
recording's start, shared by all its files, with wrap-around and pauses handled there) and
packets carry that time base explicitly. Each packet's duration is the gap to the next one.

Matroska needs the picture size up front: VP8 carries it in every keyframe header; for H264 the
first keyframe is decoded once (a decoder, for its size only) since parsing the SPS by hand is
more code than it is worth.
"""

from __future__ import annotations

import asyncio
import fractions
import hashlib
import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import av

from media.sink import KeyframeGatedQueue
from recording.clock import RecordingTimeline

log = logging.getLogger(__name__)

FORMATS: dict[str, tuple[str, str, str]] = {
    # mime -> (codec, container format, file suffix)
    "video/vp8": ("vp8", "webm", ".webm"),
    "audio/opus": ("opus", "webm", ".webm"),
    "video/h264": ("h264", "matroska", ".mkv"),
}
CLOCK_RATE = {"audio": 48000, "video": 90000}
MUX_TIME_BASE = fractions.Fraction(1, 1000)  # what the Matroska/WebM muxer uses
PRIME_S = 0.5  # frames held before the first is written, to find the stream's start


class FrameLike(Protocol):
    """What the sink needs of an encoded frame (media.frames.EncodedFrame)."""

    data: bytes
    timestamp: int
    keyframe: bool
    arrival: float  # time.monotonic() when the frame was complete


class PublicationLike(Protocol):
    """What the sink needs of a publication (media.forwarder.Publication)."""

    publisher: str
    source: str
    kind: str
    mime: str
    closed: bool

    def attach(self, sub: Any) -> None: ...
    def detach(self, sub: Any) -> None: ...
    def request_keyframe(self, reason: str) -> None: ...


def vp8_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from a VP8 keyframe header (RFC 6386 9.1), or None."""
    if len(data) < 10 or data[0] & 0x01 or data[3:6] != b"\x9d\x01\x2a":
        return None
    width = int.from_bytes(data[6:8], "little") & 0x3FFF
    height = int.from_bytes(data[8:10], "little") & 0x3FFF
    return (width, height) if width and height else None


def h264_size(data: bytes) -> tuple[int, int] | None:
    """Width and height of an H264 access unit holding SPS + IDR (decodes it once), or None."""
    try:
        decoder = av.CodecContext.create("h264", "r")
        for frame in decoder.decode(av.Packet(data)):
            return frame.width, frame.height
        for frame in decoder.decode(None):
            return frame.width, frame.height
    except av.error.FFmpegError:
        return None
    return None


@dataclass(slots=True)
class SinkResult:
    """What a finished sink wrote."""

    identity: str
    source: str
    path: Path
    codec: str
    container: str
    frames: int
    bytes: int
    duration_s: float
    dropped: int
    sha256: str | None
    start_s: float = 0.0  # where the file starts on the recording's clock


class EncodedFileSink:
    """A recorder of one publication; attach on creation, `await close()` to finish the file."""

    def __init__(
        self,
        pub: PublicationLike,
        path_stem: Path,
        max_queue: int = 600,
        origin: float | None = None,
        origin_wall: float | None = None,
    ) -> None:
        """``origin`` (monotonic) and ``origin_wall`` (epoch) are the recording's start."""
        if pub.mime not in FORMATS:
            raise ValueError(f"cannot record {pub.mime}")
        self.pub = pub
        self.codec, self.container_format, suffix = FORMATS[pub.mime]
        self.path = path_stem.with_suffix(suffix)
        self.clock = CLOCK_RATE["audio" if pub.kind == "audio" else "video"]
        self.frames = 0
        self.duration_s = 0.0
        self.start_s = 0.0
        self.closed = False
        now = time.monotonic()
        self.timeline = RecordingTimeline(self.clock, now if origin is None else origin)
        self.origin_wall = time.time() - (now - self.timeline.origin)
        if origin_wall is not None:
            self.origin_wall = origin_wall
        # the writer keeps what is queued (it belongs in the file): a full queue drops the new
        # frame, and video resumes at the next keyframe
        self._ready = threading.Event()  # set when a frame is queued or the sink stops
        self._stopping = False
        self._queue: KeyframeGatedQueue[FrameLike] = KeyframeGatedQueue(
            max_queue,
            gated=pub.kind == "video",
            overflow="drop_newest",
            on_ready=self._ready.set,
            on_keyframe_needed=lambda: pub.request_keyframe("recording backlog"),
        )
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._write_loop, name=f"rec-{pub.publisher}-{pub.source}", daemon=True
        )
        self._thread.start()
        pub.attach(self)
        if self._queue.need_keyframe:
            pub.request_keyframe("recording")

    @property
    def dropped(self) -> int:
        return self._queue.dropped

    # FrameSink: called by the Publication on the event loop, like Subscription.push
    def push(self, frame: FrameLike) -> None:
        if not self.closed:
            self._queue.offer(frame)

    def skip_to_keyframe(self) -> None:
        self._queue.skip_to_keyframe()

    def publication_closed(self) -> None:
        """Nothing to do: the recording closes its sinks (close() writes the file out)."""

    def _write_loop(self) -> None:
        container: Any = None
        stream: Any = None
        pending: av.Packet | None = None  # held until the next one gives it a duration
        first_ms: int | None = None
        last_ms = 0
        last_duration = 0
        try:
            for data, ts, arrival, keyframe in self._frames():
                if container is None:
                    size = None
                    if self.pub.kind == "video":
                        size = vp8_size(data) if self.codec == "vp8" else h264_size(data)
                        if size is None:
                            continue  # not a decodable entry point yet
                    container, stream = self._open(size)
                ms = self.timeline.map(ts, arrival)
                if ms is None:
                    continue  # a late duplicate: timestamps must increase
                packet = av.Packet(data)
                packet.stream = stream
                packet.time_base = MUX_TIME_BASE
                packet.pts = packet.dts = ms
                packet.is_keyframe = keyframe
                if pending is not None:
                    last_duration = ms - pending.pts
                    pending.duration = last_duration
                    container.mux(pending)
                pending = packet
                if first_ms is None:
                    first_ms = ms
                last_ms = ms
                self.frames += 1
            if pending is not None:
                pending.duration = last_duration or self._frame_ms()
                container.mux(pending)
                last_ms += pending.duration
        except BaseException as exc:  # the loop must end its file whatever happens
            self._error = exc
            log.exception("recording of %s/%s failed", self.pub.publisher, self.pub.source)
        finally:
            if container is not None:
                container.close()
            if first_ms is not None:
                self.start_s = first_ms / 1000
                self.duration_s = (last_ms - first_ms) / 1000

    def _queued(self) -> Any:
        """The queued frames in order, as they come, until close() and the queue is empty."""
        while True:
            self._ready.clear()
            frame = self._queue.popleft()
            if frame is None:
                if self._stopping:
                    return
                self._ready.wait()
                continue
            yield (bytes(frame.data), frame.timestamp, frame.arrival, frame.keyframe)

    def _frames(self) -> Any:
        """The queued frames in order; the first half second is held to prime the timeline."""
        warmup: list[tuple[bytes, int, float, bool]] | None = []
        for item in self._queued():
            if warmup is not None:
                warmup.append(item)
                if (item[1] - warmup[0][1]) & 0xFFFFFFFF < self.clock * PRIME_S:
                    continue
                self.timeline.prime([(w[1], w[2]) for w in warmup])
                yield from warmup
                warmup = None
                continue
            yield item
        if warmup:
            self.timeline.prime([(w[1], w[2]) for w in warmup])
            yield from warmup

    def _open(self, size: tuple[int, int] | None) -> tuple[Any, Any]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        container = av.open(str(self.path), "w", format=self.container_format)
        # Matroska's DateUTC: the wall-clock time of t=0, shared by the recording's files
        container.metadata["creation_time"] = datetime.fromtimestamp(
            self.origin_wall, UTC
        ).isoformat(timespec="microseconds")
        if size is not None:
            stream = container.add_mux_stream(
                self.codec, width=size[0], height=size[1], time_base=MUX_TIME_BASE
            )
        else:
            stream = container.add_mux_stream(self.codec, rate=self.clock, time_base=MUX_TIME_BASE)
        return container, stream

    def _frame_ms(self) -> int:
        return 20 if self.pub.kind == "audio" else 33

    async def close(self) -> SinkResult:
        """Detach, write out what is queued, and close the file."""
        if not self.closed:
            self.closed = True
            self.pub.detach(self)
            self._stopping = True
            self._ready.set()
        await asyncio.to_thread(self._thread.join)
        exists = self.path.exists()
        digest = await asyncio.to_thread(_sha256, self.path) if exists else None
        return SinkResult(
            identity=self.pub.publisher,
            source=self.pub.source,
            path=self.path,
            codec=self.codec,
            container=self.container_format,
            frames=self.frames,
            bytes=self.path.stat().st_size if exists else 0,
            duration_s=round(self.duration_s, 3),
            start_s=round(self.start_s, 3),
            dropped=self.dropped,
            sha256=digest,
        )


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
