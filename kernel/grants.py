"""Roles and grants: what a participant may do in a room."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict


class Role(StrEnum):
    """A participant's role in a consult."""

    HOST = "host"
    CLINICIAN = "clinician"
    PATIENT = "patient"
    GUEST = "guest"
    OBSERVER = "observer"


class Grants(BaseModel):
    """Capabilities carried in a join token."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    publish: bool = False
    subscribe: bool = True
    annotate: bool = False
    admit: bool = False
    moderate: bool = False
    record: bool = False

    def has(self, grant: str) -> bool:
        """Whether the named grant is set (unknown names are never granted)."""
        return bool(getattr(self, grant, False)) if grant in type(self).model_fields else False


DEFAULT_GRANTS: dict[Role, Grants] = {
    Role.HOST: Grants(
        publish=True, subscribe=True, annotate=True, admit=True, moderate=True, record=True
    ),
    Role.CLINICIAN: Grants(publish=True, subscribe=True, annotate=True, admit=True),
    Role.PATIENT: Grants(publish=True, subscribe=True),
    Role.GUEST: Grants(publish=True, subscribe=True),
    Role.OBSERVER: Grants(subscribe=True),
}

GRANT_NAMES: tuple[str, ...] = tuple(Grants.model_fields)
