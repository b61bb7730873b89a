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

from kernel.sources import kind_of

from . import fastpath
from .aiortc_patch import install_packer, send_pli, tap_receiver
from .frames import AudioAssembler, EncodedFrame, FramePacker, VideoAssembler, make_assembler
from .sink import FrameSink, KeyframeGatedQueue

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
        self.kind: Literal["audio", "video"] = kind_of(source)
        self.codec = codec
        self.mime = codec.mimeType.lower()
        self.transceiver = transceiver
        self.receiver: RTCRtpReceiver | None = transceiver.receiver if transceiver else None
        self.closed = False
        self.muted = False
        self.forced_muted = False
        self._settings = settings
        self._subs: set[FrameSink] = set()  # subscriptions, a decoding tap, recording sinks
        self._pending_subs: set[Subscription] = set()  # waiting for a keyframe to switch in
        self._last_pli = -1e9
        self._pli_timer: asyncio.TimerHandle | None = None
        # a keyframe was asked for and none has come since: the request is repeated every
        # keyframe_retry_s (a PLI can be lost, and Chromium drops one that comes within
        # 300 ms of the one before), as mediasoup's KeyFrameRequestManager does
        self._keyframe_wanted = False
        self._retry_timer: asyncio.TimerHandle | None = None
        self.pli_retries = 0
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
        tap_receiver(self.receiver, self.assembler)  # REMB/transport-cc: congestion.py

    @property
    def forwarding(self) -> bool:
        return not (self.muted or self.forced_muted or self.closed)

    @property
    def subscriptions(self) -> set[FrameSink]:
        return set(self._subs)

    def attach(self, sub: FrameSink) -> None:
        self._subs.add(sub)

    def detach(self, sub: FrameSink) -> None:
        self._subs.discard(sub)
        self._pending_subs.discard(sub)  # type: ignore[arg-type]

    def attach_pending(self, sub: Subscription) -> None:
        self._pending_subs.add(sub)
        self.request_keyframe("layer switch")

    # -- media ----------------------------------------------------------------------------
    def on_frame(self, frame: EncodedFrame) -> None:
        if frame.keyframe and self._keyframe_wanted:
            self._keyframe_wanted = False
            if self._retry_timer is not None:
                self._retry_timer.cancel()
                self._retry_timer = None
        if frame.audio_level is not None:
            self.level = 0.7 * self.level + 0.3 * frame.audio_level
            self.last_level_at = frame.arrival
        if not self.forwarding:
            self.frames_muted += 1
            if self.kind == "video":
                for sub in self._subs:  # they resume on a keyframe, not mid-GOP
                    sub.skip_to_keyframe()
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
        self._keyframe_wanted = True
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
        if self._retry_timer is None:
            self._retry_timer = asyncio.get_running_loop().call_later(
                self._settings.keyframe_retry_s, self._retry_keyframe
            )

    def _retry_keyframe(self) -> None:
        """No keyframe since the last request: ask again (stops once one comes, or muted)."""
        self._retry_timer = None
        if not self._keyframe_wanted or self.closed:
            return
        if not self.forwarding:
            self._keyframe_wanted = False  # muted: unmuting asks again
            return
        self.pli_retries += 1
        self.request_keyframe("retry")

    def close(self) -> None:
        """Close, and cascade to every sink attached or switching in (idempotent).

        Subscriptions close (their subscriber's session is told: see ``Subscription.on_closed``);
        a decoding tap ends once it has drained; a recording sink waits for its owner's close().
        """
        if self.closed:
            return
        self.closed = True
        for timer in (self._pli_timer, self._retry_timer):
            if timer is not None:
                timer.cancel()
        self._pli_timer = self._retry_timer = None
        for task in self._tasks:
            task.cancel()
        sinks: list[FrameSink] = [*self._subs, *self._pending_subs]
        self._subs.clear()
        self._pending_subs.clear()
        for sink in sinks:
            sink.publication_closed()


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
        #: the subscription served (None: idle); a plain attribute, read per frame
        self.subscription: Subscription | None = sub
        self._wakeup = asyncio.Event()
        self._last: tuple[Subscription, EncodedFrame] | None = None  # latency sample pending
        self.live = True  # readyState == "live", as a plain attribute (read per frame)

    def retarget(self, sub: Subscription | None, new_id: bool = False) -> None:
        """Serve ``sub`` from now on (``None``: idle)."""
        self.subscription = sub
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
            sub = self.subscription
            if sub is not None:
                if not sub.pulling:
                    sub.on_first_pull()
                if sub.queue:
                    break
            self._wakeup.clear()
            await self._wakeup.wait()
        frame = sub.queue.popleft()
        assert frame is not None  # one consumer: the queue was not empty above
        sub.count_out(frame)
        self._last = (sub, frame)
        return frame

    def take(self) -> EncodedFrame | None:
        """The next frame for a consumer that sends from the forwarder's own stack (the fast
        path's :func:`~media.fastpath.direct_sender`), with ``recv()``'s
        bookkeeping; None when nothing is due or the sender has not started pulling."""
        sub = self.subscription
        if sub is None or not sub.pulling or not sub.queue or not self.live:
            return None
        frame = sub.queue.popleft()
        if frame is not None:
            sub.count_out(frame)
        return frame

    def sent(self, frame: EncodedFrame) -> None:
        """A frame from :meth:`take` left: its latency sample (``recv()`` takes it later)."""
        if self.subscription is not None:
            self.subscription.latencies.append(time.monotonic() - frame.arrival)

    def stop(self) -> None:
        self.live = False
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
        # a camera starts on this layer (the automatic choice; room.py applies it)
        self.auto_layer: Literal["high", "low"] = settings.auto_layer_start
        self.layer_switches = 0  # automatic ones (bandwidth.py)
        self.nacks = 0  # packets the subscriber asked to have retransmitted
        self.nack_ratio: float | None = None  # of the packets sent, over the last stats period
        self.nack_mark: tuple[int, int] | None = None
        self.pulling = False
        self._settings = settings
        self._on_change = on_change
        #: sends queued frames at once instead of waking the sender's task (fast path)
        self._direct: Callable[[ForwardedTrack], bool] | None = None
        self._fast: fastpath.FastSender | None = None  # sends a frame nothing is queued before
        #: called once when the subscription closes (its subscriber's session sets it)
        self.on_closed: Callable[[Subscription], None] | None = None
        video = self.kind == "video"
        self.queue: KeyframeGatedQueue[EncodedFrame] = KeyframeGatedQueue(
            settings.video_queue_frames if video else settings.audio_queue_frames,
            gated=video,
            # stalled video: the backlog is stale, restart at a keyframe; audio: newest wins
            overflow="flush" if video else "drop_oldest",
            on_ready=self._wake,
            on_keyframe_needed=self.on_keyframe_request,
        )
        self.current: Publication = source_pub
        self.pending: Publication | None = None
        self.track = ForwardedTrack(self)
        self.packer = FramePacker(self.mime)
        self.transceiver: RTCRtpTransceiver | None = None
        self.sender: RTCRtpSender | None = None
        self._last_pli = -1e9
        self._rebase_pending = False  # the next frame's timestamp follows the packer's last
        self.frames_forwarded = 0
        self.bytes_forwarded = 0
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
    def capacity(self) -> int:
        return self.queue.capacity

    @property
    def frames_dropped(self) -> int:
        return self.queue.dropped

    @property
    def layer(self) -> str:
        return "low" if self.current.source == "camera_low" else "high"

    def bind(self, transceiver: RTCRtpTransceiver) -> None:
        """Attach to the server-side transceiver whose sender forwards this subscription."""
        self.transceiver = transceiver
        self.sender = transceiver.sender
        install_packer(self.sender, self.packer, self.on_keyframe_request, self.on_nack)
        self._attach_fast_path()

    def _attach_fast_path(self) -> None:
        if self._settings.fast_path and self.sender is not None:
            self._fast = fastpath.attach(
                self.sender, native=self._settings.native_send, gso=self._settings.udp_gso
            )
            self._direct = fastpath.direct_sender(self.sender)

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
            self.queue.skip_to_keyframe()
            return
        queue = self.queue
        fast = self._fast
        track = self.track
        if (
            fast is not None
            and not queue
            and not queue.need_keyframe
            and self.pulling
            and track.subscription is self
            and track.live
            and fast.ready()
        ):
            # nothing queued and the gate open: what offer() + take() would do, without the
            # queue (the fast path sends from here; see direct_sender for queued frames)
            self.count_out(frame)
            fast.forward(frame)
            self.latencies.append(time.monotonic() - frame.arrival)
            return
        queue.offer(frame)

    def _wake(self) -> None:
        # the track in use (adopt() may have swapped it); the fast path sends from here
        if self._direct is None or not self._direct(self.track):
            self.track.wake()

    def skip_to_keyframe(self) -> None:
        self.queue.skip_to_keyframe()

    def publication_closed(self) -> None:
        """The current layer closed: close; a layer being switched to closed: stay put."""
        if self.current.closed:
            self.close()
        elif self.pending is not None and self.pending.closed:
            self.pending = None

    def on_first_pull(self) -> None:
        """The sender started pulling (DTLS is up): now a keyframe request is not wasted."""
        self.pulling = True
        self.first_pull_at = time.monotonic()
        if self.kind == "video":
            self.current.request_keyframe("new subscriber")

    def on_nack(self) -> None:
        self.nacks += 1

    def on_keyframe_request(self) -> None:
        """PLI/FIR from the subscriber (or our own drop), throttled per subscription."""
        now = time.monotonic()
        if now - self._last_pli < self._settings.subscriber_pli_min_interval_s:
            return
        self._last_pli = now
        self.current.request_keyframe("subscriber")

    def count_out(self, frame: EncodedFrame) -> None:
        """``frame`` leaves for the subscriber now: its timestamp rebased, and counted."""
        if self._rebase_pending:
            self.rebase(frame)
        self.frames_forwarded += 1
        self.bytes_forwarded += len(frame.data)

    def rebase(self, frame: EncodedFrame) -> None:
        """Keep the outgoing RTP timestamps continuous across a layer switch: ``frame`` (the
        first from the new source) follows the last frame the packer sent by one frame."""
        self._rebase_pending = False
        last = self.packer.last_timestamp
        if last is not None:
            step = 3000 if self.kind == "video" else 960
            self.packer.timestamp_offset = last + step - frame.timestamp

    # -- control ----------------------------------------------------------------------------
    def set_paused(self, paused: bool) -> None:
        if paused == self.paused:
            return
        self.paused = paused
        if paused:
            self.queue.clear()
        elif self.kind == "video":
            self.queue.skip_to_keyframe()
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
            self.pending = None
        if self.frames_forwarded == 0:
            # nothing sent yet: start on ``pub`` at its first keyframe (never a keyframe of
            # the other layer first, queued or on its way)
            self.current.detach(self)
            self.current = pub
            pub.attach(self)
            self.queue.clear()
            self.queue.skip_to_keyframe()
            if self.pulling:
                pub.request_keyframe("new subscriber")
            return
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
        self.queue.skip_to_keyframe()
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
        if self.on_closed is not None:
            self.on_closed(self)
