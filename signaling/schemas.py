"""Pydantic models of every client -> server payload (see docs/protocol.md)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    model_serializer,
    model_validator,
)

from kernel.tokens import NAME_PATTERN

#: the validation-context name of the check a QuestionnaireResponse must pass (raises
#: ValueError): clinic.questionnaire.check_response, registered by the clinic's setup
QUESTIONNAIRE_CHECK = "questionnaire_response"

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


class FhirModel(BaseModel):
    """A FHIR element: unknown fields refused, absent (None) fields left out when dumped."""

    model_config = ConfigDict(extra="forbid")

    @model_serializer(mode="wrap")
    def _drop_none(self, handler: Any) -> dict[str, Any]:
        return {k: v for k, v in handler(self).items() if v is not None and v != []}


class QuestionnaireAnswer(FhirModel):
    """One answer of a QuestionnaireResponse item (FHIR R4; one value[x])."""

    valueCoding: dict[str, str] | None = None
    valueBoolean: bool | None = None
    valueInteger: int | None = None
    valueDecimal: float | None = None
    valueString: Annotated[str, StringConstraints(max_length=500)] | None = None
    item: list[QuestionnaireItem] = Field(default_factory=list, max_length=50)


class QuestionnaireItem(FhirModel):
    """One item of a QuestionnaireResponse."""

    linkId: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    text: Annotated[str, StringConstraints(max_length=500)] | None = None
    answer: list[QuestionnaireAnswer] = Field(default_factory=list, max_length=20)
    item: list[QuestionnaireItem] = Field(default_factory=list, max_length=50)


class QuestionnaireResponseIn(FhirModel):
    """The pre-consult symptom questionnaire's answers: a FHIR R4 QuestionnaireResponse,
    checked against its Questionnaire (clinic/questionnaire.py, docs/clinic.md)."""

    resourceType: Literal["QuestionnaireResponse"]
    questionnaire: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    status: Literal["in-progress", "completed", "amended"] = "completed"
    authored: Annotated[str, StringConstraints(max_length=40)] | None = None
    language: Annotated[str, StringConstraints(max_length=10)] | None = None
    item: list[QuestionnaireItem] = Field(default_factory=list, max_length=50)

    @model_validator(mode="after")
    def _fits_questionnaire(self, info: ValidationInfo) -> QuestionnaireResponseIn:
        # the clinic registers its data-driven check (FeatureHost.add_payload_check)
        check = (info.context or {}).get(QUESTIONNAIRE_CHECK)
        if check is not None:
            check(self.model_dump())
        return self


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
    questionnaire_response: QuestionnaireResponseIn | None = None


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
    reply_to: int | None = Field(default=None, ge=1, le=2**63 - 1)  # a stored message id


class ChatHistoryIn(Inbound):
    """`chat:history`: page back through older messages."""

    before_id: int | None = Field(default=None, ge=1)
    limit: int = Field(default=50, ge=1, le=200)
