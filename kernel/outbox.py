"""Decide under a lock, send after it: the outbox and the room lock that knows its holder.

An emit does not wait for the socket write (python-engineio queues the packet for the
connection's writer task), but it first checks the peer's ping deadline: for a peer that stopped
answering (a phone that dropped off the network without closing) it closes the socket there and
then, running that connection's disconnect handler inline, in the emitting task. If the emitter
holds a room lock, the handler's wait for that lock never ends and the room freezes. So no
network I/O (emit, disconnect, HTTP, Redis) is awaited while a room or connection lock is held:
what to send is collected in an `Outbox` under the lock and flushed after release
(docs/architecture.md, "Locks").

`RoomLock` records which task holds it; `ConsultNamespace.emit` refuses to send from a task
holding one (`LockHeldError` when `STRICT`, as in the tests; otherwise it logs and sends from
a task of its own, which then waits for the lock like anyone else).
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

log = logging.getLogger(__name__)

# tests/conftest.py sets this: a send under a room lock is then an error, not a log line
STRICT = False

Send = Callable[[], Awaitable[Any]]

_held: weakref.WeakKeyDictionary[asyncio.Task[Any], int] = weakref.WeakKeyDictionary()


class LockHeldError(AssertionError):
    """Network I/O was attempted by a task holding a room lock."""


class RoomLock(asyncio.Lock):
    """An asyncio.Lock that counts, per task, the room locks it holds."""

    def __init__(self) -> None:
        super().__init__()
        self._holder: asyncio.Task[Any] | None = None

    async def acquire(self) -> bool:
        await super().acquire()
        task = asyncio.current_task()
        self._holder = task
        if task is not None:
            _held[task] = _held.get(task, 0) + 1
        return True

    def release(self) -> None:
        task = self._holder
        self._holder = None
        if task is not None:
            left = _held.get(task, 0) - 1
            if left > 0:
                _held[task] = left
            else:
                _held.pop(task, None)
        super().release()


def holds_room_lock() -> bool:
    """Whether the running task holds any RoomLock."""
    try:
        task = asyncio.current_task()
    except RuntimeError:
        return False
    return task is not None and _held.get(task, 0) > 0


class Outbox:
    """Sends decided under a lock, made in order once it is released (`flush`).

    Owned by the task that made it: sends from other tasks (spawned while it was open) are
    never captured. A send that fails is logged; the rest still go out.
    """

    def __init__(self, emit: Callable[..., Awaitable[Any]] | None = None) -> None:
        self.owner = asyncio.current_task()
        self.open = True
        self._emit = emit
        self._sends: list[Send] = []

    def captures(self) -> bool:
        """Whether a send made now belongs in this outbox."""
        return self.open and asyncio.current_task() is self.owner

    def later(self, send: Send) -> None:
        """Queue `send()` (a coroutine function) for the flush."""
        if not self.open:
            raise RuntimeError("this outbox was flushed already")
        self._sends.append(send)

    def emit(self, event: str, data: Any = None, **target: Any) -> None:
        """Queue `emit(event, data, **target)` (to=, room=, skip_sid=) for the flush."""
        if self._emit is None:
            raise RuntimeError("this outbox has no emitter")
        self.later(partial(self._emit, event, data, **target))

    def __len__(self) -> int:
        return len(self._sends)

    async def flush(self) -> None:
        """Make the queued sends, in order (call with no lock held)."""
        self.open = False
        sends, self._sends = self._sends, []
        for send in sends:
            try:
                await send()
            except Exception:
                log.exception("a deferred send failed")
