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
from collections import deque

import av
from aiortc.codecs import get_decoder
from aiortc.jitterbuffer import JitterFrame
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from .forwarder import Publication
from .frames import EncodedFrame

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
        self.queue: deque[EncodedFrame] = deque()
        self.need_keyframe = True
        self.frames_decoded = 0
        self.frames_returned = 0
        self.frames_dropped = 0
        self._wakeup = asyncio.Event()
        self._decoder = get_decoder(pub.codec)
        pub.attach(self)  # type: ignore[arg-type]
        pub.request_keyframe("tap")

    # the Publication calls push() as it does for subscriptions
    def push(self, frame: EncodedFrame) -> None:
        if self.readyState != "live":
            return
        if self.need_keyframe:
            if not frame.keyframe:
                self.frames_dropped += 1
                return
            self.need_keyframe = False
        if len(self.queue) >= self.max_queue:
            self.frames_dropped += len(self.queue)
            self.queue.clear()
            if not frame.keyframe:
                self.need_keyframe = True
                self.frames_dropped += 1
                self.pub.request_keyframe("tap overflow")
                return
        self.queue.append(frame)
        self._wakeup.set()

    def complete_switch(self, pub: Publication) -> None:  # never pending on a layer
        return None

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
                try:
                    await asyncio.wait_for(self._wakeup.wait(), 1.0)
                except TimeoutError:
                    continue
            batch = list(self.queue)
            self.queue.clear()
            try:
                picture = await asyncio.to_thread(self._decode, batch)
            except av.FFmpegError:
                self.need_keyframe = True
                self.pub.request_keyframe("tap decode error")
                continue
            if picture is not None:
                picture.time_base = VIDEO_TIME_BASE
                self.frames_returned += 1
                return picture

    def stop(self) -> None:
        if self.readyState == "live":
            self.pub.detach(self)  # type: ignore[arg-type]
            self.queue.clear()
        super().stop()
        self._wakeup.set()
