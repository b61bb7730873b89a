"""Membership operations of the namespace: join and leave, the waiting room, admit, deny and
remove, departures, the lobby's views and the end of a consult.

A mixin of :class:`~signaling.namespace.ConsultNamespace` (which holds the connections, the
room registry, the records and the Socket.IO plumbing these use). The ``*_locked`` methods run
with ``room.lock`` held (``async with ns.locked(room) as out``): they change the room and the
records, and queue in ``out`` what to tell whom; nothing is sent before the lock is released.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

from kernel.errors import ErrorCode, SignalingError
from kernel.outbox import Outbox
from kernel.rooms import LobbyEntry, Participant, Room
from kernel.tokens import JoinClaims
from signaling.extensions import Caller, admitters_key, room_key
from signaling.limits import TokenBucket
from signaling.schemas import JoinIn, LeaveIn, PreConsultCard

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager

    from kernel.records.store import RecordStore
    from kernel.rooms import RoomRegistry
    from kernel.routing import Router
    from signaling.extensions import JoinExtra

log = logging.getLogger("signaling.namespace")


@dataclass(slots=True)
class Connection:
    """One Socket.IO connection: its verified token and where it stands."""

    sid: str
    claims: JoinClaims
    caller: Caller
    bucket: TokenBucket
    ip: str = ""
    audit_counts: Counter[str] = field(default_factory=Counter)
    state: Literal["connected", "waiting", "joined", "left"] = "connected"
    leave_reason: str | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class RoomMembership:
    """Join, lobby, admit/deny/remove, depart and end of a room (mixed into the namespace)."""

    # what ConsultNamespace (and Socket.IO's AsyncNamespace) provide
    conns: dict[str, Connection]
    store: RecordStore
    registry: RoomRegistry
    router: Router
    max_participants: int
    join_extras: list[JoinExtra]
    _tasks: set[asyncio.Task[Any]]
    if TYPE_CHECKING:

        def locked(self, room: Room) -> AbstractAsyncContextManager[Outbox]: ...
        async def emit(self, event: str, data: Any = None, **kw: Any) -> None: ...
        async def disconnect(self, sid: str, namespace: str | None = None) -> None: ...
        async def enter_room(self, sid: str, room: str, namespace: str | None = None) -> None: ...
        async def leave_room(self, sid: str, room: str, namespace: str | None = None) -> None: ...
        async def audit(
            self, action: str, subject: str, obj: str, result: str = "ok", **detail: Any
        ) -> None: ...
        def audit_queued(
            self, action: str, subject: str, obj: str, result: str = "ok", **detail: Any
        ) -> asyncio.Future[None] | None: ...
        async def audit_committed(
            self, committed: asyncio.Future[None] | None, action: str
        ) -> None: ...
        async def _notify(self, kind: str, *args: Any) -> None: ...

    # join / leave -------------------------------------------------------------------------------

    async def _on_join(self, caller: Caller, msg: JoinIn) -> dict[str, Any]:
        conn = self.conns[caller.sid]
        if conn.state != "connected":
            raise SignalingError(ErrorCode.CONFLICT, f"Already {conn.state}.")
        room = await self.registry.open(caller.room)
        card = msg.card.model_dump() if msg.card else None
        waiting: dict[str, Any] | None = None
        async with self.locked(room) as out:
            room.check_entry(caller.identity, caller.grants, self.max_participants)
            if room.needs_lobby(caller.identity, caller.role):
                waiting = await self._enter_lobby_locked(conn, room, card, out)
            else:
                joined, participant = await self._admit_locked(conn, room, out)
                # queued with the session row: one commit for both
                audited = self.audit_queued("join", caller.identity, f"room:{room.name}", "joined")
        if waiting is not None:
            await self.audit("join", caller.identity, f"room:{caller.room}", "waiting")
            await self._notify("lobby_entered", caller)
            return waiting
        # the outbox's flush waited for the session row (and then announced the join, or
        # took the participant out again): nothing is acknowledged before it is durable
        failed = await self._session_failed(participant)
        await self.audit_committed(audited, "join")
        if failed:
            await self.audit("join", caller.identity, f"room:{caller.room}", "failed")
            raise SignalingError(ErrorCode.INTERNAL, "The server hit an error; join again.")
        joined = await self._with_join_extras(caller, joined)
        await self._notify("participant_joined", caller)
        return joined

    async def _on_leave(self, caller: Caller, _msg: LeaveIn) -> dict[str, Any]:
        conn = self.conns[caller.sid]
        if conn.state not in ("waiting", "joined"):
            raise SignalingError(ErrorCode.CONFLICT, "Not in the room.")
        was_waiting = conn.state == "waiting"
        left = await self._depart(conn, "left", abandon=was_waiting)
        conn.state = "left"
        await self.audit("leave", caller.identity, f"room:{caller.room}")
        if left is not None:
            await self._notify("participant_left", left, "left")
        return {"left": True}

    # membership operations: the caller holds room.lock (`async with ns.locked(room) as out`);
    # they change the room and the records, and queue what to tell whom in `out` ---------------

    async def _enter_lobby_locked(
        self, conn: Connection, room: Room, card: dict[str, Any] | None, out: Outbox
    ) -> dict[str, Any]:
        caller = conn.caller
        old = room.lobby.get(caller.identity)
        if old is not None and old.sid != conn.sid:
            self.kick_later(old.sid, "replaced", {"reason": "replaced"})
        record = await self.store.open_admission(
            room.name, caller.identity, caller.name, caller.role.value, card
        )
        room.lobby[caller.identity] = LobbyEntry(
            sid=conn.sid,
            identity=caller.identity,
            name=caller.name,
            role=caller.role,
            grants=caller.grants,
            admission_id=record.id,
            requested_at=record.requested_at,
            card=record.card,
        )
        conn.state = "waiting"
        self.broadcast_queue(room, out, skip_sid=conn.sid)
        return {"status": "waiting", **self._position(room, caller.identity)}

    async def _admit_locked(
        self, conn: Connection, room: Room, out: Outbox
    ) -> tuple[dict[str, Any], Participant]:
        """Make `conn` a joined participant; returns the joined payload (before the join
        extras, which `_with_join_extras` adds once the lock is released) and the participant.

        The session row is queued, not awaited: the room's other joins need not wait for its
        commit. The room hears of the join from `out` once the row is committed, and the
        caller acknowledges nothing before that (`_session_failed`)."""
        caller = conn.caller
        if conn.sid not in self.conns:
            raise SignalingError(ErrorCode.CONFLICT, "The connection has gone.")
        old = room.participants.get(caller.identity)
        if old is not None and old.sid != conn.sid:
            # the newest connection of an identity wins (a reload, a second device)
            await self._remove_participant_locked(room, old, "replaced", out)
            self.kick_later(old.sid, "replaced", {"reason": "replaced"})
        session = self.store.open_session_soon(
            room.name, caller.identity, caller.name, caller.role.value
        )
        participant = Participant(
            sid=conn.sid,
            identity=caller.identity,
            name=caller.name,
            role=caller.role,
            grants=caller.grants,
            joined_at=time.time(),
            session=session,
        )
        room.participants[caller.identity] = participant
        room.admitted.add(caller.identity)
        conn.state = "joined"
        # Socket.IO room membership is local bookkeeping (no I/O)
        await self.enter_room(conn.sid, room_key(room.name))
        if caller.grants.admit:
            await self.enter_room(conn.sid, admitters_key(room.name))
        out.later(partial(self._announce_joined, room, participant, participant.public()))
        payload: dict[str, Any] = {
            "status": "joined",
            "self": participant.public(),
            "room": room.state(),
            "chat": [m.as_event() for m in room.recent_chat],
        }
        if caller.grants.admit:
            payload["lobby"] = self._queue(room)
        return payload, participant

    async def _session_failed(self, participant: Participant) -> bool:
        """Wait until the participant's session row is committed; True if it failed."""
        try:
            await asyncio.shield(participant.session)
        except Exception:
            return True
        return False

    async def _announce_joined(
        self, room: Room, participant: Participant, public: dict[str, Any]
    ) -> None:
        """An outbox send of `_admit_locked`: once the session row is committed, tell the
        room; if it could not be written, take the participant out again (nobody was told)."""
        if not await self._session_failed(participant):
            await self.emit(
                "participant:joined", public, room=room_key(room.name), skip_sid=participant.sid
            )
            return
        log.error("could not record %s joining %s", participant.identity, room.name)
        async with self.locked(room):
            if room.participants.get(participant.identity) is participant:
                del room.participants[participant.identity]
                await self.leave_room(participant.sid, room_key(room.name))
                await self.leave_room(participant.sid, admitters_key(room.name))
                conn = self.conns.get(participant.sid)
                if conn is not None and conn.state == "joined":
                    conn.state = "connected"  # it may join again
            unloaded = self.registry.unload_if_idle(room.name)
        if unloaded:
            await self._notify("room_closed", room.name)

    async def _with_join_extras(self, caller: Caller, payload: dict[str, Any]) -> dict[str, Any]:
        """Add what feature packages and the cluster contribute (no lock held: they may ask
        other services, e.g. Redis for the peer nodes)."""
        payload = dict(payload)
        for extra in self.join_extras:
            payload.update(await extra(caller))
        peers = await self.router.peer_urls()
        if peers:
            # several nodes: where to reconnect if this node goes away (docs/protocol.md)
            payload["nodes"] = peers
        return payload

    async def admit_locked(
        self, room: Room, entry: LobbyEntry, by: str, out: Outbox
    ) -> Caller | None:
        """Admit a waiting entry (room.lock held); returns whom to announce as joined."""
        conn = self.conns.get(entry.sid)
        room.lobby.pop(entry.identity, None)
        waited = time.time() - entry.requested_at
        await self.store.decide_admission(entry.admission_id, "admitted", by)
        room.admitted.add(entry.identity)
        room.note_wait(waited)
        if conn is None:
            return None
        joined, participant = await self._admit_locked(conn, room, out)
        out.later(partial(self._tell_admitted, conn.caller, joined, by, participant))
        return conn.caller

    async def _tell_admitted(
        self, caller: Caller, joined: dict[str, Any], by: str, participant: Participant
    ) -> None:
        if await self._session_failed(participant):
            error = SignalingError(ErrorCode.INTERNAL, "The server hit an error; join again.")
            await self.emit("error", {**error.as_dict(), "event": "join"}, to=caller.sid)
            return
        full = await self._with_join_extras(caller, joined)
        await self.emit("lobby:admitted", {**full, "by": by}, to=caller.sid)

    async def deny_locked(self, room: Room, entry: LobbyEntry, by: str, reason: str | None) -> None:
        """Turn a waiting entry away (room.lock held) and close its connection."""
        room.lobby.pop(entry.identity, None)
        await self.store.decide_admission(entry.admission_id, "denied", by, reason)
        conn = self.conns.get(entry.sid)
        if conn is not None:
            conn.state = "left"
            self.kick_later(
                entry.sid, "denied", {"reason": reason or "", "by": by}, event="lobby:denied"
            )

    async def remove_locked(
        self, room: Room, participant: Participant, reason: str, out: Outbox
    ) -> None:
        """Take a joined participant out of the room (room.lock held)."""
        await self._remove_participant_locked(room, participant, reason, out)

    async def _remove_participant_locked(
        self, room: Room, participant: Participant, reason: str, out: Outbox
    ) -> None:
        if room.participants.get(participant.identity) is participant:
            del room.participants[participant.identity]
        # its open write is queued before this one (a write to our own records: allowed here)
        if not await self._session_failed(participant):
            await self.store.close_session(participant.session.result(), reason)
        await self.leave_room(participant.sid, room_key(room.name))
        await self.leave_room(participant.sid, admitters_key(room.name))
        conn = self.conns.get(participant.sid)
        if conn is not None:
            conn.state = "left"
            conn.leave_reason = reason
        out.emit(
            "participant:left",
            {"identity": participant.identity, "reason": reason},
            room=room_key(room.name),
        )

    async def _depart(self, conn: Connection, reason: str, abandon: bool = False) -> Caller | None:
        """Remove a connection from its room or lobby; returns the caller if it had joined."""
        room = self.registry.get(conn.caller.room)
        if room is None:
            return None
        left: Caller | None = None
        unloaded = False
        async with self.locked(room) as out:
            identity = conn.caller.identity
            participant = room.participants.get(identity)
            if participant is not None and participant.sid == conn.sid:
                await self._remove_participant_locked(room, participant, reason, out)
                left = conn.caller
            entry = room.lobby.get(identity)
            if entry is not None and entry.sid == conn.sid:
                del room.lobby[identity]
                if abandon:
                    await self.store.decide_admission(entry.admission_id, "left", identity)
                self.broadcast_queue(room, out)
            unloaded = self.registry.unload_if_idle(room.name)
        if unloaded:
            await self._notify("room_closed", room.name)
        return left

    def kick_later(
        self, sid: str, reason: str, data: dict[str, Any], event: str | None = None
    ) -> None:
        """Tell a connection why, then disconnect it (from a task of its own, so never under
        the caller's locks)."""
        conn = self.conns.get(sid)
        if conn is not None:
            conn.leave_reason = reason

        async def kick() -> None:
            await self.emit(event or reason, data, to=sid)
            await self.disconnect(sid)

        self.spawn(kick())

    def spawn(self, coro: Awaitable[Any]) -> None:
        """Run a background task that is kept referenced and awaited at shutdown."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # lobby views --------------------------------------------------------------------------------

    def _queue(self, room: Room) -> list[dict[str, Any]]:
        now = time.time()
        return [e.for_admitters(now) for e in room.lobby_order()]

    def _position(self, room: Room, identity: str) -> dict[str, Any]:
        order = room.lobby_order()
        position = next((i + 1 for i, e in enumerate(order) if e.identity == identity), 0)
        admitters = any(p.grants.admit for p in room.participants.values())
        return {
            "position": position,
            "waiting": len(order),
            "expected_wait_s": room.expected_wait_s(position),
            "admitters_present": admitters,
        }

    def broadcast_queue(self, room: Room, out: Outbox, skip_sid: str | None = None) -> None:
        """Queue for admitters the queue, and for every waiting participant its position
        (room.lock held: computed now, sent at `out`'s flush)."""
        out.emit("lobby:queue", {"entries": self._queue(room)}, room=admitters_key(room.name))
        for entry in room.lobby_order():
            if entry.sid != skip_sid:
                out.emit("lobby:position", self._position(room, entry.identity), to=entry.sid)

    async def set_card(self, room: Room, identity: str, card: PreConsultCard, out: Outbox) -> None:
        """Replace a waiting entry's pre-consult card and show it to admitters."""
        entry = room.lobby.get(identity)
        if entry is None:
            raise SignalingError(ErrorCode.CONFLICT, "You are not in the waiting room.")
        entry.card = card.model_dump()
        await self.store.set_card(entry.admission_id, entry.card)
        self.broadcast_queue(room, out)

    # room-wide ----------------------------------------------------------------------------------

    async def end_room(self, room: Room, by: str, reason: str | None, out: Outbox) -> list[Caller]:
        """End a consult for everyone (room.lock held); returns who had joined."""
        room.ended = True
        await self.store.update_room(room.name, ended_at=time.time(), ended_by=by)
        payload = {"by": by, "reason": reason or ""}
        left: list[Caller] = []
        for participant in list(room.participants.values()):
            conn = self.conns.get(participant.sid)
            await self._remove_participant_locked(room, participant, "room_ended", out)
            if conn is not None:
                left.append(conn.caller)
            if participant.identity == by:
                # the ender gets its ack first and closes its own connection
                out.emit("room:ended", payload, to=participant.sid)
            else:
                self.kick_later(participant.sid, "room_ended", payload, event="room:ended")
        for entry in list(room.lobby.values()):
            room.lobby.pop(entry.identity, None)
            await self.store.decide_admission(entry.admission_id, "abandoned", by, "room ended")
            self.kick_later(entry.sid, "room_ended", payload, event="room:ended")
        return left
