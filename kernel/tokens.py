"""Join tokens: JWTs whose claims carry room, identity, name, role and grants."""

from __future__ import annotations

import time
import uuid
from typing import Annotated

import jwt
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kernel.errors import ErrorCode, SignalingError
from kernel.grants import DEFAULT_GRANTS, Grants, Role

ISSUER = "teleconsult"
ALGORITHM = "HS256"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.@:-]{0,127}$"
# the hospital's identifier of the person (MRN of a patient, staff number of a clinician)
MRN_PATTERN = r"^[^\s\x00-\x1f](?:[^\x00-\x1f]{0,62}[^\s\x00-\x1f])?$"
SYSTEM_PATTERN = r"^(urn:|https?://)[!-~]{1,250}$"  # a FHIR Identifier.system URI
DEFAULT_MRN_SYSTEM = "urn:teleconsult:mrn"
#: patients a clinician may reach (rehab plans) outside the room they act through
CareTeam = Annotated[tuple[Annotated[str, Field(pattern=NAME_PATTERN)], ...], Field(max_length=200)]


class JoinClaims(BaseModel):
    """The verified content of a join token."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    room: str = Field(pattern=NAME_PATTERN)
    identity: str = Field(pattern=NAME_PATTERN, validation_alias="sub")
    name: str = Field(min_length=1, max_length=128)
    role: Role
    grants: Grants
    exp: int
    jti: str = Field(min_length=1, max_length=64)
    mrn: str | None = Field(default=None, pattern=MRN_PATTERN)
    mrn_system: str | None = Field(default=None, pattern=SYSTEM_PATTERN)
    # an explicit care-team grant from the hospital system (optional claim)
    care_team: CareTeam = ()


def mint_token(
    secret: str,
    *,
    room: str,
    identity: str,
    role: Role | str,
    name: str | None = None,
    ttl_s: int = 3600,
    grants: Grants | None = None,
    now: float | None = None,
    mrn: str | None = None,
    mrn_system: str | None = None,
    care_team: list[str] | tuple[str, ...] | None = None,
    jti: str | None = None,
    expires_at: int | None = None,
) -> str:
    """Sign a join token; grants default to the role's defaults.

    ``jti`` and ``expires_at`` (default: new, ``now + ttl_s``) let a refresh keep the grant's
    id and set its end.

    ``mrn`` (with its ``mrn_system``, default ``urn:teleconsult:mrn``) is the hospital's own
    identifier of the person: the consult record's Patient/Practitioner carry it.
    """
    role = Role(role)
    issued = int(now if now is not None else time.time())
    claims = {
        "iss": ISSUER,
        "sub": identity,
        "room": room,
        "name": name or identity,
        "role": role.value,
        "grants": (grants or DEFAULT_GRANTS[role]).model_dump(),
        "iat": issued,
        "nbf": issued - 5,
        "exp": expires_at if expires_at is not None else issued + int(ttl_s),
        "jti": jti or uuid.uuid4().hex,
    }
    if mrn:
        claims["mrn"] = mrn
        claims["mrn_system"] = mrn_system or DEFAULT_MRN_SYSTEM
    elif mrn_system:
        raise ValueError("mrn_system given without an mrn")
    if care_team:
        claims["care_team"] = list(care_team)
    # validate what we sign with the same rules we verify with
    JoinClaims.model_validate(claims)
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify_token(secret: str, token: object) -> JoinClaims:
    """Check signature, expiry and claims; raise SignalingError with a showable reason."""
    if not token:
        raise SignalingError(ErrorCode.TOKEN_MISSING, "No join token was given.")
    if not isinstance(token, str) or len(token) > 8192:
        raise SignalingError(ErrorCode.TOKEN_MALFORMED, "The join token is not a valid token.")
    try:
        raw = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            options={"require": ["exp", "sub", "jti", "iss"]},
            leeway=5,
        )
    except jwt.ExpiredSignatureError as exc:
        raise SignalingError(
            ErrorCode.TOKEN_EXPIRED, "The join link has expired; ask for a new one."
        ) from exc
    except jwt.InvalidSignatureError as exc:
        raise SignalingError(
            ErrorCode.TOKEN_INVALID, "The join link was not issued by this server."
        ) from exc
    except jwt.DecodeError as exc:
        raise SignalingError(
            ErrorCode.TOKEN_MALFORMED, "The join token is not a valid token."
        ) from exc
    except jwt.InvalidTokenError as exc:
        raise SignalingError(
            ErrorCode.TOKEN_INVALID, f"The join token is not valid: {exc}."
        ) from exc
    try:
        return JoinClaims.model_validate(raw)
    except ValidationError as exc:
        raise SignalingError(
            ErrorCode.TOKEN_INVALID, "The join token's claims are incomplete or invalid."
        ) from exc
