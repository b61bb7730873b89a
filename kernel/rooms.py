"""The in-memory room model: Room, Participant, LobbyEntry, and the RoomRegistry.

The records store holds the durable truth; these objects hold who is connected now. A Room is
loaded from the store on first use, so a restart restores locks, bans, admissions and policy.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from kernel.errors import ErrorCode, SignalingError
from kernel.grants import Grants, Role
from kernel.outbox import RoomLock
from kernel.records.store import ChatRecord, RecordStore, RoomRecord

MEDIA_KINDS: tuple[str, ...] = ("audio", "video", "screen")


@dataclass(slots=True)
class Participant:
    """A connected, admitted participant."""

    sid: str
    identity: str
    name: str
    role: Role
    grants: Grants
    joined_at: float
    # the session row's id: queued at join, resolved once committed (the join's ack and its
    # announcement to the room wait for it; the room lock does not)
    session: asyncio.Future[int]
    muted: dict[str, bool] = field(default_factory=lambda: dict.fromkeys(MEDIA_KINDS, False))
    forced_mute: dict[str, bool] = field(default_factory=lambda: dict.fromkeys(MEDIA_KINDS, False))

    def public(self) -> dict[str, Any]:
        """What other participants see (see docs/protocol.md, ParticipantInfo)."""
        return {
            "identity": self.identity,
            "name": self.name,
            "role": self.role.value,
            "joined_at": self.joined_at,
            "muted": dict(self.muted),
            "forced_mute": dict(self.forced_mute),
            "grants": self.grants.model_dump(),
        }


@dataclass(slots=True)
class LobbyEntry:
    """A patient or guest waiting to be admitted."""

    sid: str
    identity: str
    name: str
    role: Role
    grants: Grants
    admission_id: int
    requested_at: float
    card: dict[str, Any] | None = None

    def for_admitters(self, now: float) -> dict[str, Any]:
        """What hosts and clinicians see in the queue."""
        return {
            "identity": self.identity,
            "name": self.name,
            "role": self.role.value,
            "requested_at": self.requested_at,
            "waited_s": round(max(0.0, now - self.requested_at), 1),
            "card": self.card,
        }


class Room:
    """One consult or MDT round."""

    def __init__(
        self,
        name: str,
        created_at: float,
        locked: bool,
        lobby_policy: str,
        ended: bool,
        bans: set[str],
        admitted: set[str],
        recent_waits: list[float],
        recent_chat: deque[ChatRecord],
    ) -> None:
        self.name = name
        self.created_at = created_at
        self.locked = locked
        self.lobby_policy = lobby_policy
        self.ended = ended
        self.bans = bans
        # identities admitted or joined before: they skip the lobby and pass a lock
        self.admitted = admitted
        self.recent_waits = recent_waits
        # the newest messages, as late joiners get them (the store has them all)
        self.recent_chat = recent_chat
        self.participants: dict[str, Participant] = {}
        self.lobby: dict[str, LobbyEntry] = {}
        # serialises membership changes of this room (join, admit, remove, end); never held
        # across network I/O: take it with `ConsultNamespace.locked` (kernel/outbox.py)
        self.lock = RoomLock()

    def needs_lobby(self, identity: str, role: Role) -> bool:
        """Whether this identity must wait for admission."""
        if role is Role.HOST or identity in self.admitted:
            return False
        if role is Role.CLINICIAN:
            return self.lobby_policy == "everyone_waits"
        return True

    def check_entry(self, identity: str, grants: Grants, max_participants: int) -> None:
        """Raise the reason this identity cannot come in now, if any."""
        if self.ended:
            raise SignalingError(ErrorCode.ROOM_ENDED, "This consultation has ended.")
        if identity in self.bans:
            raise SignalingError(ErrorCode.REMOVED, "You were removed from this consultation.")
        known = identity in self.admitted or identity in self.participants
        if self.locked and not grants.moderate and not known:
            raise SignalingError(
                ErrorCode.ROOM_LOCKED, "The consultation is locked; ask the doctor to unlock it."
            )
        if identity not in self.participants and len(self.participants) >= max_participants:
            raise SignalingError(ErrorCode.ROOM_FULL, "The consultation is full.")

    def lobby_order(self) -> list[LobbyEntry]:
        """Waiting entries, first come first served."""
        return sorted(self.lobby.values(), key=lambda e: (e.requested_at, e.admission_id))

    def expected_wait_s(self, position: int) -> float | None:
        """Rough wait estimate from the room's recent admissions (None until there is one)."""
        if not self.recent_waits:
            return None
        mean = sum(self.recent_waits) / len(self.recent_waits)
        return round(mean * position, 1)

    def note_wait(self, waited_s: float) -> None:
        """Remember how long an admitted entry waited (for estimates)."""
        self.recent_waits.insert(0, waited_s)
        del self.recent_waits[20:]

    def state(self) -> dict[str, Any]:
        """The room as joined participants see it."""
        return {
            "name": self.name,
            "created_at": self.created_at,
            "locked": self.locked,
            "lobby_policy": self.lobby_policy,
            "participants": [p.public() for p in self.participants.values()],
        }


class RoomRegistry:
    """Rooms hosted by this process, loaded from the records store on demand."""

    def __init__(
        self, store: RecordStore, default_policy: str, max_rooms: int, chat_on_join: int = 200
    ) -> None:
        self.store = store
        self.chat_on_join = chat_on_join
        self.default_policy = default_policy
        self.max_rooms = max_rooms
        self.rooms: dict[str, Room] = {}
        # rooms being loaded (each by one task; callers of the same room share it), and how
        # many of those are creating a new room (they count against `max_rooms`)
        self._loads: dict[str, asyncio.Future[Room]] = {}
        self._creating = 0

    def get(self, name: str) -> Room | None:
        """The live room, if loaded."""
        return self.rooms.get(name)

    async def open(self, name: str) -> Room:
        """Load or create a room; refuse a new one when the node is full.

        Rooms load concurrently (a burst of first joins to 50 rooms does not queue behind one
        another's reads and commits); concurrent callers of one room share its load."""
        room = self.rooms.get(name)
        if room is not None:
            return room
        load = self._loads.get(name)
        if load is None:
            load = asyncio.ensure_future(self._load(name))
            self._loads[name] = load
            load.add_done_callback(partial(self._loaded, name))
        return await asyncio.shield(load)

    async def _load(self, name: str) -> Room:
        creating = False
        try:
            # with room to spare, create-if-absent answers whether the room exists too
            full = self.active_count() + self._creating >= self.max_rooms
            record = await self.store.load_room(name) if full else None
            if record is None:
                if self.active_count() + self._creating >= self.max_rooms:
                    raise SignalingError(
                        ErrorCode.NODE_FULL, "This server hosts as many rooms as it may."
                    )
                self._creating, creating = self._creating + 1, True
                record, new = await self.store.create_room_if_absent(name, self.default_policy)
                if new:  # nothing refers to a room created just now: no reads to make
                    self.rooms[name] = room = self._room(record, set(), set(), [], [])
                    return room
            room = self._room(
                record,
                bans=await self.store.bans(name),
                admitted=await self.store.known_identities(name),
                recent_waits=await self.store.recent_waits(name),
                recent_chat=await self.store.chat_history(name, self.chat_on_join),
            )
            self.rooms[name] = room
            return room
        finally:
            if creating:  # counted until the room is in `rooms` (no await in between)
                self._creating -= 1

    def _room(
        self,
        record: RoomRecord,
        bans: set[str],
        admitted: set[str],
        recent_waits: list[float],
        recent_chat: list[ChatRecord],
    ) -> Room:
        return Room(
            name=record.name,
            created_at=record.created_at,
            locked=record.locked,
            lobby_policy=record.lobby_policy,
            ended=record.ended_at is not None,
            bans=bans,
            admitted=admitted,
            recent_waits=recent_waits,
            recent_chat=deque(recent_chat, maxlen=self.chat_on_join),
        )

    def _loaded(self, name: str, load: asyncio.Future[Room]) -> None:
        self._loads.pop(name, None)
        if not load.cancelled():
            load.exception()  # retrieved: every caller may have gone (each gets it raised)

    def active_count(self) -> int:
        """Rooms loaded and not ended."""
        return sum(1 for r in self.rooms.values() if not r.ended)

    def unload_if_idle(self, name: str) -> bool:
        """Forget a room nobody is in (its records stay in the store); True if unloaded."""
        room = self.rooms.get(name)
        if room is not None and not room.participants and not room.lobby:
            del self.rooms[name]
            return True
        return False

    def totals(self) -> tuple[int, int, int]:
        """(rooms, participants, waiting) across this process."""
        rooms = [r for r in self.rooms.values() if not r.ended]
        return (
            len(rooms),
            sum(len(r.participants) for r in rooms),
            sum(len(r.lobby) for r in rooms),
        )
