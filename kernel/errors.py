"""Typed signaling errors: every refusal a client sees carries one of these codes."""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    """Codes sent in `error` events, acks and connection refusals (see docs/protocol.md)."""

    # authentication (connection refused)
    TOKEN_MISSING = "token_missing"
    TOKEN_MALFORMED = "token_malformed"
    TOKEN_EXPIRED = "token_expired"
    TOKEN_INVALID = "token_invalid"
    TOKEN_REVOKED = "token_revoked"
    # admission to a room (connection refused or lobby outcome)
    ROOM_ENDED = "room_ended"
    ROOM_LOCKED = "room_locked"
    ROOM_FULL = "room_full"
    NODE_FULL = "node_full"
    TOO_MANY_CONNECTIONS = "too_many_connections"
    # scale-out: the room lives on another node (data.url says where); placement unreachable
    WRONG_NODE = "wrong_node"
    NODE_UNAVAILABLE = "node_unavailable"
    REMOVED = "removed"
    DENIED = "denied"
    # messages
    INVALID_PAYLOAD = "invalid_payload"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    RATE_LIMITED = "rate_limited"
    UNKNOWN_EVENT = "unknown_event"
    # a client sent an event name Socket.IO reserves (connect, disconnect, ...)
    RESERVED_EVENT = "reserved_event"
    NOT_JOINED = "not_joined"
    PERMISSION_DENIED = "permission_denied"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    INTERNAL = "internal_error"


class SignalingError(Exception):
    """A refusal with a code the client can act on and a message it can show."""

    def __init__(self, code: ErrorCode | str, message: str) -> None:
        super().__init__(message)
        self.code = str(code)
        self.message = message

    def as_dict(self) -> dict[str, str]:
        """The payload of the error (without `ref` and `event`)."""
        return {"code": self.code, "message": self.message}
