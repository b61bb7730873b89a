"""What a publication hands its encoded frames to, and the bounded queue every consumer keeps.

A :class:`~media.forwarder.Publication` fans each encoded frame out to its
:class:`FrameSink` objects: subscriptions (forwarder.py), the decoding tap (tap.py) and
recording sinks (recording_sink.py). Each consumer buffers what it cannot use at once in a
:class:`KeyframeGatedQueue`, so a slow consumer drops its own frames, never stalls the
publication or the other consumers.

The queue's rules, shared by all three:

- *gated* (video): nothing is queued until a keyframe; after a drop, queueing resumes at the
  next keyframe (a video decoder needs every frame since the last keyframe);
- bounded by ``capacity``; what happens when it is full is the consumer's choice of
  :data:`Overflow`:

  ``"flush"``        the backlog is stale: drop it all and keep the new frame if it is a
                     keyframe, else drop that too and wait for the next keyframe (forwarded
                     video, the decoding tap);
  ``"drop_oldest"``  drop the oldest frame (forwarded audio: the newest matters);
  ``"drop_newest"``  keep the backlog, drop the new frame, and (gated) wait for the next
                     keyframe (recording: a file wants what is already queued).

  Whenever an overflow leaves a gated queue waiting for a keyframe, ``on_keyframe_needed``
  is called (the consumer asks the publisher, throttled as it sees fit).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Generic, Literal, Protocol, TypeVar, runtime_checkable

if TYPE_CHECKING:
    from .frames import EncodedFrame

Overflow = Literal["flush", "drop_oldest", "drop_newest"]


@runtime_checkable
class FrameSink(Protocol):
    """A consumer of one publication's encoded frames (attached with ``Publication.attach``)."""

    def push(self, frame: EncodedFrame) -> None:
        """Take one encoded frame, in order, on the event loop; never blocks."""
        ...

    def skip_to_keyframe(self) -> None:
        """Frames were withheld (the publication is muted): resume at the next keyframe."""
        ...

    def publication_closed(self) -> None:
        """The publication closed (``Publication.close()`` cascades here); no I/O."""
        ...


class Keyed(Protocol):
    @property
    def keyframe(self) -> bool: ...


F = TypeVar("F", bound=Keyed)


class KeyframeGatedQueue(Generic[F]):
    """A bounded FIFO of encoded frames that restarts at keyframes (rules: module docstring).

    One producer (the event loop) calls :meth:`offer`; one consumer pops, on the event loop or
    in a thread (deque ``append``/``popleft`` are atomic). ``on_ready`` is called after each
    frame is queued (wake the consumer).
    """

    __slots__ = (
        "_items",
        "_on_keyframe_needed",
        "_on_ready",
        "capacity",
        "dropped",
        "gated",
        "need_keyframe",
        "overflow",
    )

    def __init__(
        self,
        capacity: int,
        *,
        gated: bool,
        overflow: Overflow,
        on_ready: Callable[[], None] | None = None,
        on_keyframe_needed: Callable[[], None] | None = None,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.gated = gated
        self.overflow: Overflow = overflow
        self.need_keyframe = gated
        self.dropped = 0
        self._items: deque[F] = deque()
        self._on_ready = on_ready
        self._on_keyframe_needed = on_keyframe_needed

    def __len__(self) -> int:
        return len(self._items)

    def __bool__(self) -> bool:
        return bool(self._items)

    def offer(self, frame: F) -> bool:
        """Queue ``frame`` unless the gate or the bound says drop it; True if queued."""
        items = self._items
        if self.need_keyframe:
            if not frame.keyframe:
                self.dropped += 1
                return False
            self.need_keyframe = False
        if len(items) >= self.capacity:
            if self.overflow == "drop_oldest":
                items.popleft()
                self.dropped += 1
            elif self.overflow == "drop_newest":
                self.dropped += 1
                self._wait_for_keyframe()
                return False
            else:  # flush: whatever is queued is stale
                self.dropped += len(items)
                items.clear()
                if not frame.keyframe:
                    self.dropped += 1
                    self._wait_for_keyframe()
                    return False
        items.append(frame)
        if self._on_ready is not None:
            self._on_ready()
        return True

    def _wait_for_keyframe(self) -> None:
        if self.gated:
            self.need_keyframe = True
            if self._on_keyframe_needed is not None:
                self._on_keyframe_needed()

    def skip_to_keyframe(self) -> None:
        """Queue nothing more until a keyframe (gated queues only; no request is made)."""
        if self.gated:
            self.need_keyframe = True

    def popleft(self) -> F | None:
        """The oldest frame, or None when empty."""
        try:
            return self._items.popleft()
        except IndexError:
            return None

    def take_all(self) -> list[F]:
        """Every queued frame, oldest first (single-threaded consumers)."""
        items = list(self._items)
        self._items.clear()
        return items

    def clear(self) -> None:
        self._items.clear()
