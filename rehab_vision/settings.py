"""The ``[rehab]`` section of the server settings (rtc_server/config.py)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class GuideTimers(BaseModel):
    """Timers of guided rehab runs (rehab_vision.guide.GuideSettings)."""

    model_config = ConfigDict(extra="forbid")

    countdown_s: float = Field(5.0, ge=0, le=60)  # before the first set
    tick_s: float = Field(1.0, gt=0, le=5)  # timer resolution and seconds_left announcements
    max_set_s: float = Field(300.0, gt=0, le=3600)  # a set still short of its reps is skipped
    max_runs: int = Field(8, ge=1, le=100)  # guided runs at once on this node


class RehabSettings(BaseModel):
    """Rehab vision on this node."""

    model_config = ConfigDict(extra="forbid")

    max_sessions: int = Field(2, ge=1, le=64)  # live vision sessions at once (CPU: pose models)
    guide: GuideTimers = Field(default_factory=GuideTimers)
