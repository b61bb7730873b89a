"""Exercise specs: data in ``exercises.toml``, validated into pydantic models."""

from __future__ import annotations

import tomllib
from functools import lru_cache
from importlib import resources
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .landmarks import INDEX

Side = Literal["left", "right", "both", "auto"]
SIDES: tuple[str, str] = ("left", "right")


class UnknownExerciseError(KeyError):
    """The exercise name is not in the spec file."""

    def __str__(self) -> str:
        return f"unknown exercise {self.args[0]!r}; known: {', '.join(exercise_names())}"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Texts(_Strict):
    en: str
    zh_cn: str = Field(alias="zh-CN")


class AngleSpec(_Strict):
    """A joint angle at the middle joint of a landmark triplet."""

    name: str
    joints: tuple[str, str, str]
    space: Literal["world", "image"] = "world"
    gate: tuple[str, ...] | None = None  # landmarks whose visibility gates the angle

    @field_validator("joints", "gate")
    @classmethod
    def _known(cls, names: tuple[str, ...] | None) -> tuple[str, ...] | None:
        for n in names or ():
            if resolve(n, "left") not in INDEX:
                raise ValueError(f"unknown landmark {n!r}")
        return names

    def landmarks(self, side: str) -> tuple[str, str, str]:
        a, b, c = (resolve(j, side) for j in self.joints)
        return a, b, c

    def gate_landmarks(self, side: str) -> tuple[str, ...]:
        return tuple(resolve(j, side) for j in (self.gate or self.joints))


def resolve(name: str, side: str) -> str:
    """Side-less names get the side ("knee" -> "left_knee"); "other_" takes the opposite."""
    if name in INDEX:
        return name
    if name.startswith("other_"):
        other = "right" if side == "left" else "left"
        return f"{other}_{name[6:]}"
    return f"{side}_{name}"


class Compensation(_Strict):
    """A compensation rule: ``kind`` is one of the measures in :mod:`rehab_vision.scoring`."""

    kind: Literal["trunk_lean", "trunk_lateral", "knee_valgus", "shoulder_hike", "upper_arm_drift"]
    max: float | None = None
    min: float | None = None
    view: Literal["any", "frontal", "side"] = "any"
    cue: str

    @model_validator(mode="after")
    def _bound(self) -> Compensation:
        if (self.max is None) == (self.min is None):
            raise ValueError("give exactly one of max / min")
        return self


class Phases(_Strict):
    rest: str
    going: str
    peak: str
    returning: str


class ExerciseSpec(_Strict):
    """One exercise: what to measure, how a rep looks, what to score."""

    name: str
    title: Texts
    angle: AngleSpec
    side: Side = "auto"
    bilateral: bool = False  # both sides move together: symmetry is scored
    direction: Literal["flex", "extend"]
    auto_direction: bool = False  # rest is wherever the set starts (flexed or extended)
    rest_deg: float = Field(ge=0, le=180)
    target_deg: float = Field(ge=0, le=180)
    min_rom_deg: float = Field(gt=0, le=180)
    tempo_s: tuple[float, float] = (1.0, 8.0)
    rom_cue: str
    reversed_rom_cue: str | None = None  # the ROM cue when done from the other end
    phases: Phases
    compensation: tuple[Compensation, ...] = ()

    @model_validator(mode="after")
    def _consistent(self) -> ExerciseSpec:
        sign = -1 if self.direction == "flex" else 1
        if sign * (self.target_deg - self.rest_deg) < self.min_rom_deg:
            raise ValueError("target must lie beyond rest by at least min_rom_deg")
        if not 0 < self.tempo_s[0] < self.tempo_s[1]:
            raise ValueError("tempo_s must be (min, max) seconds")
        return self

    @property
    def sign(self) -> int:
        """+1 when the angle grows during the movement, -1 when it shrinks."""
        return -1 if self.direction == "flex" else 1

    @property
    def target_rom_deg(self) -> float:
        return abs(self.target_deg - self.rest_deg)

    def reversed(self) -> ExerciseSpec:
        """The same exercise done from the other end of the range (rest <-> target)."""
        return self.model_copy(
            update={
                "direction": "extend" if self.direction == "flex" else "flex",
                "rest_deg": self.target_deg,
                "target_deg": self.rest_deg,
                "rom_cue": self.reversed_rom_cue or self.rom_cue,
                "reversed_rom_cue": self.rom_cue,
                "phases": Phases(
                    rest=self.phases.peak,
                    going=self.phases.returning,
                    peak=self.phases.rest,
                    returning=self.phases.going,
                ),
            }
        )

    def with_target(self, target_deg: float | None) -> ExerciseSpec:
        """A copy with a clinician-set target angle (e.g. a post-operative limit)."""
        if target_deg is None:
            return self
        return self.model_copy(update={"target_deg": float(target_deg)})


@lru_cache(maxsize=1)
def load_specs() -> dict[str, ExerciseSpec]:
    """All specs from the package's ``exercises.toml``."""
    raw = tomllib.loads(resources.files(__package__).joinpath("exercises.toml").read_text("utf-8"))
    return {name: ExerciseSpec.model_validate({"name": name, **body}) for name, body in raw.items()}


def exercise_names() -> list[str]:
    return sorted(load_specs())


def get_spec(name: str) -> ExerciseSpec:
    """The spec named ``name``; raises :class:`UnknownExerciseError`."""
    specs = load_specs()
    if name not in specs:
        raise UnknownExerciseError(name)
    return specs[name]
