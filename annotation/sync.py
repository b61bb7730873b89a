"""Transport-agnostic y-protocols sync for one document.

``SyncEngine.handle(message, can_write=...)`` takes one y-protocols *sync* message (the leading
message type 0, then sync step 1 / sync step 2 / update) and returns what to send back to the
caller and what to broadcast to the other peers. Malformed bytes raise ``MalformedMessage``
and leave the document untouched (yrs decodes an update completely before integrating it);
callers without write permission may read (sync step 1) but a step 2 or update that would
change the document raises ``PermissionDenied``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pycrdt import (
    Doc,
    TransactionEvent,
    YMessageType,
    YSyncMessageType,
    get_update,
    merge_updates,
    write_message,
)

from .errors import DocumentFull, MalformedMessage, MessageTooLarge, PermissionDenied

EMPTY_UPDATE = b"\x00\x00"

#: Hook run after a writer's update changed the doc, inside no transaction; it may write
#: server-side fix-ups (author stamp, measurements) into the doc.
AfterChange = Callable[[Doc, Any], None]


def read_var_uint(data: bytes, pos: int) -> tuple[int, int]:
    """(value, next position) of a lib0 varuint; MalformedMessage on truncation or overflow."""
    value = shift = 0
    while True:
        if pos >= len(data):
            raise MalformedMessage("truncated varuint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, pos
        if shift > 63:
            raise MalformedMessage("varuint too long")


def read_var_bytes(data: bytes, pos: int) -> tuple[bytes, int]:
    """(payload, next position) of a length-prefixed byte string."""
    length, pos = read_var_uint(data, pos)
    end = pos + length
    if end > len(data):
        raise MalformedMessage("payload shorter than its length prefix")
    return data[pos:end], end


def parse_sync_message(message: bytes) -> tuple[int, bytes]:
    """(sync type, payload) of a complete sync message; strict about trailing bytes."""
    msg_type, pos = read_var_uint(message, 0)
    if msg_type != YMessageType.SYNC:
        raise MalformedMessage(f"not a sync message (type {msg_type})")
    sync_type, pos = read_var_uint(message, pos)
    if sync_type not in (0, 1, 2):
        raise MalformedMessage(f"unknown sync message type {sync_type}")
    payload, pos = read_var_bytes(message, pos)
    if pos != len(message):
        raise MalformedMessage("trailing bytes after the sync message")
    return sync_type, payload


def sync_message(sync_type: int, payload: bytes) -> bytes:
    """Frame a sync message (type 0, sync type, var-bytes payload)."""
    return bytes([YMessageType.SYNC, sync_type]) + write_message(payload)


def step1(doc: Doc) -> bytes:
    """Sync step 1 carrying the doc's state vector."""
    return sync_message(YSyncMessageType.SYNC_STEP1, doc.get_state())


def update_message(update: bytes) -> bytes:
    """An incremental update message."""
    return sync_message(YSyncMessageType.SYNC_UPDATE, update)


def _is_fatal(exc: BaseException) -> bool:
    return isinstance(exc, KeyboardInterrupt | SystemExit | asyncio.CancelledError | GeneratorExit)


@dataclass
class SyncOutcome:
    """What one incoming message produced."""

    replies: list[bytes] = field(default_factory=list)  # to the caller, in order
    #: the doc's updates it caused, in order (the caller's, then the server's fix-ups): the
    #: service merges them with the other changes of its broadcast and its log batch, so the
    #: merge is paid once per batch rather than once per message
    parts: list[bytes] = field(default_factory=list)

    @property
    def update(self) -> bytes | None:
        """The effective update (caller's + server fix-ups) as one update."""
        if not self.parts:
            return None
        return self.parts[0] if len(self.parts) == 1 else merge_updates(*self.parts)

    @property
    def broadcast(self) -> bytes | None:
        """The update message for the other peers of the document."""
        update = self.update
        return None if update is None else update_message(update)


class SyncEngine:
    """y-protocols sync for one in-memory pycrdt ``Doc``."""

    def __init__(
        self,
        doc: Doc,
        *,
        max_message_bytes: int = 1 << 20,
        max_doc_bytes: int = 64 << 20,
        after_change: AfterChange | None = None,
    ) -> None:
        self.doc = doc
        self.max_message_bytes = max_message_bytes
        self.max_doc_bytes = max_doc_bytes
        self.doc_bytes = 0  # upper bound of the encoded state: loaded state + applied updates
        self.after_change = after_change
        self._captured: list[bytes] = []
        self._sub = doc.observe(self._on_transaction)

    def _on_transaction(self, event: TransactionEvent) -> None:
        update = event.update
        if update != EMPTY_UPDATE:
            self._captured.append(update)

    def close(self) -> None:
        """Stop observing the doc."""
        self.doc.unobserve(self._sub)

    def handle(self, message: bytes, *, can_write: bool, origin: Any = None) -> SyncOutcome:
        """Process one sync message from a caller (``origin`` is handed to ``after_change``)."""
        if len(message) > self.max_message_bytes:
            raise MessageTooLarge(
                f"sync message of {len(message)} bytes, over {self.max_message_bytes}"
            )
        sync_type, payload = parse_sync_message(message)
        if sync_type == YSyncMessageType.SYNC_STEP1:
            try:
                missing = self.doc.get_update(payload)
            except Exception as exc:
                raise MalformedMessage(f"bad state vector: {exc}") from exc
            return SyncOutcome(
                replies=[sync_message(YSyncMessageType.SYNC_STEP2, missing), step1(self.doc)]
            )
        if payload == EMPTY_UPDATE:
            return SyncOutcome()
        if not can_write:
            if self._would_change(payload):
                raise PermissionDenied("this role may not change the document (no annotate grant)")
            return SyncOutcome()  # e.g. a viewer's step 2 holding nothing new
        if self.doc_bytes + len(payload) > self.max_doc_bytes:
            self.doc_bytes = len(self.doc.get_update())  # the bound drifts up: measure once
            if self.doc_bytes + len(payload) > self.max_doc_bytes:
                raise DocumentFull(f"the document is over {self.max_doc_bytes} bytes")
        self._captured.clear()
        self._apply(payload)
        caller_parts = len(self._captured)
        if caller_parts and self.after_change is not None:
            self.after_change(self.doc, origin)
        captured, self._captured = self._captured, []
        if not captured:
            return SyncOutcome()
        self.doc_bytes += sum(len(part) for part in captured)
        outcome = SyncOutcome(parts=captured)
        fixups = captured[caller_parts:]
        if fixups:
            fix = fixups[0] if len(fixups) == 1 else merge_updates(*fixups)
            outcome.replies.append(update_message(fix))
        return outcome

    def _apply(self, update: bytes) -> None:
        try:
            self.doc.apply_update(update)
        except BaseException as exc:  # pyo3 panics derive from BaseException
            if _is_fatal(exc):
                raise
            self._captured.clear()
            raise MalformedMessage(f"update does not decode: {exc}") from exc

    def _would_change(self, update: bytes) -> bool:
        """Whether ``update`` may change the doc, decided without copying it.

        No change: no struct the doc lacks and every deletion already in the doc's delete set
        (merging it into the doc's delete-set-only update changes nothing). Anything else from
        a read-only caller is refused as a change: a viewer's own step 2 holds nothing new, and
        trying the update on a copy of the document cost O(document) per refusal.
        """
        try:
            state = self.doc.get_state()
            deletes_only = self.doc.get_update(state)
            unseen = get_update(update, state)
            return merge_updates(deletes_only, unseen) != deletes_only
        except BaseException as exc:  # pyo3 panics derive from BaseException
            if _is_fatal(exc):
                raise
            raise MalformedMessage(f"update does not decode: {exc}") from exc

    def apply_server_update(self, update: bytes) -> None:
        """Load persisted state (snapshot or logged update) without capturing it."""
        self.doc.apply_update(update)
        self.doc_bytes += len(update)
        self._captured.clear()


class RefusalLimiter:
    """Refused changes per connection: `burst` in `window_s`, then every sync message that
    could change the document is refused without looking at it until the window ends."""

    def __init__(self, burst: int = 5, window_s: float = 10.0) -> None:
        self.burst = burst
        self.window_s = window_s
        self._seen: dict[str, tuple[float, int]] = {}  # key -> (window start, refusals)

    def blocked(self, key: str) -> bool:
        """Whether `key` used up its refusals in the current window."""
        start, count = self._seen.get(key, (0.0, 0))
        if time.monotonic() - start >= self.window_s:
            self._seen.pop(key, None)
            return False
        return count >= self.burst

    def note(self, key: str) -> None:
        """Count one refusal of `key`."""
        now = time.monotonic()
        start, count = self._seen.get(key, (now, 0))
        if now - start >= self.window_s:
            start, count = now, 0
        self._seen[key] = (start, count + 1)

    def forget(self, key: str) -> None:
        """Drop what is kept for `key` (its connection left)."""
        self._seen.pop(key, None)
