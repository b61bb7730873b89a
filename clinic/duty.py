"""Duty tokens: what a clinician's on-duty dashboard authenticates with.

A JWT signed with the server's secret like join tokens, but with the audience
`teleconsult:duty`, so neither kind is accepted in place of the other (PyJWT refuses a token with
an audience where none is expected). Claims: identity, name, level (resident / attending /
chief), the departments served, expiry and jti (revocable with POST /api/tokens/revoke).
"""

from __future__ import annotations

import time
import uuid

import jwt
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kernel.tokens import ALGORITHM, ISSUER, NAME_PATTERN

AUDIENCE = "teleconsult:duty"
DEPARTMENT_PATTERN = r"^[a-z0-9][a-z0-9-]{0,63}$"


class DutyInvalid(Exception):
    """A missing, expired, forged or malformed duty token."""


class DutyClaims(BaseModel):
    """The verified content of a duty token."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    identity: str = Field(pattern=NAME_PATTERN, validation_alias="sub")
    name: str = Field(min_length=1, max_length=128)
    level: str = Field(pattern=r"^[a-z]{1,32}$")
    departments: tuple[str, ...] = Field(min_length=1, max_length=32)
    exp: int
    jti: str = Field(min_length=1, max_length=64)


def mint_duty_token(
    secret: str,
    *,
    identity: str,
    name: str,
    level: str,
    departments: list[str],
    ttl_s: int = 12 * 3600,
) -> str:
    """Sign a duty token."""
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": identity,
        "name": name,
        "level": level,
        "departments": list(departments),
        "iat": now,
        "nbf": now - 5,
        "exp": now + int(ttl_s),
        "jti": uuid.uuid4().hex,
    }
    DutyClaims.model_validate(claims)
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify_duty_token(secret: str, token: str) -> DutyClaims:
    """Check signature, audience, expiry and claims."""
    if not token or len(token) > 8192:
        raise DutyInvalid("A duty token is required.")
    try:
        raw = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            audience=AUDIENCE,
            options={"require": ["exp", "sub", "jti", "aud"]},
            leeway=5,
        )
        return DutyClaims.model_validate(raw)
    except jwt.ExpiredSignatureError:
        raise DutyInvalid("The duty token has expired.") from None
    except (jwt.InvalidTokenError, ValidationError):
        raise DutyInvalid("The duty token is not valid.") from None
