"""Awareness relay for one document: validate, stamp the real identity, never persist.

A y-protocols awareness message is ``[1, var-bytes(update)]`` and an awareness update is
``varuint(n), n x (varuint client_id, varuint clock, var-string JSON state or "null")``.
The server keeps the latest state per client id, owned by the connection that first sent it;
it overwrites ``state["user"]`` with the caller's identity, name, role and colour.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pycrdt import Encoder, YMessageType, write_message

from .errors import MalformedMessage, MessageTooLarge, PermissionDenied
from .sync import read_var_bytes, read_var_uint


@dataclass(frozen=True)
class Peer:
    """Who sent an awareness update (from the verified join token, not from the payload)."""

    sid: str
    identity: str
    name: str
    role: str
    colour: str


@dataclass
class _Entry:
    clock: int
    state: dict[str, Any] | None
    owner: str  # sid


def parse_awareness_message(
    message: bytes, *, max_clients: int = 8, max_state_bytes: int = 8192
) -> list[tuple[int, int, Any]]:
    """[(client_id, clock, state or None)] of a complete awareness message."""
    msg_type, pos = read_var_uint(message, 0)
    if msg_type != YMessageType.AWARENESS:
        raise MalformedMessage(f"not an awareness message (type {msg_type})")
    update, pos = read_var_bytes(message, pos)
    if pos != len(message):
        raise MalformedMessage("trailing bytes after the awareness message")
    count, p = read_var_uint(update, 0)
    if count > max_clients:
        raise MessageTooLarge(f"awareness update for {count} clients, over {max_clients}")
    entries = []
    for _ in range(count):
        client_id, p = read_var_uint(update, p)
        clock, p = read_var_uint(update, p)
        raw, p = read_var_bytes(update, p)
        if len(raw) > max_state_bytes:
            raise MessageTooLarge(f"awareness state of {len(raw)} bytes, over {max_state_bytes}")
        try:
            state = json.loads(raw.decode("utf-8")) if raw else None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise MalformedMessage(f"awareness state is not JSON: {exc}") from exc
        if state is not None and not isinstance(state, dict):
            raise MalformedMessage("awareness state must be a JSON object or null")
        entries.append((client_id, clock, state))
    if p != len(update):
        raise MalformedMessage("trailing bytes in the awareness update")
    return entries


def encode_awareness(entries: list[tuple[int, int, dict[str, Any] | None]]) -> bytes:
    """An awareness message for the given (client_id, clock, state) entries."""
    enc = Encoder()
    enc.write_var_uint(len(entries))
    for client_id, clock, state in entries:
        enc.write_var_uint(client_id)
        enc.write_var_uint(clock)
        enc.write_var_string(json.dumps(state, separators=(",", ":")))
    return bytes([YMessageType.AWARENESS]) + write_message(enc.to_bytes())


class AwarenessRelay:
    """The current awareness states of one document, in memory only."""

    def __init__(self) -> None:
        self._entries: dict[int, _Entry] = {}

    def apply(self, message: bytes, peer: Peer) -> bytes | None:
        """Validate and stamp an update from ``peer``; the message to broadcast, if any."""
        out: list[tuple[int, int, dict[str, Any] | None]] = []
        for client_id, clock, state in parse_awareness_message(message):
            current = self._entries.get(client_id)
            if current is not None and current.owner != peer.sid:
                raise PermissionDenied("awareness client id belongs to another connection")
            if current is not None and clock <= current.clock and state is not None:
                continue  # stale
            if state is not None:
                state = dict(state)
                state["user"] = {
                    "identity": peer.identity,
                    "name": peer.name,
                    "role": peer.role,
                    "colour": peer.colour,
                }
            self._entries[client_id] = _Entry(clock, state, peer.sid)
            out.append((client_id, clock, state))
        return encode_awareness(out) if out else None

    def remove_peer(self, sid: str) -> bytes | None:
        """Forget a connection's states; the removal message to broadcast, if any."""
        gone = [(cid, e.clock + 1, None) for cid, e in self._entries.items() if e.owner == sid]
        for cid, _, _ in gone:
            del self._entries[cid]
        return encode_awareness(gone) if gone else None  # type: ignore[arg-type]

    def full_message(self) -> bytes | None:
        """All live states, for a late joiner."""
        live = [(cid, e.clock, e.state) for cid, e in self._entries.items() if e.state is not None]
        return encode_awareness(live) if live else None

    def states(self) -> dict[int, dict[str, Any]]:
        """Live states by client id."""
        return {cid: e.state for cid, e in self._entries.items() if e.state is not None}
