"""What feature packages see of a signaling connection."""

from __future__ import annotations

from dataclasses import dataclass

from signaling.grants import Grants, Role


@dataclass(frozen=True, slots=True)
class Caller:
    """The authenticated sender of an event."""

    sid: str
    room: str
    identity: str
    name: str
    role: Role
    grants: Grants
