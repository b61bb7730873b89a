"""Who may call the clinic's HTTP routes: the admin API key (kernel/http.py), or a clinician's
duty token."""

from __future__ import annotations

from aiohttp import web

from kernel.access import bearer_of
from kernel.http import error
from kernel.keys import ACCESS, RECORDS

from .duty import DutyClaims, DutyInvalid, verify_duty_token


async def duty_or_refusal(request: web.Request) -> DutyClaims | web.Response:
    """The verified, unrevoked duty token of the request, or the 401 to send."""
    secret = request.app[ACCESS].secret
    try:
        claims = verify_duty_token(secret, bearer_of(request))
    except DutyInvalid as exc:
        return error(401, "unauthorized", str(exc))
    if await request.app[RECORDS].is_revoked(claims.jti):
        return error(401, "unauthorized", "The duty token was revoked.")
    return claims
