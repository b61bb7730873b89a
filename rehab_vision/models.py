"""Wire models of the rehab session (validated client input and what the server sends)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .landmarks import N_LANDMARKS
from .plan import RehabPlan
from .specs import exercise_names

MAX_TARGET_REPS = 100
POSE_VALUES = N_LANDMARKS * 3  # x, y, visibility per landmark


class RehabSessionStart(BaseModel):
    """``rehab:start`` from a clinician: which exercise, how many reps, which side."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    exercise: str = Field(min_length=1, max_length=64)
    target_reps: int = Field(default=10, ge=1, le=MAX_TARGET_REPS)
    sets: int = Field(default=1, ge=1, le=20)
    side: Literal["left", "right", "both", "auto"] | None = None
    target_deg: float | None = Field(default=None, ge=0, le=180)
    patient_identity: str | None = Field(default=None, min_length=1, max_length=128)
    lang: Literal["en", "zh-CN"] = "en"

    @field_validator("exercise")
    @classmethod
    def _known(cls, name: str) -> str:
        if name not in exercise_names():
            raise ValueError(f"unknown exercise; known: {', '.join(exercise_names())}")
        return name


class RehabSessionStop(BaseModel):
    """``rehab:stop``: end a running session (its report goes to the consult record)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    session_id: str = Field(min_length=1, max_length=64)


class CuePayload(BaseModel):
    key: str
    en: str
    zh_cn: str = Field(serialization_alias="zh-CN")


class RehabUpdate(BaseModel):
    """``rehab:update`` sent to the room while a session runs."""

    session_id: str
    exercise: str
    set: int  # 1-based
    rep: int  # reps counted in this set
    target_reps: int
    set_complete: bool
    phase: str  # the spec's label for rest / going / peak / returning
    angle: float | None  # smoothed joint angle, degrees
    tracked: bool  # this frame gave a usable joint angle
    # held for a while, from which landmarks are missing: "ok", "step_back" (the exercise's
    # joints are outside the picture), "not_in_view" (nobody seen)
    view: Literal["ok", "step_back", "not_in_view"] = "ok"
    score: float | None  # score of the last completed rep
    rep_detail: dict[str, object] | None = None  # the rep completed on this frame
    cue: CuePayload | None = None
    t: float  # media time of the frame, seconds
    latency_ms: float  # frame arrival -> this update
    # The 33 MediaPipe points of this frame, flat: x0, y0, v0, x1, y1, v1, ... (x, y normalised
    # to the processed frame, may fall slightly outside 0..1; v = visibility), 3 decimals;
    # None when no person is seen. frame_w / frame_h: the processed frame's size in pixels.
    landmarks: list[float] | None = Field(
        default=None, min_length=POSE_VALUES, max_length=POSE_VALUES
    )
    frame_w: int = Field(default=0, ge=0)
    frame_h: int = Field(default=0, ge=0)


PLAN_MAX_BYTES = 48 * 1024  # 30 steps with 1000-character instructions each fit
Identity = Field(default=None, min_length=1, max_length=128)


class PlanSet(BaseModel):
    """``rehab:plan_set``: a clinician prescribes ``plan`` to ``patient_identity``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    patient_identity: str = Field(min_length=1, max_length=128)
    plan: RehabPlan


class PlanQuery(BaseModel):
    """``rehab:plan_get`` / ``rehab:plan_stop``: whose plan (default: the caller's own, or for
    a clinician the room's only patient)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    patient_identity: str | None = Identity


class PlanRun(PlanQuery):
    """``rehab:plan_run``: start the guided run of the patient's active plan."""

    lang: Literal["en", "zh-CN"] = "en"


class ProgressQuery(PlanQuery):
    """``rehab:progress``: the patient's history over the last ``days`` days."""

    days: int = Field(default=90, ge=1, le=730)
