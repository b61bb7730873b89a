"""Pydantic models of every client -> server payload (see docs/protocol.md)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from signaling.tokens import NAME_PATTERN

Identity = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
ShortText = Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)]
Reason = Annotated[str, StringConstraints(max_length=500)]
MediaKind = Literal["audio", "video", "screen"]


class Inbound(BaseModel):
    """Base of client payloads: unknown fields are refused; `ref` is echoed in errors."""

    model_config = ConfigDict(extra="forbid")

    ref: str | None = Field(default=None, max_length=64)


class SymptomAnswer(BaseModel):
    """One structured symptom question and the patient's answer."""

    model_config = ConfigDict(extra="forbid")

    question: ShortText
    answer: Annotated[str, StringConstraints(max_length=500)] = ""


class Vitals(BaseModel):
    """Recent vital signs the patient reports (all optional, plausible ranges)."""

    model_config = ConfigDict(extra="forbid")

    systolic_bp: int | None = Field(default=None, ge=40, le=300)
    diastolic_bp: int | None = Field(default=None, ge=20, le=200)
    heart_rate: int | None = Field(default=None, ge=20, le=300)
    temperature_c: float | None = Field(default=None, ge=30, le=45)
    spo2: int | None = Field(default=None, ge=50, le=100)
    respiratory_rate: int | None = Field(default=None, ge=4, le=80)
    glucose_mmol_l: float | None = Field(default=None, ge=0.5, le=60)
    weight_kg: float | None = Field(default=None, ge=0.5, le=500)
    measured_at: str | None = Field(default=None, max_length=40)


class PreConsultCard(BaseModel):
    """What a waiting patient tells the doctor before the consult."""

    model_config = ConfigDict(extra="forbid")

    chief_complaint: Annotated[
        str, StringConstraints(min_length=1, max_length=500, strip_whitespace=True)
    ]
    symptoms: list[SymptomAnswer] = Field(default_factory=list, max_length=50)
    medications: list[ShortText] = Field(default_factory=list, max_length=50)
    allergies: list[ShortText] = Field(default_factory=list, max_length=50)
    vitals: Vitals | None = None
    notes: Annotated[str, StringConstraints(max_length=2000)] = ""


class JoinIn(Inbound):
    """`join`: enter the room (or its waiting room), optionally with a pre-consult card."""

    card: PreConsultCard | None = None


class LeaveIn(Inbound):
    """`leave`: leave the room or the waiting room."""


class LobbyCardIn(Inbound):
    """`lobby:card`: attach or replace the pre-consult card while waiting."""

    card: PreConsultCard


class LobbyDecisionIn(Inbound):
    """`lobby:admit` / `lobby:deny`: decide on one waiting participant."""

    identity: Identity
    reason: Reason | None = None


class LobbyAdmitAllIn(Inbound):
    """`lobby:admit_all`: admit everyone waiting."""


class HostMuteIn(Inbound):
    """`host:mute`: ask a participant to mute; forwarding of that media stops."""

    identity: Identity
    kind: MediaKind = "audio"


class HostRemoveIn(Inbound):
    """`host:remove`: remove a participant (or waiting entry) and keep them out."""

    identity: Identity
    reason: Reason | None = None


class HostLockIn(Inbound):
    """`host:lock`: lock or unlock the room to newcomers."""

    locked: bool


class HostEndIn(Inbound):
    """`host:end`: end the consult for everyone."""

    reason: Reason | None = None


class RoomPolicyIn(Inbound):
    """`room:policy`: who waits in the lobby."""

    lobby_policy: Literal["clinicians_direct", "everyone_waits"]


class MediaMuteIn(Inbound):
    """`media:mute`: a participant reports muting or unmuting its own media."""

    kind: MediaKind
    muted: bool


class ChatSendIn(Inbound):
    """`chat:send`: a room message, optionally replying to an earlier one."""

    text: Annotated[str, StringConstraints(min_length=1, max_length=100_000)]
    reply_to: int | None = Field(default=None, ge=1)


class ChatHistoryIn(Inbound):
    """`chat:history`: page back through older messages."""

    before_id: int | None = Field(default=None, ge=1)
    limit: int = Field(default=50, ge=1, le=200)
