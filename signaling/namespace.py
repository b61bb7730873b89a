"""ConsultNamespace: the Socket.IO namespace every client talks to.

Connection lifecycle (token check at `connect`, `join` into the room or its waiting room,
`disconnect`), one dispatcher that validates, size-bounds and rate-limits every client event
before its handler runs, and the membership operations the lobby and host controls build on.
Handlers for features (chat, lobby, host controls, media, documents) register with
`add_handler`; see docs/protocol.md for the wire protocol.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import socketio
from pydantic import BaseModel, ValidationError

from rtc_server.metrics import Metrics
from rtc_server.records.audit import AuditLog
from rtc_server.records.store import RecordStore
from rtc_server.rooms import LobbyEntry, Participant, Room, RoomRegistry
from rtc_server.routing import LocalRouter, NodeInfo, PlacementUnavailable, Router
from signaling.errors import ErrorCode, SignalingError
from signaling.extensions import Caller
from signaling.grants import GRANT_NAMES
from signaling.limits import TokenBucket, payload_size
from signaling.schemas import JoinIn, LeaveIn, PreConsultCard
from signaling.tokens import JoinClaims, verify_token

log = logging.getLogger(__name__)

Handler = Callable[[Caller, Any], Awaitable[dict[str, Any] | None]]
Listener = Callable[..., Awaitable[None]]
When = Literal["joined", "waiting", "present"]
LISTENER_KINDS = ("participant_joined", "participant_left", "room_closed", "mute_changed")


class WrongNode(SignalingError):
    """The room lives on another node: the client reconnects at `node.url`."""

    def __init__(self, node: NodeInfo) -> None:
        super().__init__(ErrorCode.WRONG_NODE, "This consultation is served by another node.")
        self.node = node


@dataclass(slots=True)
class HandlerSpec:
    """How one client event is checked and handled."""

    model: type[BaseModel]
    handler: Handler
    grant: str | None
    max_bytes: int | None
    when: When
    cost: float = 1.0


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


def room_key(room: str) -> str:
    """Socket.IO room of a consult's joined participants."""
    return f"r:{room}"


def admitters_key(room: str) -> str:
    """Socket.IO room of a consult's participants who may admit (they see the queue)."""
    return f"a:{room}"


def remote_address(environ: dict[str, Any], trusted_proxies: frozenset[str] = frozenset()) -> str:
    """The client's IP address (from aiohttp's request; python-engineio's REMOTE_ADDR is fixed).

    Behind a reverse proxy listed in `trusted_proxies`, the last address the proxy appended to
    X-Forwarded-For is the client's; the header is ignored from anyone else (it is forgeable).
    """
    request = environ.get("aiohttp.request")
    remote = str(getattr(request, "remote", None) or environ.get("REMOTE_ADDR") or "unknown")
    if remote in trusted_proxies and request is not None:
        forwarded = request.headers.get("X-Forwarded-For", "")
        hops = [h.strip() for h in forwarded.split(",") if h.strip()]
        if hops:
            return hops[-1][:64]
    return remote


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        loc = ".".join(str(p) for p in err["loc"]) or "payload"
        parts.append(f"{loc}: {err['msg']}")
    more = len(exc.errors()) - 3
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


class ConsultNamespace(socketio.AsyncNamespace):
    """The "/" namespace: authentication, membership and event dispatch."""

    def __init__(
        self,
        *,
        secret: str,
        store: RecordStore,
        registry: RoomRegistry,
        metrics: Metrics,
        max_message_bytes: int,
        rate_per_s: float,
        rate_burst: float,
        max_participants: int,
        max_connections_per_ip: int = 1000,
        trusted_proxies: frozenset[str] = frozenset(),
        audit: AuditLog | None = None,
        router: Router | None = None,
        namespace: str = "/",
    ) -> None:
        super().__init__(namespace)
        self.secret = secret
        self.store = store
        self.registry = registry
        self.metrics = metrics
        self.max_message_bytes = max_message_bytes
        self.rate_per_s = rate_per_s
        self.rate_burst = rate_burst
        self.max_participants = max_participants
        self.max_connections_per_ip = max_connections_per_ip
        self.trusted_proxies = trusted_proxies
        self.audit_log = audit
        # where rooms live (scale-out); one node hosts every room by default
        self.router: Router = router or LocalRouter("main", "")
        self.router.on_message(self._on_node_message)
        self.per_ip: Counter[str] = Counter()
        self.audit_policy: dict[str, Literal["each", "summary"]] = {}
        self.conns: dict[str, Connection] = {}
        self.handlers: dict[str, HandlerSpec] = {}
        self.listeners: dict[str, list[Listener]] = {k: [] for k in LISTENER_KINDS}
        self.join_extras: list[Callable[[Caller], Awaitable[dict[str, Any]]]] = []
        self.closing = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self.add_handler("join", JoinIn, self._on_join, when="present")
        self.add_handler("leave", LeaveIn, self._on_leave, when="present")

    # extension API ------------------------------------------------------------------------------

    def add_handler(
        self,
        event: str,
        model: type[BaseModel],
        handler: Handler,
        grant: str | None = None,
        max_bytes: int | None = None,
        when: When = "joined",
        cost: float = 1.0,
    ) -> None:
        """Register a client event; the payload is checked before `handler(caller, msg)` runs.

        `cost` is what one event takes from the connection's rate bucket (high-rate events
        such as document sync may cost less than 1)."""
        if event in self.handlers or event in ("connect", "disconnect", "error"):
            raise ValueError(f"event {event!r} is already handled")
        if grant is not None and grant not in GRANT_NAMES:
            raise ValueError(f"unknown grant {grant!r}")
        if not 0 < cost <= 10:
            raise ValueError("cost must be in (0, 10]")
        self.handlers[event] = HandlerSpec(model, handler, grant, max_bytes, when, cost)

    def audit_events(self, policy: dict[str, Literal["each", "summary"]]) -> None:
        """Audit successful client events: "each" call, or a per-connection count at disconnect
        ("summary", for high-rate events such as document sync)."""
        self.audit_policy.update(policy)

    def listen(self, kind: str, callback: Listener) -> None:
        """Call `callback` on a lifecycle event (see LISTENER_KINDS)."""
        if kind not in self.listeners:
            raise ValueError(f"unknown listener kind {kind!r}")
        self.listeners[kind].append(callback)

    def add_join_extra(self, provider: Callable[[Caller], Awaitable[dict[str, Any]]]) -> None:
        """Merge `await provider(caller)` into every joined payload (e.g. ICE servers)."""
        self.join_extras.append(provider)

    async def emit_to_identity(self, room: str, identity: str, event: str, data: Any) -> None:
        """Send an event to one participant (joined or waiting) of a room."""
        live = self.registry.get(room)
        if live is None:
            return
        target = live.participants.get(identity) or live.lobby.get(identity)
        if target is not None:
            await self.emit(event, data, to=target.sid)

    async def emit_to_room(
        self, room: str, event: str, data: Any, skip_identity: str | None = None
    ) -> None:
        """Send an event to every joined participant of a room."""
        skip_sid = None
        live = self.registry.get(room)
        if skip_identity is not None and live is not None:
            skipped = live.participants.get(skip_identity)
            skip_sid = skipped.sid if skipped else None
        await self.emit(event, data, room=room_key(room), skip_sid=skip_sid)

    async def emit(
        self,
        event: str,
        data: Any = None,
        to: Any = None,
        room: Any = None,
        skip_sid: Any = None,
        namespace: str | None = None,
        callback: Any = None,
        ignore_queue: bool = False,
    ) -> None:
        """Emit; with several nodes (a Redis client manager) the message goes through Redis
        only when its target may be on another node: a room's connections are all on the node
        hosting it, so emits to a local sid, to a room hosted here, or to everyone on this node
        (target None: shutdown) stay local."""
        target = to if to is not None else room
        if not ignore_queue and self._local_target(target):
            ignore_queue = True
        await super().emit(
            event,
            data,
            to=target,
            skip_sid=skip_sid,
            namespace=namespace,
            callback=callback,
            ignore_queue=ignore_queue,
        )

    def _local_target(self, target: Any) -> bool:
        if target is None:
            return True
        if not isinstance(target, str):
            return False
        if target in self.conns:
            return True
        if target.startswith(("r:", "a:")):
            return self.registry.get(target[2:]) is not None
        return False

    def caller_for(self, sid: str) -> Caller | None:
        """The caller behind a Socket.IO sid, if connected."""
        conn = self.conns.get(sid)
        return conn.caller if conn else None

    # connection lifecycle -----------------------------------------------------------------------

    async def audit(
        self, action: str, subject: str, obj: str, result: str = "ok", **detail: Any
    ) -> None:
        """Append to the audit log (if the app has one); never fails the caller."""
        if self.audit_log is None:
            return
        try:
            await self.audit_log.append(action, subject, obj, result, detail)
        except Exception:
            log.exception("could not write an audit entry for %s", action)

    def audit_soon(
        self, action: str, subject: str, obj: str, result: str = "ok", **detail: Any
    ) -> None:
        """Queue an audit entry without waiting for its commit (connection churn: the entry
        takes its place in the log in the order queued; the commit follows within a batch)."""
        if self.audit_log is not None:
            self.spawn(self.audit(action, subject, obj, result, **detail))

    async def _audit_event(self, conn: Connection, event: str, msg: BaseModel) -> None:
        # the payload's identifying fields only (never free text or binary content)
        keys = ("doc_id", "exercise", "session_id", "patient_identity", "identity", "publisher")
        detail = {k: getattr(msg, k) for k in keys if isinstance(getattr(msg, k, None), str)}
        await self.audit(event, conn.caller.identity, f"room:{conn.caller.room}", **detail)

    async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        """Authenticate with the join token; refuse with a code the client can show."""
        ip = remote_address(environ, self.trusted_proxies)
        subject, room_name = "anonymous", "?"
        try:
            if self.closing:
                raise SignalingError(ErrorCode.INTERNAL, "The server is shutting down.")
            if self.per_ip[ip] >= self.max_connections_per_ip:
                raise SignalingError(
                    ErrorCode.TOO_MANY_CONNECTIONS, "Too many connections from your address."
                )
            token = auth.get("token") if isinstance(auth, dict) else None
            claims = verify_token(self.secret, token)
            subject, room_name = claims.identity, claims.room
            if await self.store.is_revoked(claims.jti):
                raise SignalingError(ErrorCode.TOKEN_REVOKED, "This join link was withdrawn.")
            await self._check_placement(claims.room)
            room = await self.registry.open(claims.room)
            room.check_entry(claims.identity, claims.grants, self.max_participants)
        except WrongNode as exc:
            # a routing hop, not a refusal: the client reconnects at `url` (not audited)
            self.metrics.refused.labels(exc.code).inc()
            raise socketio.exceptions.ConnectionRefusedError(
                exc.message, {**exc.as_dict(), "url": exc.node.url, "node": exc.node.id}
            ) from None
        except SignalingError as exc:
            self.metrics.refused.labels(exc.code).inc()
            log.info("connection refused: %s", exc.code)
            self.audit_soon("connect", subject, f"room:{room_name}", exc.code, ip=ip)
            # a room loaded only to refuse this connection is not kept (nor its placement)
            if self.registry.unload_if_idle(room_name):
                await self._notify("room_closed", room_name)
            raise socketio.exceptions.ConnectionRefusedError(exc.message, exc.as_dict()) from None
        caller = Caller(sid, claims.room, claims.identity, claims.name, claims.role, claims.grants)
        self.conns[sid] = Connection(
            sid, claims, caller, TokenBucket(self.rate_per_s, self.rate_burst), ip=ip
        )
        self.per_ip[ip] += 1
        self.metrics.connections.inc()
        self.audit_soon(
            "connect",
            claims.identity,
            f"room:{claims.room}",
            role=claims.role.value,
            ip=ip,
            jti=claims.jti,
        )

    async def on_disconnect(self, sid: str, reason: Any = None) -> None:
        """Leave whatever the connection was in; the room carries on."""
        conn = self.conns.pop(sid, None)
        if conn is None:
            return
        self.per_ip[conn.ip] -= 1
        if self.per_ip[conn.ip] <= 0:
            del self.per_ip[conn.ip]
        why = conn.leave_reason or "disconnected"
        left = await self._depart(conn, why)
        self.audit_soon("disconnect", conn.caller.identity, f"room:{conn.caller.room}", why)
        if conn.audit_counts:
            await self.audit(
                "events.summary",
                conn.caller.identity,
                f"room:{conn.caller.room}",
                counts=dict(conn.audit_counts),
            )
        if left is not None:
            await self._notify("participant_left", left, why)

    async def revoke(self, jti: str, by: str, reason: str | None) -> int:
        """Revoke a token id and disconnect its live connections (on every node); returns
        how many this node dropped."""
        await self.store.revoke_token(jti, by, reason)
        kicked = self._kick_jti(jti, by, reason)
        await self.router.broadcast("revoke", {"jti": jti, "by": by, "reason": reason})
        await self.audit("token.revoke", by, f"token:{jti}", reason=reason, kicked=kicked)
        return kicked

    def _kick_jti(self, jti: str, by: str, reason: str | None) -> int:
        kicked = 0
        for conn in list(self.conns.values()):
            if conn.claims.jti == jti:
                self.kick_later(
                    conn.sid, "token_revoked", {"reason": reason or "", "by": by}, event="removed"
                )
                kicked += 1
        return kicked

    async def _on_node_message(self, kind: str, data: dict[str, Any]) -> None:
        """A message from another node of the cluster."""
        if kind == "revoke" and isinstance(data.get("jti"), str):
            reason = data.get("reason")
            reason = reason if isinstance(reason, str) else None
            self._kick_jti(data["jti"], str(data.get("by") or "admin"), reason)

    async def _check_placement(self, room: str) -> None:
        """Raise WrongNode when `room` lives on another node (scale-out)."""
        try:
            node = await self.router.place(room)
        except PlacementUnavailable as exc:
            if self.registry.get(room) is not None:
                return  # hosted here already: carry on while the registry is unreachable
            log.warning("room placement unavailable: %s", exc)
            raise SignalingError(
                ErrorCode.NODE_UNAVAILABLE, "The service is briefly unavailable; retry shortly."
            ) from None
        if node.id != self.router.node.id:
            raise WrongNode(node)

    async def trigger_event(self, event: str, *args: Any) -> Any:
        """Route connect/disconnect to their methods and every other event to `dispatch`."""
        if event == "connect":
            return await self.on_connect(*args)
        if event == "disconnect":
            return await self.on_disconnect(*args)
        sid = args[0]
        data = args[1] if len(args) > 1 else None
        return await self.dispatch(sid, event, data)

    # dispatch -----------------------------------------------------------------------------------

    async def dispatch(self, sid: str, event: str, data: Any) -> dict[str, Any]:
        """Check one client event and run its handler; answer errors with an `error` event."""
        ref = data.get("ref") if isinstance(data, dict) else None
        ref = ref if isinstance(ref, str) and len(ref) <= 64 else None
        conn = self.conns.get(sid)
        started = time.perf_counter()
        try:
            if conn is None:
                raise SignalingError(ErrorCode.NOT_JOINED, "Not connected.")
            spec = self.handlers.get(event) if isinstance(event, str) else None
            if not conn.bucket.take(spec.cost if spec else 1.0):
                raise SignalingError(ErrorCode.RATE_LIMITED, "Too many messages; slow down.")
            if spec is None:
                raise SignalingError(ErrorCode.UNKNOWN_EVENT, f"Unknown event {str(event)[:64]!r}.")
            limit = spec.max_bytes or self.max_message_bytes
            if payload_size(data) > limit:
                raise SignalingError(
                    ErrorCode.PAYLOAD_TOO_LARGE, f"The message is larger than {limit} bytes."
                )
            self._check_state(conn, spec.when)
            if spec.grant is not None and not conn.claims.grants.has(spec.grant):
                raise SignalingError(
                    ErrorCode.PERMISSION_DENIED, f"Your role may not do this ({spec.grant})."
                )
            try:
                msg = spec.model.model_validate({} if data is None else data)
            except ValidationError as exc:
                raise SignalingError(ErrorCode.INVALID_PAYLOAD, _validation_message(exc)) from None
            async with conn.lock:
                result = await spec.handler(conn.caller, msg)
            self.metrics.events.labels(event).inc()
            policy = self.audit_policy.get(event)
            if policy == "summary":
                conn.audit_counts[event] += 1
            elif policy == "each":
                await self._audit_event(conn, event, msg)
            return {"ok": True, **(result or {})}
        except SignalingError as exc:
            return await self._reply_error(sid, event, ref, exc)
        except Exception:
            log.exception("handler for %r failed", event)
            return await self._reply_error(
                sid, event, ref, SignalingError(ErrorCode.INTERNAL, "The server hit an error.")
            )
        finally:
            self.metrics.event_seconds.observe(time.perf_counter() - started)

    def _check_state(self, conn: Connection, when: When) -> None:
        if when == "present" and conn.state in ("connected", "waiting", "joined"):
            return
        if conn.state == when:
            return
        if conn.state == "waiting":
            raise SignalingError(ErrorCode.NOT_JOINED, "You are still in the waiting room.")
        if when == "waiting":
            raise SignalingError(ErrorCode.CONFLICT, "You are not in the waiting room.")
        raise SignalingError(ErrorCode.NOT_JOINED, "Join the room first.")

    async def _reply_error(
        self, sid: str, event: str, ref: str | None, exc: SignalingError
    ) -> dict[str, Any]:
        self.metrics.errors.labels(exc.code).inc()
        payload = {**exc.as_dict(), "ref": ref, "event": str(event)[:64]}
        await self.emit("error", payload, to=sid)
        return {"ok": False, "error": payload}

    # join / leave -------------------------------------------------------------------------------

    async def _on_join(self, caller: Caller, msg: JoinIn) -> dict[str, Any]:
        conn = self.conns[caller.sid]
        if conn.state != "connected":
            raise SignalingError(ErrorCode.CONFLICT, f"Already {conn.state}.")
        room = await self.registry.open(caller.room)
        card = msg.card.model_dump() if msg.card else None
        async with room.lock:
            room.check_entry(caller.identity, caller.grants, self.max_participants)
            if room.needs_lobby(caller.identity, caller.role):
                waiting = await self._enter_lobby_locked(conn, room, card)
            else:
                waiting = None
                joined = await self._admit_locked(conn, room)
        if waiting is not None:
            await self.audit("join", caller.identity, f"room:{caller.room}", "waiting")
            return waiting
        await self.audit("join", caller.identity, f"room:{caller.room}", "joined")
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

    # membership operations (callers hold conn.lock; these take room.lock themselves) ------------

    async def _enter_lobby_locked(
        self, conn: Connection, room: Room, card: dict[str, Any] | None
    ) -> dict[str, Any]:
        caller = conn.caller
        old = room.lobby.get(caller.identity)
        if old is not None and old.sid != conn.sid:
            self.kick_later(old.sid, "replaced", {"reason": "replaced"})
        record = await self.store.request_admission(
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
        await self.broadcast_queue(room, skip_sid=conn.sid)
        return {"status": "waiting", **self._position(room, caller.identity)}

    async def _admit_locked(self, conn: Connection, room: Room) -> dict[str, Any]:
        """Make `conn` a joined participant (room.lock held); returns the joined payload."""
        caller = conn.caller
        if conn.sid not in self.conns:
            raise SignalingError(ErrorCode.CONFLICT, "The connection has gone.")
        old = room.participants.get(caller.identity)
        if old is not None and old.sid != conn.sid:
            # the newest connection of an identity wins (a reload, a second device)
            await self._remove_participant_locked(room, old, "replaced")
            self.kick_later(old.sid, "replaced", {"reason": "replaced"})
        session_id = await self.store.open_session(
            room.name, caller.identity, caller.name, caller.role.value
        )
        participant = Participant(
            sid=conn.sid,
            identity=caller.identity,
            name=caller.name,
            role=caller.role,
            grants=caller.grants,
            joined_at=time.time(),
            session_id=session_id,
        )
        room.participants[caller.identity] = participant
        room.admitted.add(caller.identity)
        conn.state = "joined"
        await self.enter_room(conn.sid, room_key(room.name))
        if caller.grants.admit:
            await self.enter_room(conn.sid, admitters_key(room.name))
        await self.emit(
            "participant:joined",
            participant.public(),
            room=room_key(room.name),
            skip_sid=conn.sid,
        )
        payload: dict[str, Any] = {
            "status": "joined",
            "self": participant.public(),
            "room": room.state(),
            "chat": [m.as_event() for m in room.recent_chat],
        }
        if caller.grants.admit:
            payload["lobby"] = self._queue(room)
        for extra in self.join_extras:
            payload.update(await extra(caller))
        peers = await self.router.peer_urls()
        if peers:
            # several nodes: where to reconnect if this node goes away (docs/protocol.md)
            payload["nodes"] = peers
        return payload

    async def admit(self, room: Room, entry: LobbyEntry, by: str) -> Caller | None:
        """Admit a waiting entry (room.lock held); returns whom to announce as joined."""
        conn = self.conns.get(entry.sid)
        room.lobby.pop(entry.identity, None)
        waited = time.time() - entry.requested_at
        await self.store.decide_admission(entry.admission_id, "admitted", by)
        room.admitted.add(entry.identity)
        room.note_wait(waited)
        if conn is None:
            return None
        joined = await self._admit_locked(conn, room)
        await self.emit("lobby:admitted", {**joined, "by": by}, to=conn.sid)
        return conn.caller

    async def deny(self, room: Room, entry: LobbyEntry, by: str, reason: str | None) -> None:
        """Turn a waiting entry away (room.lock held) and close its connection."""
        room.lobby.pop(entry.identity, None)
        await self.store.decide_admission(entry.admission_id, "denied", by, reason)
        conn = self.conns.get(entry.sid)
        if conn is not None:
            conn.state = "left"
            self.kick_later(
                entry.sid, "denied", {"reason": reason or "", "by": by}, event="lobby:denied"
            )

    async def remove_participant(self, room: Room, participant: Participant, reason: str) -> None:
        """Take a joined participant out of the room (room.lock held)."""
        await self._remove_participant_locked(room, participant, reason)

    async def _remove_participant_locked(
        self, room: Room, participant: Participant, reason: str
    ) -> None:
        if room.participants.get(participant.identity) is participant:
            del room.participants[participant.identity]
        await self.store.close_session(participant.session_id, reason)
        await self.leave_room(participant.sid, room_key(room.name))
        await self.leave_room(participant.sid, admitters_key(room.name))
        conn = self.conns.get(participant.sid)
        if conn is not None:
            conn.state = "left"
            conn.leave_reason = reason
        await self.emit(
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
        async with room.lock:
            identity = conn.caller.identity
            participant = room.participants.get(identity)
            if participant is not None and participant.sid == conn.sid:
                await self._remove_participant_locked(room, participant, reason)
                left = conn.caller
            entry = room.lobby.get(identity)
            if entry is not None and entry.sid == conn.sid:
                del room.lobby[identity]
                if abandon:
                    await self.store.decide_admission(entry.admission_id, "left", identity)
                await self.broadcast_queue(room)
            unloaded = self.registry.unload_if_idle(room.name)
        if unloaded:
            await self._notify("room_closed", room.name)
        return left

    def kick_later(
        self, sid: str, reason: str, data: dict[str, Any], event: str | None = None
    ) -> None:
        """Tell a connection why, then disconnect it (outside the caller's locks)."""
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

    async def broadcast_queue(self, room: Room, skip_sid: str | None = None) -> None:
        """Send admitters the queue and every waiting participant its position."""
        await self.emit(
            "lobby:queue", {"entries": self._queue(room)}, room=admitters_key(room.name)
        )
        for entry in room.lobby_order():
            if entry.sid != skip_sid:
                await self.emit(
                    "lobby:position", self._position(room, entry.identity), to=entry.sid
                )

    async def set_card(self, room: Room, identity: str, card: PreConsultCard) -> None:
        """Replace a waiting entry's pre-consult card and show it to admitters."""
        entry = room.lobby.get(identity)
        if entry is None:
            raise SignalingError(ErrorCode.CONFLICT, "You are not in the waiting room.")
        entry.card = card.model_dump()
        await self.store.set_card(entry.admission_id, entry.card)
        await self.broadcast_queue(room)

    # room-wide ----------------------------------------------------------------------------------

    async def end_room(self, room: Room, by: str, reason: str | None) -> list[Caller]:
        """End a consult for everyone (room.lock held); returns who had joined."""
        room.ended = True
        await self.store.update_room(room.name, ended_at=time.time(), ended_by=by)
        payload = {"by": by, "reason": reason or ""}
        left: list[Caller] = []
        for participant in list(room.participants.values()):
            conn = self.conns.get(participant.sid)
            await self._remove_participant_locked(room, participant, "room_ended")
            if conn is not None:
                left.append(conn.caller)
            if participant.identity == by:
                # the ender gets its ack first and closes its own connection
                await self.emit("room:ended", payload, to=participant.sid)
            else:
                self.kick_later(participant.sid, "room_ended", payload, event="room:ended")
        for entry in list(room.lobby.values()):
            room.lobby.pop(entry.identity, None)
            await self.store.decide_admission(entry.admission_id, "abandoned", by, "room ended")
            self.kick_later(entry.sid, "room_ended", payload, event="room:ended")
        return left

    async def notify(self, kind: str, *args: Any) -> None:
        """Run the listeners of `kind`; a failing listener is logged, never fatal."""
        await self._notify(kind, *args)

    async def _notify(self, kind: str, *args: Any) -> None:
        for callback in self.listeners[kind]:
            try:
                await callback(*args)
            except Exception:
                log.exception("%s listener failed", kind)

    async def shutdown(self, reason: str = "server shutting down") -> None:
        """Tell every client, end their sessions in the records, and disconnect them."""
        self.closing = True
        await self.emit("server:shutdown", {"reason": reason, "reconnect": True})
        for conn in list(self.conns.values()):
            conn.leave_reason = "server_shutdown"
        for sid in list(self.conns):
            await self.disconnect(sid)
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        for name in list(self.registry.rooms):
            room = self.registry.rooms[name]
            if room.ended:
                continue
            await self._notify("room_closed", name)
