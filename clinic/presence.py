"""Tell waiting patients when a doctor (anyone who may admit) arrives or leaves.

The namespace sends `lobby:position` when the queue itself moves (enter, admit, deny, leave);
a host or clinician joining the room directly does not move the queue, so without this the
waiting screen kept saying "the doctor has not arrived yet". Positions are computed under the
room lock and sent after it (never network I/O while holding a room lock).
"""

from __future__ import annotations

from typing import Any

from signaling.extensions import Caller, FeatureHost


def positions(ns: FeatureHost, room_name: str) -> list[tuple[str, dict[str, Any]]]:
    """(sid, position payload) for every waiting participant of a live room (lock held)."""
    room = ns.registry.get(room_name)
    if room is None:
        return []
    order = room.lobby_order()
    admitters = any(p.grants.admit for p in room.participants.values())
    out = []
    for index, entry in enumerate(order):
        out.append(
            (
                entry.sid,
                {
                    "position": index + 1,
                    "waiting": len(order),
                    "expected_wait_s": room.expected_wait_s(index + 1),
                    "admitters_present": admitters,
                },
            )
        )
    return out


class DoctorPresence:
    """Listeners that resend positions when someone with the admit grant joins or leaves."""

    def __init__(self, ns: FeatureHost) -> None:
        self.ns = ns
        ns.listen("participant_joined", self.on_joined)
        ns.listen("participant_left", self.on_left)

    async def on_joined(self, caller: Caller) -> None:
        if caller.grants.admit:
            await self.resend(caller.room)

    async def on_left(self, caller: Caller, *_reason: Any) -> None:
        if caller.grants.admit:
            await self.resend(caller.room)

    async def resend(self, room_name: str) -> None:
        """Decide under the room lock, send after it."""
        room = self.ns.registry.get(room_name)
        if room is None:
            return
        async with room.lock:
            updates = positions(self.ns, room_name)
        for sid, payload in updates:
            await self.ns.emit("lobby:position", payload, to=sid)
