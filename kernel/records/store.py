"""RecordStore: durable consult records on SQLAlchemy 2 async (SQLite default, PostgreSQL option).

Every write is committed before the caller acknowledges anything to a client, so a restart
loses nothing that was acknowledged. SQLite runs in WAL mode with synchronous=FULL. Writes go
through one writer task that commits whatever is queued in one transaction (group commit): one
fsync serves a whole batch, so a slow disk delays a burst of chat messages once, not once each.
A batch that fails is retried item by item, so one bad write fails only its own caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from sqlalchemy import Connection, event, insert, inspect, or_, select, text, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.schema import CreateColumn

from kernel.records import tables as t

log = logging.getLogger(__name__)
T = TypeVar("T")
WriteFn = Callable[[AsyncConnection], Awaitable[Any]]


@dataclass(slots=True)
class RoomRecord:
    """The persisted state of a room."""

    name: str
    created_at: float
    ended_at: float | None
    locked: bool
    lobby_policy: str


@dataclass(slots=True)
class ChatRecord:
    """One stored chat message."""

    id: int
    room: str
    sender_identity: str
    sender_name: str
    sender_role: str
    text: str
    reply_to: int | None
    created_at: float

    def as_event(self) -> dict[str, Any]:
        """The wire form of a chat message (see docs/protocol.md)."""
        return {
            "id": self.id,
            "sender": {
                "identity": self.sender_identity,
                "name": self.sender_name,
                "role": self.sender_role,
            },
            "text": self.text,
            "reply_to": self.reply_to,
            "ts": self.created_at,
        }


@dataclass(slots=True)
class AdmissionRecord:
    """A lobby request and its outcome."""

    id: int
    identity: str
    requested_at: float
    card: dict[str, Any] | None
    decision: str | None


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


async def _noop(_conn: AsyncConnection) -> None:
    return None


def _item(results: asyncio.Future[list[T]], index: int) -> asyncio.Future[T]:
    """A future of `results`'s item `index` (its exception, if it fails)."""
    item: asyncio.Future[T] = results.get_loop().create_future()

    def done(f: asyncio.Future[list[T]]) -> None:
        if item.done():
            return
        if f.cancelled():
            item.cancel()
        elif (exc := f.exception()) is not None:
            item.set_exception(exc)
        else:
            item.set_result(f.result()[index])

    results.add_done_callback(done)
    return item


#: checks (or stamps) the schema version before create_all; the composition root passes
#: rtc_server.migrations.check_or_create (an empty database is created and stamped at the
#: newest revision, an older one is refused: `teleconsult db upgrade`)
SchemaCheck = Callable[[Connection], None]


def _create_schema(conn: Connection, schema_check: SchemaCheck | None) -> None:
    """Check the schema version (``schema_check``); then create_all and add columns that code
    defines without a revision yet (only nullable ones or ones with a server default, which
    ALTER TABLE can add)."""
    if schema_check is not None:
        schema_check(conn)
    t.metadata.create_all(conn)
    inspector = inspect(conn)
    for table in t.metadata.sorted_tables:
        present = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in present:
                continue
            if not (column.nullable or column.server_default is not None):
                raise RuntimeError(
                    f"table {table.name} lacks column {column.name}; migrate the database"
                )
            ddl = CreateColumn(column).compile(dialect=conn.dialect)
            conn.execute(text(f"ALTER TABLE {table.name} ADD COLUMN {ddl}"))
            log.info("added column %s.%s", table.name, column.name)


class RecordStore:
    """Async access to the records database."""

    def __init__(
        self, url: str, node: str = "main", schema_check: SchemaCheck | None = None
    ) -> None:
        self.url = url
        self.schema_check = schema_check
        # the node (process) writing through this store; scopes start-up session cleanup
        self.node = node
        self.engine: AsyncEngine = create_async_engine(url)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        self._pending: list[tuple[WriteFn, asyncio.Future[Any]]] = []
        self._wakeup = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self.batches = 0
        self.batched_writes = 0
        self._session_rows: list[dict[str, Any]] | None = None  # rows of the queued insert
        self._session_ids: asyncio.Future[list[int]] | None = None
        self._revocation_queries: dict[str, list[asyncio.Future[bool]]] = {}
        self._revocation_reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Create the schema (all tables on the shared metadata) and close stale sessions."""
        for attempt in range(3):
            try:
                async with self.engine.begin() as conn:
                    await conn.run_sync(_create_schema, self.schema_check)
                break
            except SQLAlchemyError:
                # another node or worker creating the same schema at the same moment
                if attempt == 2:
                    raise
                await asyncio.sleep(0.2 * (attempt + 1))
        self._writer = asyncio.create_task(self._write_loop(), name="records-writer")
        # sessions left open by a crash end at the crash; we cannot know when, so use now
        await self.close_open_sessions("server_restart")

    async def close(self) -> None:
        """Finish queued writes, stop the writer and dispose of the engine."""
        if self._writer is not None:
            # writes commit in order, so once a no-op commits everything before it has
            await self.write(_noop)
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None
        await self.engine.dispose()

    async def write(self, fn: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """Run `await fn(conn)` in a write transaction; returns once it is committed."""
        return await self.write_soon(fn)

    def write_soon(self, fn: Callable[[AsyncConnection], Awaitable[T]]) -> asyncio.Future[T]:
        """Queue `fn` now (its place in the commit order is taken before this returns); the
        future resolves once it is committed. `fn` may run twice: once in a batch that
        fails, then alone."""
        if self._writer is None:
            raise RuntimeError("RecordStore.start() has not run (or close() has)")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append((fn, future))
        self._wakeup.set()
        return future

    async def _write(self, stmt: Any) -> Any:
        async def run(conn: AsyncConnection) -> Any:
            return await conn.execute(stmt)

        return await self.write(run)

    async def _write_loop(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            batch, self._pending = self._pending, []
            if not batch:
                continue
            self.batches += 1
            self.batched_writes += len(batch)
            try:
                results = []
                async with self.engine.begin() as conn:
                    for fn, _future in batch:
                        results.append(await fn(conn))
            except Exception:
                # one bad write must not fail the others: retry each in its own transaction
                for fn, future in batch:
                    try:
                        async with self.engine.begin() as conn:
                            result = await fn(conn)
                    except Exception as exc:
                        if not future.done():
                            future.set_exception(exc)
                    else:
                        if not future.done():
                            future.set_result(result)
                continue
            for (_fn, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)

    # rooms -------------------------------------------------------------------------------------

    async def load_room(self, name: str) -> RoomRecord | None:
        """The persisted room, or None if it was never created."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(t.rooms).where(t.rooms.c.name == name))).first()
        if row is None:
            return None
        return RoomRecord(row.name, row.created_at, row.ended_at, row.locked, row.lobby_policy)

    async def create_room(self, name: str, lobby_policy: str) -> RoomRecord:
        """Insert a new room row (idempotent: returns the existing one if present)."""
        return (await self.create_room_if_absent(name, lobby_policy))[0]

    async def create_room_if_absent(self, name: str, lobby_policy: str) -> tuple[RoomRecord, bool]:
        """Insert a new room row unless present; the room, and whether this call created it
        (then nothing refers to it yet: every room-scoped table has a foreign key to it)."""
        now = time.time()

        async def run(conn: AsyncConnection) -> bool:
            exists = (
                await conn.execute(select(t.rooms.c.name).where(t.rooms.c.name == name))
            ).first()
            if exists is None:
                await conn.execute(
                    insert(t.rooms).values(
                        name=name, created_at=now, locked=False, lobby_policy=lobby_policy
                    )
                )
            return exists is None

        if await self.write(run):
            return RoomRecord(name, now, None, False, lobby_policy), True
        record = await self.load_room(name)
        assert record is not None
        return record, False

    async def update_room(self, name: str, **values: Any) -> None:
        """Change persisted room fields (locked, lobby_policy, ended_at, ended_by)."""
        await self._write(update(t.rooms).where(t.rooms.c.name == name).values(**values))

    # bans --------------------------------------------------------------------------------------

    async def add_ban(self, room: str, identity: str, by: str, reason: str | None) -> None:
        """Keep a removed identity out of the room."""

        async def run(conn: AsyncConnection) -> None:
            key = (t.bans.c.room == room) & (t.bans.c.identity == identity)
            if (await conn.execute(select(t.bans.c.identity).where(key))).first() is None:
                await conn.execute(
                    insert(t.bans).values(
                        room=room,
                        identity=identity,
                        banned_at=time.time(),
                        banned_by=by,
                        reason=reason,
                    )
                )

        await self.write(run)

    async def bans(self, room: str) -> set[str]:
        """Identities removed from the room."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(select(t.bans.c.identity).where(t.bans.c.room == room))
            return {r.identity for r in rows}

    # participant sessions ----------------------------------------------------------------------

    async def open_session(self, room: str, identity: str, name: str, role: str) -> int:
        """Record that a participant joined; returns the session id."""
        return await self.open_session_soon(room, identity, name, role)

    def open_session_soon(
        self, room: str, identity: str, name: str, role: str
    ) -> asyncio.Future[int]:
        """Queue the session row of a participant who joined (its place in the commit order
        is taken now); the future gives the session id once the row is committed.

        Rows queued until the writer runs their insert share it (one statement for a burst of
        joins, as audit entries do)."""
        row = {
            "room": room,
            "identity": identity,
            "name": name,
            "role": role,
            "joined_at": time.time(),
            "node": self.node,
        }
        if self._session_rows is None:
            rows: list[dict[str, Any]] = []

            async def run(conn: AsyncConnection, rows: list[dict[str, Any]] = rows) -> list[int]:
                if self._session_rows is rows:
                    self._session_rows = None  # later rows go into the next insert
                table = t.participant_sessions
                stmt = insert(table).returning(table.c.id, sort_by_parameter_order=True)
                return [int(r.id) for r in await conn.execute(stmt, rows)]

            self._session_ids = self.write_soon(run)
            self._session_rows = rows
            # a write that fails before `run` starts (no connection) takes no more rows
            self._session_ids.add_done_callback(partial(self._session_insert_done, rows))
        assert self._session_ids is not None
        index = len(self._session_rows)
        self._session_rows.append(row)
        return _item(self._session_ids, index)

    def _session_insert_done(self, rows: list[dict[str, Any]], _done: asyncio.Future[Any]) -> None:
        if self._session_rows is rows:
            self._session_rows = None

    async def close_session(self, session_id: int, reason: str) -> None:
        """Record that a participant left and why."""
        stmt = (
            update(t.participant_sessions)
            .where(t.participant_sessions.c.id == session_id)
            .where(t.participant_sessions.c.left_at.is_(None))
            .values(left_at=time.time(), leave_reason=reason)
        )
        await self._write(stmt)

    async def close_open_sessions(self, reason: str) -> None:
        """End every open session of this node (start-up after a crash, and shutdown)."""
        node = t.participant_sessions.c.node
        stmt = (
            update(t.participant_sessions)
            .where(t.participant_sessions.c.left_at.is_(None))
            .where(or_(node == self.node, node.is_(None)))
            .values(left_at=time.time(), leave_reason=reason)
        )
        await self._write(stmt)

    async def sessions(self, room: str) -> list[dict[str, Any]]:
        """All participant sessions of a room, oldest first."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(t.participant_sessions)
                .where(t.participant_sessions.c.room == room)
                .order_by(t.participant_sessions.c.id)
            )
            return [dict(r._mapping) for r in rows]

    # admissions --------------------------------------------------------------------------------

    async def open_admission(
        self, room: str, identity: str, name: str, role: str, card: dict[str, Any] | None
    ) -> AdmissionRecord:
        """Open (or reuse the pending) lobby request of an identity; keeps its queue position."""

        async def run(conn: AsyncConnection) -> AdmissionRecord:
            row = (
                await conn.execute(
                    select(t.admissions)
                    .where(t.admissions.c.room == room)
                    .where(t.admissions.c.identity == identity)
                    .where(t.admissions.c.decision.is_(None))
                    .order_by(t.admissions.c.id.desc())
                )
            ).first()
            if row is not None:
                if card is not None:
                    await conn.execute(
                        update(t.admissions).where(t.admissions.c.id == row.id).values(card=card)
                    )
                return AdmissionRecord(row.id, identity, row.requested_at, card or row.card, None)
            now = time.time()
            result = await conn.execute(
                insert(t.admissions).values(
                    room=room, identity=identity, name=name, role=role, requested_at=now, card=card
                )
            )
            return AdmissionRecord(int(result.inserted_primary_key[0]), identity, now, card, None)

        record: AdmissionRecord = await self.write(run)
        return record

    async def set_card(self, admission_id: int, card: dict[str, Any]) -> None:
        """Replace the pre-consult card of a pending request."""
        await self._write(
            update(t.admissions).where(t.admissions.c.id == admission_id).values(card=card)
        )

    async def decide_admission(
        self, admission_id: int, decision: str, by: str, reason: str | None = None
    ) -> None:
        """Record admitted / denied / bypass / abandoned for a request."""
        await self._write(
            update(t.admissions)
            .where(t.admissions.c.id == admission_id)
            .values(decision=decision, decided_at=time.time(), decided_by=by, reason=reason)
        )

    async def known_identities(self, room: str) -> set[str]:
        """Identities that were admitted to, or joined, the room (they skip the lobby again)."""
        async with self.engine.connect() as conn:
            admitted = await conn.execute(
                select(t.admissions.c.identity)
                .where(t.admissions.c.room == room)
                .where(t.admissions.c.decision == "admitted")
            )
            joined = await conn.execute(
                select(t.participant_sessions.c.identity)
                .where(t.participant_sessions.c.room == room)
                .distinct()
            )
            return {r.identity for r in admitted} | {r.identity for r in joined}

    async def recent_waits(self, room: str, limit: int = 20) -> list[float]:
        """Seconds waited by the last admitted requests of a room."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(t.admissions.c.requested_at, t.admissions.c.decided_at)
                .where(t.admissions.c.room == room)
                .where(t.admissions.c.decision == "admitted")
                .order_by(t.admissions.c.id.desc())
                .limit(limit)
            )
            return [r.decided_at - r.requested_at for r in rows]

    async def admissions(self, room: str) -> list[dict[str, Any]]:
        """Every lobby request of a room, oldest first."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(t.admissions).where(t.admissions.c.room == room).order_by(t.admissions.c.id)
            )
            return [dict(r._mapping) for r in rows]

    # token revocation ------------------------------------------------------------------------

    async def revoke_token(self, jti: str, by: str, reason: str | None = None) -> bool:
        """Revoke a join token by its `jti`; False if it was revoked already."""

        async def run(conn: AsyncConnection) -> bool:
            key = t.revoked_tokens.c.jti == jti
            if (await conn.execute(select(t.revoked_tokens.c.jti).where(key))).first():
                return False
            await conn.execute(
                insert(t.revoked_tokens).values(
                    jti=jti, revoked_at=time.time(), revoked_by=by, reason=reason
                )
            )
            return True

        return await self.write(run)

    async def is_revoked(self, jti: str) -> bool:
        """Whether a token id was revoked (as of a read that starts after this call).

        Connection storms: concurrent callers share reads. A caller waits for the next read
        to start (never one already under way, which could predate a revocation it must see),
        and that one read looks up every token id waiting for it (`WHERE jti IN (...)`).
        """
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._revocation_queries.setdefault(jti, []).append(future)
        if self._revocation_reader is None or self._revocation_reader.done():
            self._revocation_reader = asyncio.ensure_future(self._read_revocations())
        return await future

    async def _read_revocations(self) -> None:
        while self._revocation_queries:
            waiting, self._revocation_queries = self._revocation_queries, {}
            try:
                found: set[str] = set()
                ids = list(waiting)
                async with self.engine.connect() as conn:
                    for i in range(0, len(ids), 500):  # bound the statement's parameters
                        col = t.revoked_tokens.c.jti
                        rows = await conn.execute(select(col).where(col.in_(ids[i : i + 500])))
                        found.update(r.jti for r in rows)
            except BaseException as exc:
                for futures in waiting.values():
                    for f in futures:
                        if not f.done():
                            f.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
                continue
            for jti, futures in waiting.items():
                for f in futures:
                    if not f.done():
                        f.set_result(jti in found)

    # chat --------------------------------------------------------------------------------------

    async def add_chat(
        self,
        room: str,
        identity: str,
        name: str,
        role: str,
        text: str,
        reply_to: int | None,
    ) -> ChatRecord:
        """Store a chat message (committed before it is acknowledged or fanned out)."""
        now = time.time()

        async def run(conn: AsyncConnection) -> int:
            result = await conn.execute(
                insert(t.chat_messages).values(
                    room=room,
                    sender_identity=identity,
                    sender_name=name,
                    sender_role=role,
                    text=text,
                    reply_to=reply_to,
                    created_at=now,
                )
            )
            return int(result.inserted_primary_key[0])

        msg_id: int = await self.write(run)
        return ChatRecord(msg_id, room, identity, name, role, text, reply_to, now)

    async def chat_exists(self, room: str, msg_id: int) -> bool:
        """Whether message `msg_id` belongs to `room`."""
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(t.chat_messages.c.id)
                    .where(t.chat_messages.c.id == msg_id)
                    .where(t.chat_messages.c.room == room)
                )
            ).first()
            return row is not None

    async def chat_history(
        self, room: str, limit: int, before_id: int | None = None
    ) -> list[ChatRecord]:
        """The newest `limit` messages before `before_id`, oldest first."""
        stmt = select(t.chat_messages).where(t.chat_messages.c.room == room)
        if before_id is not None:
            stmt = stmt.where(t.chat_messages.c.id < before_id)
        stmt = stmt.order_by(t.chat_messages.c.id.desc()).limit(limit)
        async with self.engine.connect() as conn:
            rows = list(await conn.execute(stmt))
        return [
            ChatRecord(
                r.id,
                r.room,
                r.sender_identity,
                r.sender_name,
                r.sender_role,
                r.text,
                r.reply_to,
                r.created_at,
            )
            for r in reversed(rows)
        ]
