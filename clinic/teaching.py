"""Teaching rounds: presenters publish, many observers watch and ask; a raised hand can be
promoted to speaker by the host (docs/clinic.md, "Teaching rounds").

Observers join with observer tokens (no publish grant) and ask in chat (`chat:send`). Events:
`teach:hand` {raised, question?} (anyone joined without the publish grant) keeps a per-room list
of raised hands, sent to admitters as `teach:hands` (and as `teach_hands` in an admitter's join
payload); `teach:promote` / `teach:demote` {identity} (grant `moderate`) give or take the
publish grant for this session: the connection's grants, the participant (`participant:updated`
to the room; shown muted once demoted) and its media session; the speaker is told with
`teach:promoted` / `teach:demoted`. Decisions are taken under the room lock and sent after it.
A speaker whose connection drops and who rejoins within `REJOIN_GRACE_S` is a speaker again
(promoted back with `by` = "rejoin"): a network blip must not cost the floor.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Protocol

from pydantic import Field

from kernel.errors import ErrorCode, SignalingError
from signaling.extensions import Caller, FeatureHost, admitters_key, room_key
from signaling.schemas import Identity, Inbound


class TeachHandIn(Inbound):
    """`teach:hand`: raise (with an optional question) or lower one's hand."""

    raised: bool = True
    question: str | None = Field(default=None, max_length=500)


class TeachSpeakerIn(Inbound):
    """`teach:promote` / `teach:demote`: make an observer a speaker, or back."""

    identity: Identity


class SpeakerMedia(Protocol):
    """What teaching needs of the media service (media.service.MediaService):
    each room's media sessions (``can_publish``) and the host-mute switch."""

    @property
    def rooms(self) -> Mapping[str, Any]: ...

    async def set_forced_mute(self, room: str, identity: str, kind: str, muted: bool) -> Any: ...


REJOIN_GRACE_S = 120.0  # a promoted speaker who left this recently is promoted again on rejoin


class TeachingRounds:
    """Raised hands per room and speaker promotion."""

    def __init__(self, ns: FeatureHost, media: SpeakerMedia | None = None) -> None:
        self.ns = ns
        self.media = media
        self.hands: dict[str, dict[str, dict[str, Any]]] = {}
        self.promoted: dict[str, set[str]] = {}
        self.left_speakers: dict[str, dict[str, float]] = {}  # room -> identity -> when it left
        ns.add_handler("teach:hand", TeachHandIn, self.on_hand)
        ns.add_handler("teach:promote", TeachSpeakerIn, self.on_promote, grant="moderate")
        ns.add_handler("teach:demote", TeachSpeakerIn, self.on_demote, grant="moderate")
        ns.listen("participant_joined", self.on_joined)
        ns.listen("participant_left", self.on_left)
        ns.listen("room_closed", self.on_closed)
        ns.add_join_extra(self.join_extra)

    def _hands(self, room: str) -> list[dict[str, Any]]:
        return sorted(self.hands.get(room, {}).values(), key=lambda h: h["at"])

    async def join_extra(self, caller: Caller) -> dict[str, Any]:
        """An admitter joining (or rejoining) gets the hands raised so far as `teach_hands`."""
        if not caller.grants.admit or not self.hands.get(caller.room):
            return {}
        return {"teach_hands": self._hands(caller.room)}

    async def on_hand(self, caller: Caller, msg: TeachHandIn) -> dict[str, Any]:
        if caller.grants.publish:
            raise SignalingError(ErrorCode.CONFLICT, "You can speak already.")
        room = await self.ns.registry.open(caller.room)
        async with room.lock:
            hands = self.hands.setdefault(caller.room, {})
            if msg.raised:
                hands[caller.identity] = {
                    "identity": caller.identity,
                    "name": caller.name,
                    "question": (msg.question or "").strip(),
                    "at": time.time(),
                }
            else:
                hands.pop(caller.identity, None)
            listed = self._hands(caller.room)
        await self.ns.emit("teach:hands", {"hands": listed}, room=admitters_key(caller.room))
        return {"raised": msg.raised, "position": len(listed) if msg.raised else 0}

    async def on_promote(self, caller: Caller, msg: TeachSpeakerIn) -> dict[str, Any]:
        return await self._set_speaker(caller.room, caller.identity, msg.identity, True)

    async def on_demote(self, caller: Caller, msg: TeachSpeakerIn) -> dict[str, Any]:
        return await self._set_speaker(caller.room, caller.identity, msg.identity, False)

    async def on_joined(self, caller: Caller) -> None:
        """A speaker back within the grace period (a dropped connection) speaks again."""
        left = self.left_speakers.get(caller.room, {}).pop(caller.identity, None)
        if left is None or time.monotonic() - left > REJOIN_GRACE_S or caller.grants.publish:
            return
        try:
            await self._set_speaker(caller.room, "rejoin", caller.identity, True)
        except SignalingError:
            pass  # gone again, or given the grant meanwhile: nothing to restore

    async def _set_speaker(
        self, room_name: str, by: str, identity: str, speak: bool
    ) -> dict[str, Any]:
        room = await self.ns.registry.open(room_name)
        async with room.lock:
            target = room.participants.get(identity)
            if target is None or self.ns.caller_for(target.sid) is None:
                raise SignalingError(ErrorCode.NOT_FOUND, f"{identity} is not in the room.")
            promoted = self.promoted.setdefault(room_name, set())
            if speak and target.grants.publish:
                raise SignalingError(ErrorCode.CONFLICT, f"{identity} can speak already.")
            if not speak and identity not in promoted:
                raise SignalingError(ErrorCode.CONFLICT, f"{identity} was not promoted.")
            grants = target.grants.model_copy(update={"publish": speak})
            target.grants = grants
            for kind in target.muted:
                # demoted: shown as muted (camera off) to the room, as a host mute is
                target.muted[kind] = target.forced_mute[kind] = not speak
            self.ns.set_grants(target.sid, grants)
            if speak:
                promoted.add(identity)
            else:
                promoted.discard(identity)
            self.hands.get(room_name, {}).pop(identity, None)
            public = target.public()
            listed = self._hands(room_name)
            sid = target.sid
        await self._media(room_name, identity, speak)
        await self.ns.emit("participant:updated", public, room=room_key(room_name))
        await self.ns.emit("teach:hands", {"hands": listed}, room=admitters_key(room_name))
        event = "teach:promoted" if speak else "teach:demoted"
        await self.ns.emit(event, {"by": by}, to=sid)
        # a restored promotion is the system's act, recorded against the speaker who rejoined
        await self.ns.audit(
            f"teach.{'promote' if speak else 'demote'}",
            identity if by == "rejoin" else by,
            f"room:{room_name}/{identity}",
            "rejoin" if by == "rejoin" else "ok",
        )
        return {"identity": identity, "publish": speak}

    async def _media(self, room: str, identity: str, speak: bool) -> None:
        """Let the media session publish (or stop forwarding what it published)."""
        media = self.media
        if media is None:
            return
        live = media.rooms.get(room)
        session = live.sessions.get(identity) if live is not None else None
        if session is None:
            return
        session.can_publish = speak
        for kind in ("audio", "video", "screen"):
            # demoted: stop forwarding; promoted again: forward again
            await media.set_forced_mute(room, identity, kind, not speak)

    async def on_left(self, caller: Caller, *_reason: Any) -> None:
        hands = self.hands.get(caller.room)
        if hands and hands.pop(caller.identity, None) is not None:
            listed = self._hands(caller.room)
            await self.ns.emit("teach:hands", {"hands": listed}, room=admitters_key(caller.room))
        promoted = self.promoted.get(caller.room, set())
        if caller.identity in promoted:
            promoted.discard(caller.identity)
            now = time.monotonic()
            left = self.left_speakers.setdefault(caller.room, {})
            for identity, at in list(left.items()):  # forget the ones past the grace period
                if now - at > REJOIN_GRACE_S:
                    del left[identity]
            left[caller.identity] = now

    async def on_closed(self, room: str) -> None:
        self.hands.pop(room, None)
        self.promoted.pop(room, None)
        self.left_speakers.pop(room, None)
