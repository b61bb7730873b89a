"""A small Python client for shared documents: pycrdt + python-socketio (AsyncClient).

Used by the tests and the benchmark; it speaks the same wire events a browser running Yjs
would (docs/annotation.md)::

    client = await AnnotationClient(url, token).connect()
    cdoc = await client.open(doc_id)
    mark = cdoc.draw_length((10, 10), (60, 10))   # or any change in ``with cdoc.edit():``
    await cdoc.flush()
    await other.wait_until(lambda d: mark in d.annotations())
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import jwt
import socketio
from pycrdt import Awareness, Map, YSyncMessageType

from .model import annotations_map, identity_colour, new_doc, view_map
from .sync import EMPTY_UPDATE, parse_sync_message, step1, sync_message, update_message

WAIT_S = 10.0
OPEN_WAIT_S = 30.0
MAX_FRAME_BYTES = 256 * 1024 * 1024
Point = tuple[float, float]


class ClientError(Exception):
    """The server answered an event with ``ok: false``."""

    def __init__(self, event: str, error: dict[str, Any]) -> None:
        super().__init__(f"{event}: {error.get('code')}: {error.get('message')}")
        self.event = event
        self.code = str(error.get("code"))
        self.error = error


class ClientDoc:
    """One opened document: a local pycrdt Doc kept in sync with the server."""

    def __init__(self, client: AnnotationClient, doc_id: str) -> None:
        self.client = client
        self.doc_id = doc_id
        self.doc = new_doc()
        self.info: dict[str, Any] = {}
        self.can_write = False
        self.awareness = Awareness(self.doc)
        self.remote_awareness: dict[int, dict[str, Any]] = {}
        self.errors: list[dict[str, Any]] = []
        self.own_marks: list[str] = []
        self.updates_received = 0
        self.last_remote_at = 0.0
        self._remote = False
        self._online = False
        self._outstanding = 0
        self._changed = asyncio.Condition()
        self._idle = asyncio.Event()
        self._idle.set()
        self._acked = asyncio.Event()
        self._saved = asyncio.Event()
        self.last_seq = 0  # highest seq the server gave one of our changes
        self.saved_seq = 0  # highest seq the server says is committed
        self.fixup_seq = 0  # highest seq of ours the server fixed up (the fix-up comes broadcast)
        self.synced_seq = 0  # highest seq a broadcast said it holds
        self.last_ack: dict[str, Any] = {}  # the newest doc:sync ack
        self._synced = asyncio.Event()

    # sync ----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def edit(self) -> Iterator[None]:
        """Send the changes made to ``doc`` in this block (every drawing method uses it).

        The doc is observed only here: an observed pycrdt doc encodes an update event for
        every transaction, remote ones included, which cost each client about 7 us per
        received mark (the benchmark's clients apply every mark of the room). A change made
        outside such a block reaches the server with the next state exchange (reconnect).
        """
        sub = self.doc.observe(self._on_local)
        try:
            yield
        finally:
            self.doc.unobserve(sub)

    def _on_local(self, event: Any) -> None:
        if self._remote or not self._online or event.update == EMPTY_UPDATE:
            return
        self._send(update_message(event.update))

    def _send(self, msg: bytes) -> None:
        """Pipelined doc:sync: no wait for the ack, but track it (flush() waits for all)."""
        self._outstanding += 1
        self._idle.clear()

        def on_ack(ack: Any = None) -> None:
            self._outstanding -= 1
            self._acked.set()
            if isinstance(ack, dict):
                self.last_ack = ack
                if ack.get("seq"):
                    self.last_seq = max(self.last_seq, int(ack["seq"]))
                    if ack.get("fixup"):
                        self.fixup_seq = max(self.fixup_seq, int(ack["seq"]))
                if not ack.get("ok"):
                    self.errors.append(ack.get("error") or {})
                for reply in ack.get("replies") or []:
                    self._apply_remote(reply)
            if self._outstanding <= 0:
                self._idle.set()

        async def emit() -> None:
            try:
                await self.client.sio.emit(
                    "doc:sync", {"doc_id": self.doc_id, "msg": msg}, callback=on_ack
                )
            except socketio.exceptions.SocketIOError:
                # disconnected: the change stays in the local doc and goes out with the
                # state-vector exchange on reconnect
                self._outstanding -= 1
                if self._outstanding <= 0:
                    self._idle.set()

        task = asyncio.ensure_future(emit())
        self.client._tasks.add(task)
        task.add_done_callback(self.client._tasks.discard)

    def _apply_remote(self, msg: bytes) -> None:
        sync_type, payload = parse_sync_message(msg)
        if sync_type == YSyncMessageType.SYNC_STEP1:
            reply = self.doc.get_update(payload)
            self._send(sync_message(YSyncMessageType.SYNC_STEP2, reply))
            return
        if payload == EMPTY_UPDATE:
            return
        self._remote = True
        try:
            self.doc.apply_update(payload)
        finally:
            self._remote = False
        self.updates_received += 1
        self.last_remote_at = time.perf_counter()
        self.client._notify()

    async def _open(self) -> None:
        ack = await self.client.call(
            "doc:open", {"doc_id": self.doc_id, "msg": step1(self.doc)}, timeout=OPEN_WAIT_S
        )
        self.info = ack["document"]
        self.can_write = bool(ack.get("can_write"))
        self._online = True
        for reply in ack["replies"]:
            self._apply_remote(reply)
        if ack.get("awareness"):
            self._apply_awareness(ack["awareness"])

    def _apply_awareness(self, msg: bytes) -> None:
        from .awareness import parse_awareness_message

        for client_id, _clock, state in parse_awareness_message(msg, max_clients=1 << 16):
            if state is None:
                self.remote_awareness.pop(client_id, None)
            else:
                self.remote_awareness[client_id] = state
        self.client._notify()

    async def backpressure(self, max_outstanding: int, timeout: float = WAIT_S) -> None:
        """Wait (bounded) until fewer than ``max_outstanding`` updates await their ack."""
        async with asyncio.timeout(timeout):
            while self._outstanding >= max_outstanding:
                self._acked.clear()
                await self._acked.wait()

    def _on_saved(self, seq: int) -> None:
        self.saved_seq = max(self.saved_seq, seq)
        self._saved.set()

    def _on_synced(self, seq: int) -> None:
        self.synced_seq = max(self.synced_seq, seq)
        self._synced.set()

    async def flush(self, timeout: float = WAIT_S) -> None:
        """Wait until every update sent so far is acknowledged and saved (``doc:saved``), and
        the server's fix-ups of them have arrived (the broadcast that holds them)."""
        async with asyncio.timeout(timeout):
            await self._idle.wait()
            if self.errors:
                raise ClientError("doc:sync", self.errors[-1])
            while self.saved_seq < self.last_seq:
                self._saved.clear()
                await self._saved.wait()
            while self.synced_seq < self.fixup_seq:
                self._synced.clear()
                await self._synced.wait()

    # reading -------------------------------------------------------------------------------

    def annotations(self) -> dict[str, dict[str, Any]]:
        """Plain copy of the annotations map."""
        return dict(annotations_map(self.doc).to_py() or {})

    def view(self) -> dict[str, Any]:
        """Plain copy of the view state."""
        return dict(view_map(self.doc).to_py() or {})

    def state(self) -> bytes:
        """The doc's full encoded state (for convergence checks)."""
        return self.doc.get_update()

    # drawing -------------------------------------------------------------------------------

    def draw(
        self,
        tool: str,
        points: list[Point],
        *,
        text: str = "",
        frame: int = 0,
        sop_uid: str | None = None,
    ) -> str:
        """Add a mark; returns its id (sent to the server right away)."""
        ann_id = uuid.uuid4().hex
        now = time.time()
        if sop_uid is None and self.info.get("sop_uids"):
            sop_uids = self.info["sop_uids"]
            sop_uid = sop_uids[frame] if 0 <= frame < len(sop_uids) else None
        mark = Map(
            {
                "id": ann_id,
                "author": self.client.identity,
                "author_name": self.client.name,
                "colour": identity_colour(self.client.identity),
                "tool": tool,
                "points": [[float(x), float(y)] for x, y in points],
                "frame": frame,
                "sop_uid": sop_uid,
                "text": text,
                "created": now,
                "updated": now,
            }
        )
        with self.edit():
            annotations_map(self.doc)[ann_id] = mark
        self.own_marks.append(ann_id)
        return ann_id

    def draw_arrow(self, tail: Point, head: Point, text: str = "", frame: int = 0) -> str:
        """Arrow from ``tail`` to ``head`` with optional text."""
        return self.draw("arrow", [tail, head], text=text, frame=frame)

    def draw_length(self, a: Point, b: Point, frame: int = 0) -> str:
        """Length between two points (mm on calibrated images)."""
        return self.draw("length", [a, b], frame=frame)

    def draw_angle(self, a: Point, vertex: Point, b: Point, frame: int = 0) -> str:
        """Angle at ``vertex``."""
        return self.draw("angle", [a, vertex, b], frame=frame)

    def draw_ellipse(self, corner: Point, opposite: Point, frame: int = 0) -> str:
        """Ellipse ROI inscribed in the box of two corners."""
        return self.draw("ellipse", [corner, opposite], frame=frame)

    def draw_rect(self, corner: Point, opposite: Point, frame: int = 0) -> str:
        """Rectangle ROI."""
        return self.draw("rect", [corner, opposite], frame=frame)

    def draw_freehand(self, points: list[Point], frame: int = 0) -> str:
        """Freehand stroke."""
        return self.draw("freehand", points, frame=frame)

    def draw_text(self, at: Point, text: str, frame: int = 0) -> str:
        """Text label."""
        return self.draw("text", [at], text=text, frame=frame)

    def move(self, ann_id: str, points: list[Point]) -> None:
        """Replace a mark's geometry."""
        entry = annotations_map(self.doc)[ann_id]
        with self.edit(), self.doc.transaction():
            entry["points"] = [[float(x), float(y)] for x, y in points]
            entry["updated"] = time.time()

    def undo(self) -> str | None:
        """Remove this author's most recent mark still present; its id, or None."""
        amap = annotations_map(self.doc)
        while self.own_marks:
            ann_id = self.own_marks.pop()
            if ann_id in amap:
                with self.edit():
                    del amap[ann_id]
                return ann_id
        return None

    def set_view(self, **values: Any) -> None:
        """Update the shared view state (frame, window_center, window_width, zoom, ...)."""
        vmap = view_map(self.doc)
        with self.edit(), self.doc.transaction():
            for key, value in values.items():
                vmap[key] = value
            vmap["presenter"] = self.client.identity

    async def set_cursor(self, x: float, y: float) -> None:
        """Publish this client's pointer through awareness."""
        self.awareness.set_local_state({"cursor": {"x": x, "y": y}})
        msg = bytes([1]) + _var_bytes(
            self.awareness.encode_awareness_update([self.awareness.client_id])
        )
        await self.client.call("doc:awareness", {"doc_id": self.doc_id, "msg": msg})


def _var_bytes(data: bytes) -> bytes:
    from pycrdt import write_message

    return write_message(data)


class AnnotationClient:
    """One participant's connection: join the room, open documents, wait for convergence."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.token = token
        claims = jwt.decode(token, options={"verify_signature": False})
        self.identity: str = claims["sub"]
        self.name: str = claims.get("name") or self.identity
        self.room: str = claims["room"]
        self.docs: dict[str, ClientDoc] = {}
        self.errors: list[Any] = []
        self.added: list[dict[str, Any]] = []  # documents announced by doc:added
        self.joined: dict[str, Any] = {}
        self._tasks: set[asyncio.Future[Any]] = set()
        self._cond: asyncio.Condition | None = None
        self._generation = 0
        self._waiters = 0
        self._admitted = asyncio.Event()
        self.sio = self._new_socket()

    def _new_socket(self) -> socketio.AsyncClient:
        # a late joiner's sync step 2 can be several MB: lift aiohttp's 4 MB frame limit
        sio = socketio.AsyncClient(
            reconnection=False, websocket_extra_options={"max_msg_size": MAX_FRAME_BYTES}
        )
        sio.on("doc:sync", self._on_sync)
        sio.on("doc:awareness", self._on_awareness)
        sio.on("error", self._on_error)
        sio.on("lobby:admitted", self._on_admitted)
        sio.on("doc:saved", self._on_doc_saved)
        sio.on("doc:added", self._on_doc_added)
        return sio

    async def _on_doc_added(self, data: dict[str, Any]) -> None:
        if isinstance(data, dict) and isinstance(data.get("document"), dict):
            self.added.append(data["document"])
            self._notify()

    async def _on_doc_saved(self, data: dict[str, Any]) -> None:
        cdoc = self.docs.get(data.get("doc_id", ""))
        if cdoc is not None:
            cdoc._on_saved(int(data.get("seq", 0)))

    async def _on_admitted(self, _data: Any = None) -> None:
        self._admitted.set()

    async def _on_sync(self, data: dict[str, Any]) -> None:
        cdoc = self.docs.get(data.get("doc_id", ""))
        if cdoc is not None:
            cdoc._apply_remote(data["msg"])
            if isinstance(data.get("seq"), int):
                cdoc._on_synced(data["seq"])

    async def _on_awareness(self, data: dict[str, Any]) -> None:
        cdoc = self.docs.get(data.get("doc_id", ""))
        if cdoc is not None:
            cdoc._apply_awareness(data["msg"])

    async def _on_error(self, data: Any) -> None:
        self.errors.append(data)
        self._notify()

    def _notify(self) -> None:
        self._generation += 1
        if self._cond is not None and self._waiters:
            cond = self._cond

            async def wake() -> None:
                async with cond:
                    cond.notify_all()

            task = asyncio.ensure_future(wake())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def call(self, event: str, data: dict[str, Any], timeout: float = WAIT_S) -> Any:
        """Emit with ack; ClientError when the server says ``ok: false``."""
        ack = await self.sio.call(event, data, timeout=timeout)
        if not isinstance(ack, dict) or not ack.get("ok"):
            raise ClientError(event, (ack or {}).get("error") or {})
        return ack

    async def connect(self, join: bool = True) -> AnnotationClient:
        """Connect with the join token and join the room."""
        self._cond = asyncio.Condition()
        await self.sio.connect(
            self.url, auth={"token": self.token}, transports=["websocket"], wait_timeout=WAIT_S
        )
        if join:
            self.joined = await self.call("join", {})
            if self.joined.get("status") == "joined":
                self._admitted.set()
        return self

    async def admitted(self, timeout: float = WAIT_S) -> None:
        """Wait (bounded) until the host let this participant in from the waiting room."""
        await asyncio.wait_for(self._admitted.wait(), timeout)

    async def list_documents(self) -> list[dict[str, Any]]:
        """The room's documents."""
        return (await self.call("doc:list", {}))["documents"]

    async def open(self, doc_id: str) -> ClientDoc:
        """Open (and sync) a document."""
        cdoc = self.docs.get(doc_id) or ClientDoc(self, doc_id)
        self.docs[doc_id] = cdoc
        await cdoc._open()
        return cdoc

    async def disconnect(self) -> None:
        """Drop the connection; documents stay in memory and keep local edits."""
        for cdoc in self.docs.values():
            cdoc._online = False
            cdoc._outstanding = 0
            cdoc._idle.set()
        if self.sio.connected:
            await self.sio.disconnect()

    async def reconnect(self) -> None:
        """New connection, rejoin, and re-sync every open document from its state vector."""
        await self.disconnect()
        self.sio = self._new_socket()
        self._admitted.clear()
        await self.connect()
        await self.admitted()
        for cdoc in self.docs.values():
            await cdoc._open()

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = WAIT_S) -> None:
        """Wait (bounded) until ``predicate()`` holds; re-checked on every change this client
        receives, so the predicate must depend on this client's documents only."""
        assert self._cond is not None, "connect() first"
        self._waiters += 1
        try:
            async with asyncio.timeout(timeout), self._cond:
                while not predicate():
                    await self._cond.wait()
        finally:
            self._waiters -= 1

    async def close(self) -> None:
        """Disconnect and cancel pending sends."""
        await self.disconnect()
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
