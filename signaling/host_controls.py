"""Host controls: mute, remove, lock, end, lobby policy; and participants' own mute state."""

from __future__ import annotations

from typing import Any

from kernel.errors import ErrorCode, SignalingError
from kernel.outbox import Outbox
from kernel.rooms import Room
from signaling.extensions import Caller, room_key
from signaling.namespace import ConsultNamespace
from signaling.schemas import (
    HostEndIn,
    HostLockIn,
    HostMuteIn,
    HostRemoveIn,
    MediaMuteIn,
    RoomPolicyIn,
)


class HostControls:
    """Moderator actions (grant `moderate`), registered on a ConsultNamespace."""

    def __init__(self, ns: ConsultNamespace) -> None:
        self.ns = ns
        ns.add_handler("host:mute", HostMuteIn, self.on_mute, grant="moderate")
        ns.add_handler("host:remove", HostRemoveIn, self.on_remove, grant="moderate")
        ns.add_handler("host:lock", HostLockIn, self.on_lock, grant="moderate")
        ns.add_handler("host:end", HostEndIn, self.on_end, grant="moderate")
        ns.add_handler("room:policy", RoomPolicyIn, self.on_policy, grant="moderate")
        ns.add_handler("media:mute", MediaMuteIn, self.on_self_mute)

    async def _room(self, caller: Caller) -> Room:
        return await self.ns.registry.open(caller.room)

    async def on_mute(self, caller: Caller, msg: HostMuteIn) -> dict[str, Any]:
        room = await self._room(caller)
        async with self.ns.locked(room) as out:
            target = room.participants.get(msg.identity)
            if target is None:
                raise SignalingError(ErrorCode.NOT_FOUND, f"{msg.identity} is not in the room.")
            target.forced_mute[msg.kind] = True
            target.muted[msg.kind] = True
            out.emit("mute:request", {"kind": msg.kind, "by": caller.identity}, to=target.sid)
            out.emit("participant:updated", target.public(), room=room_key(room.name))
        await self.ns.audit(
            "host.mute", caller.identity, f"room:{room.name}/{msg.identity}", kind=msg.kind
        )
        await self.ns.notify("mute_changed", room.name, msg.identity, msg.kind, True)
        return {"muted": msg.identity, "kind": msg.kind}

    async def on_self_mute(self, caller: Caller, msg: MediaMuteIn) -> dict[str, Any]:
        room = await self._room(caller)
        async with self.ns.locked(room) as out:
            me = room.participants.get(caller.identity)
            if me is None:
                raise SignalingError(ErrorCode.NOT_JOINED, "Join the room first.")
            released = not msg.muted and me.forced_mute[msg.kind]
            me.muted[msg.kind] = msg.muted
            if not msg.muted:
                me.forced_mute[msg.kind] = False
            out.emit("participant:updated", me.public(), room=room_key(room.name))
        if released:
            await self.ns.notify("mute_changed", room.name, caller.identity, msg.kind, False)
        return {"kind": msg.kind, "muted": msg.muted}

    async def on_remove(self, caller: Caller, msg: HostRemoveIn) -> dict[str, Any]:
        if msg.identity == caller.identity:
            raise SignalingError(ErrorCode.CONFLICT, "Use leave to leave the room yourself.")
        room = await self._room(caller)
        removed: Caller | None = None
        async with self.ns.locked(room) as out:
            target = room.participants.get(msg.identity)
            entry = room.lobby.get(msg.identity)
            if target is None and entry is None:
                raise SignalingError(ErrorCode.NOT_FOUND, f"{msg.identity} is not in the room.")
            await self.ns.store.add_ban(room.name, msg.identity, caller.identity, msg.reason)
            room.bans.add(msg.identity)
            room.admitted.discard(msg.identity)
            payload = {"reason": msg.reason or "", "by": caller.identity}
            if entry is not None:
                await self.ns.deny_locked(room, entry, caller.identity, msg.reason)
                self.ns.broadcast_queue(room, out)
            if target is not None:
                removed = self.ns.caller_for(target.sid)
                await self.ns.remove_locked(room, target, "removed", out)
                self.ns.kick_later(target.sid, "removed", payload)
        await self.ns.audit(
            "host.remove", caller.identity, f"room:{room.name}/{msg.identity}", reason=msg.reason
        )
        if removed is not None:
            await self.ns.notify("participant_left", removed, "removed")
        return {"removed": msg.identity}

    async def on_lock(self, caller: Caller, msg: HostLockIn) -> dict[str, Any]:
        room = await self._room(caller)
        async with self.ns.locked(room) as out:
            room.locked = msg.locked
            await self.ns.store.update_room(room.name, locked=msg.locked)
            self._announce(room, caller, out)
        await self.ns.audit(
            "host.lock" if msg.locked else "host.unlock", caller.identity, f"room:{room.name}"
        )
        return {"locked": msg.locked}

    async def on_policy(self, caller: Caller, msg: RoomPolicyIn) -> dict[str, Any]:
        room = await self._room(caller)
        async with self.ns.locked(room) as out:
            room.lobby_policy = msg.lobby_policy
            await self.ns.store.update_room(room.name, lobby_policy=msg.lobby_policy)
            self._announce(room, caller, out)
        await self.ns.audit(
            "host.policy", caller.identity, f"room:{room.name}", lobby_policy=msg.lobby_policy
        )
        return {"lobby_policy": msg.lobby_policy}

    async def on_end(self, caller: Caller, msg: HostEndIn) -> dict[str, Any]:
        room = await self._room(caller)
        async with self.ns.locked(room) as out:
            left = await self.ns.end_room(room, caller.identity, msg.reason, out)
            self.ns.registry.rooms.pop(room.name, None)
        await self.ns.audit("host.end", caller.identity, f"room:{room.name}", reason=msg.reason)
        for who in left:
            await self.ns.notify("participant_left", who, "room_ended")
        await self.ns.notify("room_closed", room.name)
        return {"ended": True}

    def _announce(self, room: Room, caller: Caller, out: Outbox) -> None:
        out.emit(
            "room:updated",
            {"locked": room.locked, "lobby_policy": room.lobby_policy, "by": caller.identity},
            room=room_key(room.name),
        )
