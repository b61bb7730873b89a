"""Publications and subscriptions: receive each encoded frame once, hand it to every subscriber.

A :class:`Publication` owns the tapped receiver of one published track. Its assembler calls
:meth:`Publication.on_frame` on the event loop; the frame is pushed into the bounded queue of
every :class:`Subscription` attached to it. Each subscription's :class:`ForwardedTrack` is the
track of one server-side ``RTCRtpSender`` whose RTP loop pulls from that queue; a slow or stalled
subscriber only overflows its own queue (video then waits for the next keyframe, audio drops
its oldest frames), never the publisher or the other subscribers.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

from aiortc import RTCRtpReceiver, RTCRtpSender, RTCRtpTransceiver
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from .aiortc_patch import disable_remb, install_packer, send_pli, tap_receiver
from .frames import AudioAssembler, EncodedFrame, FramePacker, VideoAssembler, make_assembler

if TYPE_CHECKING:
    from .settings import MediaSettings

logger = logging.getLogger(__name__)

LATENCY_SAMPLES = 4096


class Publication:
    """One published track (camera, camera_low, microphone or screen) of one participant."""

    def __init__(
        self,
        publisher: str,
        source: str,
        codec: RTCRtpCodecParameters,
        settings: MediaSettings,
        transceiver: RTCRtpTransceiver | None = None,
    ) -> None:
        self.id = f"TR_{uuid.uuid4().hex[:12]}"
        self.publisher = publisher
        self.source = source
        self.kind: Literal["audio", "video"] = "audio" if source == "microphone" else "video"
        self.codec = codec
        self.mime = codec.mimeType.lower()
        self.transceiver = transceiver
        self.receiver: RTCRtpReceiver | None = transceiver.receiver if transceiver else None
        self.closed = False
        self.muted = False
        self.forced_muted = False
        self._settings = settings
        self._subs: set[Subscription] = set()
        self._pending_subs: set[Subscription] = set()  # waiting for a keyframe to switch in
        self._last_pli = -1e9
        self._pli_timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.assembler: VideoAssembler | AudioAssembler = make_assembler(
            self.mime, self.on_frame, lambda: self.request_keyframe("loss")
        )
        self.plis_sent = 0
        self.frames_muted = 0
        self.level: float = 127.0  # smoothed -dBov (audio)
        self.last_level_at = 0.0
        self.bitrate_kbps: float | None = None
        self.rate_mark: tuple[float, int] | None = None

    # -- wiring ---------------------------------------------------------------------------
    def tap(self) -> None:
        if self.receiver is None:
            raise RuntimeError("publication has no receiver")
        tap_receiver(self.receiver, self.assembler)
        if not self._settings.publisher_remb:
            disable_remb(self.receiver)

    @property
    def forwarding(self) -> bool:
        return not (self.muted or self.forced_muted or self.closed)

    @property
    def subscriptions(self) -> set[Subscription]:
        return set(self._subs)

    def attach(self, sub: Subscription) -> None:
        self._subs.add(sub)

    def detach(self, sub: Subscription) -> None:
        self._subs.discard(sub)
        self._pending_subs.discard(sub)

    def attach_pending(self, sub: Subscription) -> None:
        self._pending_subs.add(sub)
        self.request_keyframe("layer switch")

    # -- media ----------------------------------------------------------------------------
    def on_frame(self, frame: EncodedFrame) -> None:
        if frame.audio_level is not None:
            self.level = 0.7 * self.level + 0.3 * frame.audio_level
            self.last_level_at = frame.arrival
        if not self.forwarding:
            self.frames_muted += 1
            if self.kind == "video":
                for sub in self._subs:  # they resume on a keyframe, not mid-GOP
                    sub.need_keyframe = True
            return
        if self._pending_subs and frame.keyframe:
            for sub in list(self._pending_subs):
                sub.complete_switch(self)
        for sub in tuple(self._subs):
            sub.push(frame)

    def request_keyframe(self, reason: str) -> None:
        """Ask the publisher for a keyframe (RTCP PLI), at most once per ``pli_min_interval``.

        A request inside the interval is deferred to its end rather than dropped, so a late
        joiner still gets its keyframe promptly while a lossy subscriber cannot storm the
        publisher (every other subscriber would pay for the keyframes).
        """
        if self.kind != "video" or self.closed:
            return
        now = time.monotonic()
        wait = self._last_pli + self._settings.pli_min_interval_s - now
        if wait > 0:
            if self._pli_timer is None:
                self._pli_timer = asyncio.get_running_loop().call_later(wait, self._pli_now)
            return
        self._pli_now()

    def _pli_now(self) -> None:
        self._pli_timer = None
        ssrc = self.assembler.media_ssrc
        if self.closed or self.receiver is None or ssrc is None:
            return
        self._last_pli = time.monotonic()
        self.plis_sent += 1
        task = asyncio.ensure_future(send_pli(self.receiver, ssrc))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._pli_timer is not None:
            self._pli_timer.cancel()
            self._pli_timer = None
        for task in self._tasks:
            task.cancel()
        self._subs.clear()
        self._pending_subs.clear()


class ForwardedTrack(MediaStreamTrack):
    """The track of a forwarding sender: ``recv()`` returns :class:`EncodedFrame` objects.

    It lives as long as its sender. When the subscription it serves ends, the track idles
    (``recv()`` waits) and the transceiver may later be reused for another subscription:
    :meth:`retarget` points it at the new one (with a new track id, so the subscriber sees a
    new msid).
    """

    def __init__(self, sub: Subscription) -> None:
        super().__init__()
        self.kind = sub.kind
        self._sub: Subscription | None = sub
        self._wakeup = asyncio.Event()
        self._last: tuple[Subscription, EncodedFrame] | None = None  # latency sample pending

    @property
    def subscription(self) -> Subscription | None:
        return self._sub

    def retarget(self, sub: Subscription | None, new_id: bool = False) -> None:
        """Serve ``sub`` from now on (``None``: idle)."""
        self._sub = sub
        self._last = None
        if new_id:
            self._id = str(uuid.uuid4())
        self._wakeup.set()

    def wake(self) -> None:
        self._wakeup.set()

    async def recv(self) -> EncodedFrame:  # type: ignore[override]
        if self._last is not None:
            # the sender calls recv() again right after sending all packets of the last frame
            # (no locals: this frame waits below while idle, and must not keep the old
            # subscription, and through it the departed publisher, alive)
            self._last[0].latencies.append(time.monotonic() - self._last[1].arrival)
            self._last = None
        while True:
            if self.readyState != "live":
                raise MediaStreamError
            sub = self._sub
            if sub is not None:
                if not sub.pulling:
                    sub.on_first_pull()
                if sub.queue:
                    break
            self._wakeup.clear()
            await self._wakeup.wait()
        frame = sub.queue.popleft()
        sub.rebase(frame)
        self._last = (sub, frame)
        sub.frames_forwarded += 1
        sub.bytes_forwarded += len(frame.data)
        return frame

    def stop(self) -> None:
        super().stop()
        self._wakeup.set()


class Subscription:
    """One subscriber x one published source, with its own bounded queue."""

    def __init__(
        self,
        subscriber: str,
        source_pub: Publication,
        settings: MediaSettings,
        on_change: Callable[[Subscription], None] | None = None,
    ) -> None:
        self.subscriber = subscriber
        self.publisher = source_pub.publisher
        # camera_low is only ever a layer of "camera"
        self.source = "camera" if source_pub.source == "camera_low" else source_pub.source
        self.kind = source_pub.kind
        self.mime = source_pub.mime
        self.codec = source_pub.codec
        self.closed = False
        self.paused = False
        self.layer_request: Literal["high", "low"] | None = None
        self.auto_layer: Literal["high", "low"] = "high"
        self.pulling = False
        self._settings = settings
        self._on_change = on_change
        cap = settings.video_queue_frames if self.kind == "video" else settings.audio_queue_frames
        self.queue: deque[EncodedFrame] = deque()
        self.capacity = cap
        self.need_keyframe = self.kind == "video"
        self.current: Publication = source_pub
        self.pending: Publication | None = None
        self.track = ForwardedTrack(self)
        self.packer = FramePacker(self.mime)
        self.transceiver: RTCRtpTransceiver | None = None
        self.sender: RTCRtpSender | None = None
        self._last_pli = -1e9
        self._rebase_pending = False
        self._last_out_ts: int | None = None
        self.frames_forwarded = 0
        self.bytes_forwarded = 0
        self.frames_dropped = 0
        self.latencies: deque[float] = deque(maxlen=LATENCY_SAMPLES)
        self.bitrate_kbps: float | None = None
        self.rate_mark: tuple[float, int] | None = None
        self.rtt_ms: float | None = None  # from the subscriber's RTCP receiver reports
        self.fraction_lost: float | None = None
        self.created_at = time.monotonic()
        self.first_pull_at: float | None = None
        source_pub.attach(self)

    @property
    def key(self) -> tuple[str, str]:
        return (self.publisher, self.source)

    @property
    def layer(self) -> str:
        return "low" if self.current.source == "camera_low" else "high"

    def bind(self, transceiver: RTCRtpTransceiver) -> None:
        """Attach to the server-side transceiver whose sender forwards this subscription."""
        self.transceiver = transceiver
        self.sender = transceiver.sender
        install_packer(self.sender, self.packer, self.on_keyframe_request)

    def adopt(
        self, transceiver: RTCRtpTransceiver, track: ForwardedTrack, previous: FramePacker | None
    ) -> None:
        """Take over a transceiver freed by an ended subscription (same kind and codec).

        Its sender keeps running with the same track, packer (VP8 picture ids go on) and
        SSRC; the first frame is rebased to follow the last one sent. The track serves this
        subscription only once the subscriber has answered the offer that carries it
        (:meth:`activate`): until then it sees the old m-line as inactive.
        """
        self.track = track
        track.retarget(None, new_id=True)
        if previous is not None:
            self.packer = previous
        if self.packer.last_timestamp is not None:
            self._last_out_ts = self.packer.last_timestamp
            self._rebase_pending = True
        self.bind(transceiver)
        transceiver.sender.replaceTrack(track)  # the new track id goes into the next offer

    def activate(self) -> None:
        """Start feeding the (reused) transceiver's track; a no-op when already feeding it."""
        if not self.closed and self.track.subscription is not self:
            self.track.retarget(self)

    # -- frames in --------------------------------------------------------------------------
    def push(self, frame: EncodedFrame) -> None:
        if self.closed:
            return
        if self.paused:
            self.need_keyframe = self.kind == "video"
            return
        q = self.queue
        if self.kind == "video":
            if self.need_keyframe:
                if not frame.keyframe:
                    self.frames_dropped += 1
                    return
                self.need_keyframe = False
            if len(q) >= self.capacity:
                # stalled: whatever is queued is stale; restart from the next keyframe
                self.frames_dropped += len(q)
                q.clear()
                if not frame.keyframe:
                    self.frames_dropped += 1
                    self.need_keyframe = True
                    self.on_keyframe_request()
                    return
        elif len(q) >= self.capacity:
            q.popleft()
            self.frames_dropped += 1
        q.append(frame)
        self.track.wake()

    def on_first_pull(self) -> None:
        """The sender started pulling (DTLS is up): now a keyframe request is not wasted."""
        self.pulling = True
        self.first_pull_at = time.monotonic()
        if self.kind == "video":
            self.current.request_keyframe("new subscriber")

    def on_keyframe_request(self) -> None:
        """PLI/FIR from the subscriber (or our own drop), throttled per subscription."""
        now = time.monotonic()
        if now - self._last_pli < self._settings.subscriber_pli_min_interval_s:
            return
        self._last_pli = now
        self.current.request_keyframe("subscriber")

    def rebase(self, frame: EncodedFrame) -> None:
        """Keep the outgoing RTP timestamps continuous across a layer switch."""
        if self._rebase_pending and self._last_out_ts is not None:
            step = 3000 if self.kind == "video" else 960
            self.packer.timestamp_offset = self._last_out_ts + step - frame.timestamp
        self._rebase_pending = False
        self._last_out_ts = frame.timestamp + self.packer.timestamp_offset

    # -- control ----------------------------------------------------------------------------
    def set_paused(self, paused: bool) -> None:
        if paused == self.paused:
            return
        self.paused = paused
        if paused:
            self.queue.clear()
        elif self.kind == "video":
            self.need_keyframe = True
            self.current.request_keyframe("resume")

    def switch_to(self, pub: Publication) -> None:
        """Switch to another layer at its next keyframe (keep the current one until then)."""
        if pub is self.current:
            if self.pending is not None:
                self.pending.detach(self)
                self.pending = None
            return
        if self.pending is pub:
            return
        if self.pending is not None:
            self.pending.detach(self)
        self.pending = pub
        pub.attach_pending(self)

    def complete_switch(self, pub: Publication) -> None:
        if self.pending is not pub or self.closed:
            return
        self.current.detach(self)
        pub.detach(self)
        self.pending = None
        self.current = pub
        pub.attach(self)
        self.queue.clear()
        self.need_keyframe = True
        self._rebase_pending = True
        if self._on_change is not None:
            self._on_change(self)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.current.detach(self)
        if self.pending is not None:
            self.pending.detach(self)
        self.queue.clear()
        if self.track.subscription is self:
            self.track.retarget(None)  # idle: the transceiver may be reused
