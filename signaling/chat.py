"""Room chat: persisted before it is acknowledged or fanned out; history for late joiners."""

from __future__ import annotations

from typing import Any

from kernel.errors import ErrorCode, SignalingError
from signaling.extensions import Caller, room_key
from signaling.namespace import ConsultNamespace
from signaling.schemas import ChatHistoryIn, ChatSendIn


class Chat:
    """Chat handlers, registered on a ConsultNamespace."""

    def __init__(self, ns: ConsultNamespace, max_chars: int) -> None:
        self.ns = ns
        self.max_chars = max_chars
        ns.add_handler("chat:send", ChatSendIn, self.on_send)
        ns.add_handler("chat:history", ChatHistoryIn, self.on_history)

    async def on_send(self, caller: Caller, msg: ChatSendIn) -> dict[str, Any]:
        text = msg.text.strip()
        if not text:
            raise SignalingError(ErrorCode.INVALID_PAYLOAD, "text: the message is empty")
        if len(text) > self.max_chars:
            raise SignalingError(
                ErrorCode.PAYLOAD_TOO_LARGE,
                f"Chat messages are limited to {self.max_chars} characters.",
            )
        store = self.ns.store
        if msg.reply_to is not None and not await store.chat_exists(caller.room, msg.reply_to):
            raise SignalingError(ErrorCode.NOT_FOUND, f"No message {msg.reply_to} in this room.")
        record = await store.add_chat(
            caller.room, caller.identity, caller.name, caller.role.value, text, msg.reply_to
        )
        room = self.ns.registry.get(caller.room)
        if room is not None:
            room.recent_chat.append(record)
        event = record.as_event()
        await self.ns.emit("chat:message", event, room=room_key(caller.room))
        return {"message": event}

    async def on_history(self, caller: Caller, msg: ChatHistoryIn) -> dict[str, Any]:
        records = await self.ns.store.chat_history(caller.room, msg.limit, msg.before_id)
        return {"messages": [r.as_event() for r in records]}
