"""Waiting-room events: pre-consult card, admit, deny, admit all."""

from __future__ import annotations

from typing import Any

from kernel.errors import ErrorCode, SignalingError
from signaling.extensions import Caller
from signaling.namespace import ConsultNamespace
from signaling.schemas import LobbyAdmitAllIn, LobbyCardIn, LobbyDecisionIn


class Lobby:
    """Handlers for the waiting room, registered on a ConsultNamespace."""

    def __init__(self, ns: ConsultNamespace) -> None:
        self.ns = ns
        ns.add_handler("lobby:card", LobbyCardIn, self.on_card, when="waiting")
        ns.add_handler("lobby:admit", LobbyDecisionIn, self.on_admit, grant="admit")
        ns.add_handler("lobby:deny", LobbyDecisionIn, self.on_deny, grant="admit")
        ns.add_handler("lobby:admit_all", LobbyAdmitAllIn, self.on_admit_all, grant="admit")

    async def on_card(self, caller: Caller, msg: LobbyCardIn) -> dict[str, Any]:
        room = await self.ns.registry.open(caller.room)
        async with self.ns.locked(room) as out:
            await self.ns.set_card(room, caller.identity, msg.card, out)
        return {"card": msg.card.model_dump()}

    async def on_admit(self, caller: Caller, msg: LobbyDecisionIn) -> dict[str, Any]:
        room = await self.ns.registry.open(caller.room)
        async with self.ns.locked(room) as out:
            entry = room.lobby.get(msg.identity)
            if entry is None:
                raise SignalingError(ErrorCode.NOT_FOUND, f"{msg.identity} is not waiting.")
            room.check_entry(entry.identity, entry.grants, self.ns.max_participants)
            joined = await self.ns.admit_locked(room, entry, caller.identity, out)
            self.ns.broadcast_queue(room, out)
        await self.ns.audit("admit", caller.identity, f"room:{caller.room}/{msg.identity}")
        if joined is not None:
            await self.ns.notify("participant_joined", joined)
        return {"admitted": [msg.identity]}

    async def on_deny(self, caller: Caller, msg: LobbyDecisionIn) -> dict[str, Any]:
        room = await self.ns.registry.open(caller.room)
        async with self.ns.locked(room) as out:
            entry = room.lobby.get(msg.identity)
            if entry is None:
                raise SignalingError(ErrorCode.NOT_FOUND, f"{msg.identity} is not waiting.")
            await self.ns.deny_locked(room, entry, caller.identity, msg.reason)
            self.ns.broadcast_queue(room, out)
        await self.ns.audit(
            "deny", caller.identity, f"room:{caller.room}/{msg.identity}", reason=msg.reason
        )
        return {"denied": msg.identity}

    async def on_admit_all(self, caller: Caller, _msg: LobbyAdmitAllIn) -> dict[str, Any]:
        room = await self.ns.registry.open(caller.room)
        joined: list[Caller] = []
        admitted: list[str] = []
        async with self.ns.locked(room) as out:
            for entry in room.lobby_order():
                if len(room.participants) >= self.ns.max_participants:
                    break
                who = await self.ns.admit_locked(room, entry, caller.identity, out)
                admitted.append(entry.identity)
                if who is not None:
                    joined.append(who)
            self.ns.broadcast_queue(room, out)
        for identity in admitted:
            await self.ns.audit("admit", caller.identity, f"room:{caller.room}/{identity}")
        for who in joined:
            await self.ns.notify("participant_joined", who)
        return {"admitted": admitted}
