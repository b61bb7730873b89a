"""Tokens of open connections: revocations made elsewhere, and expiry.

`teleconsult revoke` runs in its own process and only writes the revocation table; another
node's HTTP revoke reaches this node through the router, but a revocation written straight
into the shared database does not. So every `interval_s` this watch reads the revocations
newer than the last it saw and drops the live connections of those token ids.

Expiry on an open socket (docs/operations.md, "Security"): a token's `exp` bounds how long a
join link lets someone *in*. A connection still waiting for admission when its token expires
is closed (`token_expired`); an admitted participant is not cut mid-consult: shortly before
its token expires the server sends it a refreshed token (`token:refresh`, same `jti`, so a
revocation still applies, and a new `exp` one `token_ttl_s` on), as LiveKit does, for its HTTP
document requests and reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from sqlalchemy import select

from kernel.records import tables as t
from kernel.tokens import JoinClaims, mint_token
from rtc_server.config import Settings, signing_secret
from rtc_server.keys import NAMESPACE, RECORDS, SETTINGS

log = logging.getLogger(__name__)

REFRESH_BEFORE_S = 300.0  # send a refreshed token this long before the old one expires


def refreshed_token(secret: str, claims: JoinClaims, ttl_s: int, now: float) -> str:
    """The same grant (room, identity, role, grants, hospital id, care team, jti), expiring
    `ttl_s` after `now`."""
    return mint_token(
        secret,
        room=claims.room,
        identity=claims.identity,
        role=claims.role,
        name=claims.name,
        grants=claims.grants,
        now=min(now, time.time()),
        mrn=claims.mrn,
        mrn_system=claims.mrn_system,
        care_team=claims.care_team,
        jti=claims.jti,
        expires_at=int(now) + ttl_s,
    )


def refresh_due(exp: float, now: float, ttl_s: float) -> bool:
    """Time to refresh: within REFRESH_BEFORE_S of expiry, or half a short TTL (a link valid
    for less than that would otherwise be refreshed on every tick)."""
    return exp - now < min(REFRESH_BEFORE_S, ttl_s / 2)


class TokenWatch:
    """Polls revocations and expiries for the connections of one namespace."""

    def __init__(self, app: web.Application, interval_s: float) -> None:
        self.app = app
        self.interval_s = interval_s
        self.since = time.time()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start polling (revocations from now on; earlier ones refuse at connect)."""
        self._task = asyncio.create_task(self._run(), name="token-watch")

    async def close(self) -> None:
        """Stop polling."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.check_revocations()
                await self.check_expiry()
            except Exception:
                log.exception("token watch failed; retrying")

    async def check_revocations(self) -> int:
        """Drop the connections of tokens revoked since the last check; how many."""
        revoked = t.revoked_tokens
        async with self.app[RECORDS].engine.connect() as conn:
            rows = list(
                await conn.execute(
                    select(
                        revoked.c.jti, revoked.c.revoked_at, revoked.c.revoked_by, revoked.c.reason
                    )
                    .where(revoked.c.revoked_at > self.since - 1.0)  # clock steps
                    .order_by(revoked.c.revoked_at)
                )
            )
        ns = self.app[NAMESPACE]
        kicked = 0
        for row in rows:
            self.since = max(self.since, row.revoked_at)
            kicked += ns.kick_token(row.jti, row.revoked_by, row.reason)
        return kicked

    async def check_expiry(self, now: float | None = None) -> None:
        """Refresh admitted connections' tokens before they expire; close the others' at
        expiry."""
        now = time.time() if now is None else now
        settings: Settings = self.app[SETTINGS]
        ns = self.app[NAMESPACE]
        secret = signing_secret(settings)
        sends: list[tuple[str, dict[str, Any]]] = []
        ttl = settings.token_ttl_s
        for conn in list(ns.conns.values()):
            exp = conn.claims.exp
            if conn.state == "joined" and refresh_due(exp, now, ttl):
                token = refreshed_token(secret, conn.claims, ttl, now)
                conn.claims = conn.claims.model_copy(update={"exp": int(now) + ttl})
                sends.append((conn.sid, {"token": token, "expires_at": conn.claims.exp}))
            elif conn.state != "joined" and exp <= now and conn.leave_reason != "token_expired":
                ns.kick_later(
                    conn.sid,
                    "token_expired",
                    {"reason": "the join link has expired", "by": "server"},
                    event="removed",
                )
        for sid, payload in sends:
            await ns.emit("token:refresh", payload, to=sid)


TOKEN_WATCH = web.AppKey("token_watch", TokenWatch)


async def token_watch_ctx(app: web.Application) -> AsyncIterator[None]:
    """aiohttp cleanup context: run the watch while the app runs."""
    watch = TokenWatch(app, app[SETTINGS].token_watch_interval_s)
    app[TOKEN_WATCH] = watch
    await watch.start()
    yield
    await watch.close()
