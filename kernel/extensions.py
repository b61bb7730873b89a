"""The extension protocol: what a feature package sees of the signaling framework.

Defined in the kernel so that kernel modules (identifiers, the app keys) can name these types;
``signaling/extensions.py`` re-exports them for feature packages. The concrete implementation
is ``signaling.namespace.ConsultNamespace``, which only ``signaling/`` and the composition root
(``rtc_server/``) name.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from pydantic import BaseModel

from kernel.grants import Grants, Role
from kernel.outbox import Outbox
from kernel.rooms import LobbyEntry, Room, RoomRegistry
from kernel.tokens import JoinClaims


@dataclass(frozen=True, slots=True)
class Caller:
    """The authenticated sender of an event."""

    sid: str
    room: str
    identity: str
    name: str
    role: Role
    grants: Grants


Handler = Callable[[Caller, Any], Awaitable[dict[str, Any] | None]]
Listener = Callable[..., Awaitable[None]]
JoinExtra = Callable[[Caller], Awaitable[dict[str, Any]]]
When = Literal["joined", "waiting", "present"]
AuditPolicy = Literal["each", "summary"]


def room_key(room: str) -> str:
    """Socket.IO room of a consult's joined participants."""
    return f"r:{room}"


def admitters_key(room: str) -> str:
    """Socket.IO room of a consult's participants who may admit (they see the queue)."""
    return f"a:{room}"


class FeatureHost(Protocol):
    """The signaling host a feature registers with (``ConsultNamespace`` implements it).

    Registration: ``add_handler``, ``listen``, ``add_join_extra``, ``audit_events``,
    ``add_payload_check``.
    Sending: ``emit_to_room``, ``emit_to_identity``, ``emit`` (to a sid or Socket.IO room);
    never awaited while a room lock is held (use the outbox of ``locked``).
    Membership (clinic queues, teaching rounds): ``registry``, ``locked``, ``admit_locked``,
    ``broadcast_queue``, ``max_participants``."""

    registry: RoomRegistry
    max_participants: int

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
        """Register a client event; the dispatcher checks it before ``handler`` runs."""

    def listen(self, kind: str, callback: Listener) -> None:
        """Call ``callback`` on a lifecycle or integration event."""

    def add_payload_check(self, name: str, check: Callable[[Any], Any]) -> None:
        """Give payload models a named check (pydantic validation context)."""

    def add_join_extra(self, provider: JoinExtra) -> None:
        """Merge ``await provider(caller)`` into every joined payload."""

    def audit_events(self, policy: dict[str, AuditPolicy]) -> None:
        """Audit these client events: each call, or a per-connection count ("summary")."""

    async def notify(self, kind: str, *args: Any) -> None:
        """Run the listeners of ``kind`` (features announce their integration events)."""

    async def audit(
        self, action: str, subject: str, obj: str, result: str = "ok", **detail: Any
    ) -> None:
        """Append to the audit log; never fails the caller."""

    async def emit_to_room(
        self, room: str, event: str, data: Any, skip_identity: str | None = None
    ) -> None:
        """Send to every joined participant of a room."""

    async def emit_to_identity(self, room: str, identity: str, event: str, data: Any) -> None:
        """Send to one participant (joined or waiting) of a room."""

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
        """Send to a sid (``to``) or a Socket.IO room (``room``)."""

    async def enter_room(self, sid: str, room: str, namespace: str | None = None) -> None:
        """Add a connection to a Socket.IO room (e.g. a document's subscribers)."""

    async def leave_room(self, sid: str, room: str, namespace: str | None = None) -> None:
        """Take a connection out of a Socket.IO room."""

    def caller_for(self, sid: str) -> Caller | None:
        """The caller behind a connection, if connected."""

    def claims_for(self, sid: str) -> JoinClaims | None:
        """The verified join token of a connection, if connected."""

    def set_grants(self, sid: str, grants: Grants) -> None:
        """Change a live connection's grants (teaching rounds: promote, demote)."""

    def locked(self, room: Room) -> AbstractAsyncContextManager[Outbox]:
        """Hold ``room.lock``; sends queued in the yielded outbox go out after its release."""

    async def admit_locked(
        self, room: Room, entry: LobbyEntry, by: str, out: Outbox
    ) -> Caller | None:
        """Admit a waiting entry (room lock held); returns whom to announce as joined."""

    def broadcast_queue(self, room: Room, out: Outbox, skip_sid: str | None = None) -> None:
        """Queue the lobby's queue and positions for sending (room lock held)."""
