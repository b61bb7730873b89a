"""The HTTP side's room-membership check (documents, record files): like the Socket.IO side."""

from __future__ import annotations

from aiohttp import web

from kernel.errors import ErrorCode, SignalingError
from kernel.grants import Role
from kernel.keys import ACCESS, RECORDS, ROOMS
from kernel.tokens import JoinClaims, verify_token


async def room_member(
    app: web.Application, room: str, token: str, write: bool = False
) -> JoinClaims:
    """The claims of a bearer token whose holder may see `room`'s data now, like the
    Socket.IO side decides: signature, expiry and room; not revoked; not removed; not
    waiting for admission (admitted before, a host, or a clinician the lobby policy lets
    straight in); and past a lock. An ended consult stays readable by its members but takes
    no new content (`write`). Raise SignalingError with the reason."""
    access = app[ACCESS]
    claims = verify_token(access.secret, token)
    if claims.room != room:
        raise SignalingError(ErrorCode.TOKEN_INVALID, "The token is for another room.")
    store = app[RECORDS]
    if await store.is_revoked(claims.jti):
        raise SignalingError(ErrorCode.TOKEN_REVOKED, "This join link was withdrawn.")
    live = app[ROOMS].get(room)
    if live is not None:
        ended, locked, policy = live.ended, live.locked, live.lobby_policy
        bans, known = live.bans, live.admitted | set(live.participants)
        if claims.identity in live.lobby and claims.identity not in live.participants:
            raise SignalingError(ErrorCode.NOT_JOINED, "You are still in the waiting room.")
    else:
        record = await store.load_room(room)
        if record is None:  # no such room yet: only its host may prepare documents
            ended, locked, policy = False, False, access.lobby_policy
            bans, known = set(), set()
        else:
            ended, locked, policy = record.ended_at is not None, record.locked, record.lobby_policy
            bans, known = await store.bans(room), await store.known_identities(room)
    identity, role = claims.identity, claims.role
    if identity in bans:
        raise SignalingError(ErrorCode.REMOVED, "You were removed from this consultation.")
    if ended and write:
        raise SignalingError(ErrorCode.ROOM_ENDED, "This consultation has ended.")
    if locked and not claims.grants.moderate and identity not in known:
        raise SignalingError(ErrorCode.ROOM_LOCKED, "The consultation is locked.")
    direct = role is Role.HOST or (role is Role.CLINICIAN and policy != "everyone_waits")
    if not direct and identity not in known:
        raise SignalingError(ErrorCode.NOT_JOINED, "You have not been admitted to this room.")
    return claims
