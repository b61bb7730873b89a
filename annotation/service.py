"""The annotation service: document sessions, Socket.IO events and HTTP routes.

Socket.IO events (see docs/annotation.md): ``doc:list``, ``doc:open``, ``doc:sync``,
``doc:awareness``, ``doc:close`` from clients; ``doc:sync``, ``doc:awareness``, ``doc:added``
from the server. Reading (open, sync step 1) needs only a joined participant; a change needs
the ``annotate`` grant.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from aiohttp import web
from pycrdt import Doc, merge_updates
from pydantic import Field, Strict

from kernel.errors import ErrorCode, SignalingError
from signaling.extensions import Caller, FeatureHost
from signaling.schemas import Inbound

from .awareness import AwarenessRelay, Peer
from .documents import DocumentInfo, DocumentRepository
from .errors import (
    AnnotationError,
    DocumentNotFound,
    MalformedMessage,
    MessageTooLarge,
    PermissionDenied,
)
from .fixups import Author, ServerFixups
from .frames import FrameLoader
from .model import Annotation, identity_colour, new_doc, read_annotations, read_view
from .persistence import UpdateLog, Writer
from .storage import BlobStore
from .sync import RefusalLimiter, SyncEngine, step1, update_message
from .uploads import IngestedDocument, UploadLimits, ingest

log = logging.getLogger(__name__)

DOC_ID_PATTERN = r"^[0-9a-f]{32}$"
MAX_SYNC_BYTES = 512 * 1024
MAX_AWARENESS_BYTES = 16 * 1024
#: Fan-out coalescing: a change arriving within BUSY_WINDOW_S of the last broadcast waits up to
#: COALESCE_S so that concurrent changes leave as one merged update (fewer frames per change).
BUSY_WINDOW_S = 0.02
COALESCE_S = 0.004
# a stored file no document names is deleted only once it is this old: an upload's files are
# stored before its document row is committed
BLOB_GRACE_S = 3600.0


# wire models ------------------------------------------------------------------------------------


class DocListIn(Inbound):
    """``doc:list``: no fields."""


class DocRefIn(Inbound):
    """``doc:close``."""

    doc_id: Annotated[str, Field(pattern=DOC_ID_PATTERN)]


class DocSyncIn(DocRefIn):
    """``doc:open`` (msg = sync step 1) and ``doc:sync`` (any y-protocols sync message)."""

    msg: Annotated[bytes, Strict(), Field(max_length=MAX_SYNC_BYTES)]


class DocAwarenessIn(DocRefIn):
    """``doc:awareness``: a y-protocols awareness message."""

    msg: Annotated[bytes, Strict(), Field(max_length=MAX_AWARENESS_BYTES)]


def _is_step1(message: bytes) -> bool:
    """A sync step 1 (a read): type 0 then sync type 0."""
    return message[:2] == b"\x00\x00"


def doc_room(doc_id: str) -> str:
    """Socket.IO room of the connections that opened a document."""
    return f"doc:{doc_id}"


def to_signaling(exc: AnnotationError) -> SignalingError:
    """Map an annotation error to the signaling error a client receives."""
    if isinstance(exc, PermissionDenied):
        return SignalingError(ErrorCode.PERMISSION_DENIED, exc.message)
    if isinstance(exc, DocumentNotFound):
        return SignalingError(ErrorCode.NOT_FOUND, exc.message)
    if isinstance(exc, MessageTooLarge):
        return SignalingError(ErrorCode.PAYLOAD_TOO_LARGE, exc.message)
    if isinstance(exc, MalformedMessage):
        return SignalingError("malformed_update", exc.message)
    return SignalingError(exc.code, exc.message)


# sessions --------------------------------------------------------------------------------------


@dataclass
class DocSession:
    """One loaded document: its Y doc, sync engine, awareness and members."""

    info: DocumentInfo
    doc: Doc
    engine: SyncEngine
    fixups: ServerFixups
    awareness: AwarenessRelay = field(default_factory=AwarenessRelay)
    members: dict[str, Caller] = field(default_factory=dict)  # sid -> caller
    since_compaction: int = 0
    tail_bytes: int = 0  # bytes of the updates logged since the last compaction
    snapshot_bytes: int = 0  # size of the document at its last compaction (or load)
    seq: int = 0  # changes applied since loaded (doc:sync ack ``seq``, ``doc:saved``)
    outbox: list[tuple[str, bytes]] = field(default_factory=list)  # (sender sid, update)
    fixup_queued: bool = False  # a change in the outbox was fixed up: its sender needs it
    flush_scheduled: bool = False
    last_flush: float = 0.0


class AnnotationService:
    """Documents of all rooms on this node."""

    def __init__(
        self,
        store: Writer,
        data_dir: Path,
        *,
        limits: UploadLimits | None = None,
        compact_every: int = 500,
        max_sync_bytes: int = MAX_SYNC_BYTES,
    ) -> None:
        self.store = store
        self.blobs = BlobStore(data_dir / "documents")
        self.repo = DocumentRepository(store.engine)
        self.log = UpdateLog(store)
        self.frames = FrameLoader(self.blobs)
        self.limits = limits or UploadLimits()
        self.compact_every = compact_every
        self.max_sync_bytes = max_sync_bytes
        # read-only callers whose changes were refused (refused outright after a few)
        self.refusals = RefusalLimiter()
        self.sessions: dict[str, DocSession] = {}
        self._loading: dict[str, asyncio.Lock] = {}
        self._saved: dict[tuple[str, str], int] = {}
        self._saved_task: asyncio.Future[None] | None = None
        self._tasks: set[asyncio.Future[None]] = set()
        self.broadcasts = 0
        self.ns: FeatureHost | None = None

    # documents ---------------------------------------------------------------------------------

    async def upload(
        self, room: str, identity: str, name: str, files: list[tuple[str, bytes]]
    ) -> DocumentInfo:
        """Validate, store and record an upload; tell the room."""
        ingested: IngestedDocument = await asyncio.to_thread(ingest, files, self.blobs, self.limits)
        info = await self.repo.add(room, ingested, identity, name)
        if self.ns is not None:
            await self.ns.emit_to_room(room, "doc:added", {"document": info.public()})
        return info

    async def collect_blobs(self) -> dict[str, int]:
        """Delete stored files no document uses any more (run after a retention purge)."""
        await self.repo.index_files()
        candidates = await asyncio.to_thread(self.blobs.unused_candidates, BLOB_GRACE_S)
        used = await self.repo.files_in_use(candidates)
        unused = [d for d in candidates if d not in used]
        removed = await asyncio.to_thread(self.blobs.delete_unused, unused, BLOB_GRACE_S)
        return {"document_blobs": removed}

    async def session(self, doc_id: str, room: str) -> DocSession:
        """The loaded session of a document of ``room`` (loaded from persistence on first use)."""
        found = self.sessions.get(doc_id)
        if found is not None:
            if found.info.room != room:
                raise DocumentNotFound(f"no document {doc_id!r} in this room")
            return found
        lock = self._loading.setdefault(doc_id, asyncio.Lock())
        async with lock:
            found = self.sessions.get(doc_id)
            if found is None:
                info = await self.repo.get(doc_id, room)
                found = await self._load(info)
                self.sessions[doc_id] = found
        if found.info.room != room:
            raise DocumentNotFound(f"no document {doc_id!r} in this room")
        return found

    async def _load(self, info: DocumentInfo) -> DocSession:
        doc = new_doc()
        spacing = tuple(info.pixel_spacing) if info.pixel_spacing else None
        unit = "HU" if info.modality == "CT" else None

        def values(frame: int) -> Any:
            return self.frames.values(info, frame)

        fixups = ServerFixups(doc, spacing, values, unit)  # type: ignore[arg-type]
        engine = SyncEngine(doc, max_message_bytes=self.max_sync_bytes, after_change=fixups)
        for update in await self.log.load(info.id):
            engine.apply_server_update(update)
        fixups.reset()
        return DocSession(info, doc, engine, fixups, snapshot_bytes=engine.doc_bytes)

    async def state(
        self, doc_id: str, room: str
    ) -> tuple[DocumentInfo, list[Annotation], int, dict[str, Any]]:
        """Current annotations and view of a document (for export)."""
        s = await self.session(doc_id, room)
        annotations, invalid = read_annotations(s.doc)
        return s.info, annotations, invalid, read_view(s.doc)

    async def close_room(self, room: str) -> None:
        """Compact and unload the room's sessions."""
        futures = []
        for doc_id, s in list(self.sessions.items()):
            if s.info.room != room:
                continue
            if s.since_compaction:
                futures.append(self._compact(s))
            s.engine.close()
            del self.sessions[doc_id]
        for fut in futures:
            with contextlib.suppress(Exception):
                await fut
        await self.log.drain()

    async def close(self) -> None:
        """Compact every loaded document (shutdown)."""
        for room in {s.info.room for s in self.sessions.values()}:
            await self.close_room(room)

    # Socket.IO ---------------------------------------------------------------------------------

    def register(self, ns: FeatureHost) -> None:
        """Add the doc:* handlers and lifecycle listeners to the signaling namespace."""
        self.ns = ns
        ns.add_handler("doc:list", DocListIn, self._on_list)
        ns.add_handler("doc:open", DocSyncIn, self._on_open, max_bytes=MAX_SYNC_BYTES + 1024)
        # drawing (freehand especially) and pointers are chatty: a fifth of a rate token each
        ns.add_handler(
            "doc:sync", DocSyncIn, self._on_sync, max_bytes=MAX_SYNC_BYTES + 1024, cost=0.2
        )
        ns.add_handler(
            "doc:awareness",
            DocAwarenessIn,
            self._on_awareness,
            max_bytes=MAX_AWARENESS_BYTES + 1024,
            cost=0.2,
        )
        ns.add_handler("doc:close", DocRefIn, self._on_close)
        ns.listen("participant_left", self._on_left)
        ns.listen("room_closed", self.close_room)

    async def _member(self, caller: Caller, doc_id: str) -> DocSession:
        s = self.sessions.get(doc_id)
        if s is None or caller.sid not in s.members:
            raise SignalingError(ErrorCode.NOT_FOUND, "Open the document first (doc:open).")
        return s

    async def _on_list(self, caller: Caller, _msg: DocListIn) -> dict[str, Any]:
        docs = await self.repo.list_room(caller.room)
        return {"documents": [d.public() for d in docs]}

    async def _on_open(self, caller: Caller, msg: DocSyncIn) -> dict[str, Any]:
        try:
            s = await self.session(msg.doc_id, caller.room)
            outcome = s.engine.handle(msg.msg, can_write=False)
        except AnnotationError as exc:
            raise to_signaling(exc) from None
        if not outcome.replies:
            raise SignalingError("malformed_update", "doc:open needs a sync step 1 message.")
        s.members[caller.sid] = caller
        await self.ns.enter_room(caller.sid, doc_room(msg.doc_id))
        return {
            "document": s.info.public(),
            "replies": outcome.replies,
            "awareness": s.awareness.full_message(),
            "can_write": caller.grants.has("annotate"),
        }

    async def _on_sync(self, caller: Caller, msg: DocSyncIn) -> dict[str, Any]:
        s = await self._member(caller, msg.doc_id)
        can_write = caller.grants.has("annotate")
        if not can_write and self.refusals.blocked(caller.sid) and not _is_step1(msg.msg):
            raise SignalingError(
                ErrorCode.RATE_LIMITED,
                "Too many refused changes; this document is read-only for you.",
            )
        try:
            outcome = s.engine.handle(
                msg.msg, can_write=can_write, origin=Author(caller.identity, caller.name)
            )
        except PermissionDenied as exc:
            self.refusals.note(caller.sid)
            raise to_signaling(exc) from None
        except AnnotationError as exc:
            raise to_signaling(exc) from None
        seq = None
        fixup = False
        if outcome.parts:
            s.seq += 1
            seq = s.seq
            committed = self.log.append_parts(s.info.id, outcome.parts, caller.identity)
            committed.add_done_callback(
                lambda f, sid=caller.sid, doc_id=msg.doc_id, q=seq: self._on_saved(
                    f, sid, doc_id, q
                )
            )
            s.since_compaction += 1
            s.tail_bytes += sum(len(part) for part in outcome.parts)
            if self._compaction_due(s):
                self._compact(s)
            fixup = bool(outcome.replies)
            s.fixup_queued = s.fixup_queued or fixup
            self._queue_broadcast(s, outcome.parts, caller.sid)
        # a change's fix-up goes back in the broadcast (which then reaches the sender too),
        # not in the ack: the ack stays one text frame
        replies = [] if outcome.parts else outcome.replies
        return {"replies": replies, "seq": seq, "fixup": fixup}

    def _compaction_due(self, s: DocSession) -> bool:
        """Every ``compact_every`` changes, and not before the tail is half the snapshot's
        size: a compaction encodes the whole document and writes it (at 10,000 marks, 4 MB:
        25 ms to encode, 25-35 ms of CPU to write), so its cost per change stays the same as
        the document grows, and a load replays at most half the document's size in updates."""
        return s.since_compaction >= self.compact_every and 2 * s.tail_bytes >= s.snapshot_bytes

    def _compact(self, s: DocSession) -> asyncio.Future[None]:
        snapshot = s.doc.get_update()
        s.since_compaction = 0
        s.tail_bytes = 0
        s.snapshot_bytes = len(snapshot)
        return self.log.compact(s.info.id, snapshot)

    def _queue_broadcast(self, s: DocSession, parts: list[bytes], sid: str) -> None:
        """Fan out merged: one message per event-loop turn, or per few ms under load."""
        s.outbox.extend((sid, part) for part in parts)
        if not s.flush_scheduled:
            s.flush_scheduled = True
            busy = time.monotonic() - s.last_flush < BUSY_WINDOW_S
            task = asyncio.ensure_future(self._flush_broadcast(s, COALESCE_S if busy else 0.0))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _flush_broadcast(self, s: DocSession, delay: float) -> None:
        await asyncio.sleep(delay)  # let the other handlers of this turn (or window) add theirs
        batch, s.outbox = s.outbox, []
        fixup, s.fixup_queued = s.fixup_queued, False
        s.flush_scheduled = False
        s.last_flush = time.monotonic()
        if not batch:
            return
        senders = {sid for sid, _ in batch}
        update = batch[0][1] if len(batch) == 1 else merge_updates(*(u for _, u in batch))
        # a sender receiving its own change again is harmless (already integrated); one whose
        # change was fixed up needs the broadcast for the fix-up
        skip = next(iter(senders)) if len(senders) == 1 and not fixup else None
        self.broadcasts += 1
        await self.ns.emit(
            "doc:sync",
            # seq: every change numbered up to it is in this update, fix-ups included
            {"doc_id": s.info.id, "msg": update_message(update), "seq": s.seq},
            to=doc_room(s.info.id),
            skip_sid=skip,
        )

    def _on_saved(self, fut: asyncio.Future[None], sid: str, doc_id: str, seq: int) -> None:
        """An update is committed: tell its sender (coalesced: one doc:saved per batch)."""
        if fut.cancelled() or fut.exception() is not None:
            log.error(
                "document %s: update %d was not saved: %r",
                doc_id,
                seq,
                None if fut.cancelled() else fut.exception(),
            )
            return
        key = (sid, doc_id)
        self._saved[key] = max(self._saved.get(key, 0), seq)
        if self._saved_task is None or self._saved_task.done():
            self._saved_task = asyncio.ensure_future(self._emit_saved())

    async def _emit_saved(self) -> None:
        await asyncio.sleep(0)  # let the rest of the batch's callbacks run first
        while self._saved:  # saves that land while we emit are sent by this same task
            pending, self._saved = self._saved, {}
            for (sid, doc_id), seq in pending.items():
                await self.ns.emit("doc:saved", {"doc_id": doc_id, "seq": seq}, to=sid)

    async def _on_awareness(self, caller: Caller, msg: DocAwarenessIn) -> dict[str, Any]:
        s = await self._member(caller, msg.doc_id)
        peer = Peer(
            caller.sid,
            caller.identity,
            caller.name,
            str(caller.role),
            identity_colour(caller.identity),
        )
        try:
            out = s.awareness.apply(msg.msg, peer)
        except AnnotationError as exc:
            raise to_signaling(exc) from None
        if out is not None:
            await self.ns.emit(
                "doc:awareness",
                {"doc_id": msg.doc_id, "msg": out},
                to=doc_room(msg.doc_id),
                skip_sid=caller.sid,
            )
        return {}

    async def _on_close(self, caller: Caller, msg: DocRefIn) -> dict[str, Any]:
        s = await self._member(caller, msg.doc_id)
        await self._drop_member(s, caller.sid)
        return {}

    async def _drop_member(self, s: DocSession, sid: str) -> None:
        s.members.pop(sid, None)
        if not any(sid in other.members for other in self.sessions.values()):
            self.refusals.forget(sid)
        with contextlib.suppress(Exception):
            await self.ns.leave_room(sid, doc_room(s.info.id))
        gone = s.awareness.remove_peer(sid)
        if gone is not None:
            await self.ns.emit(
                "doc:awareness", {"doc_id": s.info.id, "msg": gone}, to=doc_room(s.info.id)
            )
        if not s.members and s.since_compaction:  # idle: fold the tail into the snapshot
            self._compact(s)

    async def _on_left(self, caller: Caller, _reason: str) -> None:
        for s in list(self.sessions.values()):
            if caller.sid in s.members:
                await self._drop_member(s, caller.sid)

    # raw sync (tests, tools) -------------------------------------------------------------------

    def server_state_message(self, doc_id: str) -> bytes:
        """Sync step 1 of a loaded document."""
        return step1(self.sessions[doc_id].doc)


ANNOTATION = web.AppKey("annotation", AnnotationService)
