"""ConsultNamespace: the Socket.IO namespace every client talks to.

Connection lifecycle (token check at `connect`, `join` into the room or its waiting room,
`disconnect`), one dispatcher that validates, size-bounds and rate-limits every client event
before its handler runs; the membership operations the lobby and host controls build on are
mixed in from `membership_ops.py`.
Handlers for features (chat, lobby, host controls, media, documents) register with
`add_handler`; see docs/protocol.md for the wire protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from functools import partial
from typing import Any

import socketio
from pydantic import BaseModel, ValidationError

from kernel import outbox as lockwatch
from kernel.errors import ErrorCode, SignalingError
from kernel.grants import GRANT_NAMES, Grants
from kernel.metrics import Metrics
from kernel.outbox import LockHeldError, Outbox, holds_room_lock
from kernel.records.audit import AuditLog
from kernel.records.store import RecordStore
from kernel.rooms import Room, RoomRegistry
from kernel.routing import LocalRouter, NodeInfo, PlacementUnavailable, Router
from kernel.tokens import JoinClaims, verify_token
from signaling.extensions import (
    AuditPolicy,
    Caller,
    Handler,
    JoinExtra,
    Listener,
    When,
    room_key,
)
from signaling.limits import PayloadRefused, TokenBucket, payload_size
from signaling.membership_ops import Connection, RoomMembership
from signaling.schemas import JoinIn, LeaveIn

log = logging.getLogger(__name__)

LISTENER_KINDS = ("participant_joined", "participant_left", "room_closed", "mute_changed")
# integration events (rtc_server/webhooks.py): a caller entered the lobby, a recording's files
# are closed (room, summary), a rehab session report is stored (room, report)
LISTENER_KINDS += ("lobby_entered", "recording_finished", "rehab_report")
# event names Socket.IO gives a meaning of its own: never accepted from a client
RESERVED_EVENTS = frozenset(
    {
        "connect",
        "connect_error",
        "disconnect",
        "disconnecting",
        "error",
        "newListener",
        "removeListener",
    }
)

# the outbox of the event handler running in this task (sends wait until its locks are free)
_handler_outbox: ContextVar[Outbox | None] = ContextVar("handler_outbox", default=None)


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


class ConsultNamespace(RoomMembership, socketio.AsyncNamespace):
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
        self.audit_policy: dict[str, AuditPolicy] = {}
        self.conns: dict[str, Connection] = {}
        self.handlers: dict[str, HandlerSpec] = {}
        self.listeners: dict[str, list[Listener]] = {k: [] for k in LISTENER_KINDS}
        self.join_extras: list[JoinExtra] = []
        self.payload_checks: dict[str, Callable[[Any], Any]] = {}
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
        if event in RESERVED_EVENTS:
            raise ValueError(f"event {event!r} is reserved by Socket.IO")
        if event in self.handlers:
            raise ValueError(f"event {event!r} is already handled")
        if grant is not None and grant not in GRANT_NAMES:
            raise ValueError(f"unknown grant {grant!r}")
        if not 0 < cost <= 10:
            raise ValueError("cost must be in (0, 10]")
        self.handlers[event] = HandlerSpec(model, handler, grant, max_bytes, when, cost)

    def audit_events(self, policy: dict[str, AuditPolicy]) -> None:
        """Audit successful client events: "each" call, or a per-connection count at disconnect
        ("summary", for high-rate events such as document sync)."""
        self.audit_policy.update(policy)

    def listen(self, kind: str, callback: Listener) -> None:
        """Call `callback` on a lifecycle event (see LISTENER_KINDS)."""
        if kind not in self.listeners:
            raise ValueError(f"unknown listener kind {kind!r}")
        self.listeners[kind].append(callback)

    def add_payload_check(self, name: str, check: Callable[[Any], Any]) -> None:
        """Give payload models a named check (pydantic validation context), e.g. the
        clinic's questionnaire check of the pre-consult card."""
        self.payload_checks[name] = check

    def add_join_extra(self, provider: JoinExtra) -> None:
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
        (target None: shutdown) stay local.

        Never sends from a task holding a room lock (see kernel/outbox.py); from an event
        handler, the send waits in the handler's outbox until the connection lock is free."""
        send = partial(
            self._emit_now, event, data, to, room, skip_sid, namespace, callback, ignore_queue
        )
        await self._send(send, f"emit {event!r}")

    async def disconnect(self, sid: str, namespace: str | None = None) -> None:
        """Disconnect a client (never from a task holding a room lock; see `emit`)."""
        await self._send(partial(super().disconnect, sid, namespace=namespace), "disconnect")

    async def _send(self, send: Callable[[], Awaitable[Any]], what: str) -> None:
        if holds_room_lock():
            if lockwatch.STRICT:
                raise LockHeldError(f"{what} while a room lock is held")
            # never block the lock holder on a peer: the send waits for the lock elsewhere
            log.error("%s while a room lock is held; sent from a task of its own", what)
            self.spawn(send())
            return
        out = _handler_outbox.get()
        if out is not None and out.captures():
            out.later(send)
            return
        await send()

    @contextlib.asynccontextmanager
    async def locked(self, room: Room) -> AsyncIterator[Outbox]:
        """Hold `room.lock`; sends queued in the yielded outbox go out after its release."""
        out = Outbox(self.emit)
        try:
            async with room.lock:
                yield out
        finally:
            await out.flush()

    async def _emit_now(
        self,
        event: str,
        data: Any,
        to: Any,
        room: Any,
        skip_sid: Any,
        namespace: str | None,
        callback: Any,
        ignore_queue: bool,
    ) -> None:
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

    def claims_for(self, sid: str) -> JoinClaims | None:
        """The verified join token of a connection, if connected."""
        conn = self.conns.get(sid)
        return conn.claims if conn else None

    def set_grants(self, sid: str, grants: Grants) -> None:
        """Change a live connection's grants (teaching rounds: promote, demote)."""
        conn = self.conns.get(sid)
        if conn is not None:
            conn.claims = conn.claims.model_copy(update={"grants": grants})
            conn.caller = dataclasses.replace(conn.caller, grants=grants)

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

    def audit_queued(
        self, action: str, subject: str, obj: str, result: str = "ok", **detail: Any
    ) -> asyncio.Future[None] | None:
        """Queue an audit entry now, without awaiting (allowed under a room lock: it shares
        the commit of the writes queued with it); await the future for its commit (see
        `audit_committed`). None without an audit log or if the entry could not be queued."""
        if self.audit_log is None:
            return None
        try:
            return self.audit_log.append_soon(action, subject, obj, result, detail)[1]
        except Exception:
            log.exception("could not write an audit entry for %s", action)
            return None

    async def audit_committed(self, committed: asyncio.Future[None] | None, action: str) -> None:
        """Wait for an entry queued by `audit_queued`; never fails the caller."""
        if committed is None:
            return
        try:
            await committed
        except Exception:
            log.exception("could not write an audit entry for %s", action)

    def _first_of(self, action: str, subject: str, obj: str, result: str, key: str) -> bool:
        """False for a repeat the audit log counts instead of writing (AuditLog.aggregate)."""
        return self.audit_log is None or self.audit_log.aggregate(action, subject, obj, result, key)

    def _audit_refused(self, conn: Connection, event: Any, exc: SignalingError) -> None:
        """Audit a refused client event: the first of each (event, code) per window, then a
        count (a client looping on a refused event writes one row a minute)."""
        name, obj = str(event)[:64], f"room:{conn.caller.room}"
        if self._first_of("event.refused", conn.caller.identity, obj, exc.code, name):
            self.audit_soon("event.refused", conn.caller.identity, obj, exc.code, event=name)

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
            if self._first_of("connect", subject, f"room:{room_name}", exc.code, ip):
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

    def kick_token(self, jti: str, by: str, reason: str | None) -> int:
        """Drop this node's live connections of a revoked token id; how many."""
        return self._kick_jti(jti, by, reason)

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
        """Route the server's own connect/disconnect to their methods and every client event
        (a client's "connect" or "disconnect" included: refused there) to `dispatch`."""
        if event == "connect" and self._is_server_connect(args):
            return await self.on_connect(*args)
        if event == "disconnect" and self._is_server_disconnect(args):
            return await self.on_disconnect(*args)
        sid = args[0]
        data = args[1] if len(args) > 1 else None
        return await self.dispatch(sid, event, data)

    def _is_server_connect(self, args: tuple[Any, ...]) -> bool:
        """python-socketio's own connect: the sid is still connecting and the environ is the
        server's object (a client event's payload is decoded JSON, never that object)."""
        if len(args) < 2 or self.server is None:
            return False
        sid, environ = args[0], args[1]
        return not self.server.manager.is_connected(
            sid, self.namespace
        ) and environ is self.server.get_environ(sid, self.namespace)

    def _is_server_disconnect(self, args: tuple[Any, ...]) -> bool:
        """python-socketio's own disconnect: it marks the sid as disconnecting first, while a
        client event only reaches here from a connected sid."""
        if not args or self.server is None:
            return False
        return not self.server.manager.is_connected(args[0], self.namespace)

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
            if event in RESERVED_EVENTS:
                self.audit_soon(
                    "event.reserved",
                    conn.caller.identity,
                    f"room:{conn.caller.room}",
                    ErrorCode.RESERVED_EVENT.value,
                    event=event,
                    ip=conn.ip,
                )
                raise SignalingError(
                    ErrorCode.RESERVED_EVENT, f"{event!r} is reserved; clients may not send it."
                )
            if spec is None:
                raise SignalingError(ErrorCode.UNKNOWN_EVENT, f"Unknown event {str(event)[:64]!r}.")
            limit = spec.max_bytes or self.max_message_bytes
            try:
                size = payload_size(data)
            except PayloadRefused as exc:
                raise SignalingError(ErrorCode.INVALID_PAYLOAD, str(exc)) from None
            if size > limit:
                raise SignalingError(
                    ErrorCode.PAYLOAD_TOO_LARGE, f"The message is larger than {limit} bytes."
                )
            self._check_state(conn, spec.when)
            if spec.grant is not None and not conn.claims.grants.has(spec.grant):
                raise SignalingError(
                    ErrorCode.PERMISSION_DENIED, f"Your role may not do this ({spec.grant})."
                )
            try:
                msg = spec.model.model_validate(
                    {} if data is None else data, context=self.payload_checks
                )
            except ValidationError as exc:
                raise SignalingError(ErrorCode.INVALID_PAYLOAD, _validation_message(exc)) from None
            result = await self._run_handler(conn, spec, msg)
            self.metrics.events.labels(event).inc()
            policy = self.audit_policy.get(event)
            if policy == "summary":
                conn.audit_counts[event] += 1
            elif policy == "each":
                await self._audit_event(conn, event, msg)
            return {"ok": True, **(result or {})}
        except SignalingError as exc:
            if conn is not None and exc.code is not ErrorCode.RESERVED_EVENT:  # audited above
                self._audit_refused(conn, event, exc)
            return await self._reply_error(sid, event, ref, exc)
        except Exception:
            log.exception("handler for %r failed", event)
            return await self._reply_error(
                sid, event, ref, SignalingError(ErrorCode.INTERNAL, "The server hit an error.")
            )
        finally:
            self.metrics.event_seconds.observe(time.perf_counter() - started)

    async def _run_handler(
        self, conn: Connection, spec: HandlerSpec, msg: BaseModel
    ) -> dict[str, Any] | None:
        """Run a handler under the connection's lock; its sends go out after the release."""
        out = Outbox()
        token = _handler_outbox.set(out)
        try:
            async with conn.lock:
                return await spec.handler(conn.caller, msg)
        finally:
            _handler_outbox.reset(token)
            await out.flush()

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

    async def notify(self, kind: str, *args: Any) -> None:
        """Run the listeners of `kind`; a failing listener is logged, never fatal.

        `participant_joined` is skipped for a caller no longer joined (it left, or its join
        could not be recorded and was taken back), so listeners never see a join after its
        leave."""
        if kind == "participant_joined" and not self._is_joined(args[0]):
            return
        await self._notify(kind, *args)

    def _is_joined(self, caller: Caller) -> bool:
        conn = self.conns.get(caller.sid)
        return conn is not None and conn.state == "joined"

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
