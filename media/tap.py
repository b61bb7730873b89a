"""DecodingTap: the one place the SFU decodes, for something that must look at pixels.

A tap attaches to a video publication like a subscriber, so the publisher's encoded frames
reach it without any extra network leg. It decodes in a worker thread, in order (a video
decoder needs every frame since the last keyframe), and hands the consumer only the newest
picture: ``recv()`` decodes whatever queued up and returns the last frame. If the consumer
stalls long enough for the bounded queue to fill, the backlog is dropped and decoding restarts
at the next keyframe (requested from the publisher, throttled like any other request).
Used by the rehab VisionAgent (``async recv() -> av.VideoFrame``).
"""

from __future__ import annotations

import asyncio
import fractions

import av
from aiortc.codecs import get_decoder
from aiortc.jitterbuffer import JitterFrame
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from .forwarder import Publication
from .frames import EncodedFrame
from .sink import KeyframeGatedQueue

VIDEO_TIME_BASE = fractions.Fraction(1, 90000)


class DecodingTap(MediaStreamTrack):
    """A video track decoded from one publication's forwarded frames (newest frame wins)."""

    kind = "video"

    def __init__(self, pub: Publication, max_queue: int = 60) -> None:
        super().__init__()
        if pub.kind != "video":
            raise ValueError("only video publications can be tapped")
        self.pub = pub
        self.max_queue = max_queue
        self.frames_decoded = 0
        self.frames_returned = 0
        self._wakeup = asyncio.Event()
        # a stalled consumer: the backlog is stale, decoding restarts at the next keyframe
        self.queue: KeyframeGatedQueue[EncodedFrame] = KeyframeGatedQueue(
            max_queue,
            gated=True,
            overflow="flush",
            on_ready=self._wakeup.set,
            on_keyframe_needed=lambda: pub.request_keyframe("tap overflow"),
        )
        self._decoder = get_decoder(pub.codec)
        pub.attach(self)
        pub.request_keyframe("tap")

    @property
    def frames_dropped(self) -> int:
        return self.queue.dropped

    # -- FrameSink (called by the Publication, as for subscriptions) --------------------------
    def push(self, frame: EncodedFrame) -> None:
        if self.readyState == "live":
            self.queue.offer(frame)

    def skip_to_keyframe(self) -> None:
        self.queue.skip_to_keyframe()

    def publication_closed(self) -> None:
        self._wakeup.set()  # recv() returns what is queued, then ends

    def _decode(self, frames: list[EncodedFrame]) -> av.VideoFrame | None:
        last = None
        for f in frames:
            for picture in self._decoder.decode(JitterFrame(f.data, f.timestamp)):
                last = picture
                self.frames_decoded += 1
        return last

    async def recv(self) -> av.VideoFrame:  # type: ignore[override]
        while True:
            while not self.queue:
                if self.readyState != "live" or self.pub.closed:
                    raise MediaStreamError
                self._wakeup.clear()
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for returns the result
                # and swallows a cancellation that lands in the same tick as the wakeup (a
                # frame pushed while the consumer is being stopped), so a reader task being
                # cancelled went on reading for as long as the camera sent.
                try:
                    async with asyncio.timeout(1.0):
                        await self._wakeup.wait()
                except TimeoutError:
                    continue
            batch = self.queue.take_all()
            try:
                picture = await asyncio.to_thread(self._decode, batch)
            except av.FFmpegError:
                self.queue.skip_to_keyframe()
                self.pub.request_keyframe("tap decode error")
                continue
            if picture is not None:
                picture.time_base = VIDEO_TIME_BASE
                self.frames_returned += 1
                return picture

    def stop(self) -> None:
        if self.readyState == "live":
            self.pub.detach(self)
            self.queue.clear()
        super().stop()
        self._wakeup.set()
