"""Cue texts (``cues.toml``) and the rate limiter that keeps the patient from being flooded."""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Literal

Lang = Literal["en", "zh-CN"]

# Lower number = more important; unlisted keys get 50.
PRIORITY: dict[str, int] = {
    "step_into_view": 0,
    "step_back": 1,
    "keep_back_straight": 10,
    "knees_out": 10,
    "sit_upright": 12,
    "keep_trunk_upright": 12,
    "relax_shoulders": 15,
    "keep_elbow_still": 15,
    "slower": 20,
    "even_sides": 30,
}


@lru_cache(maxsize=1)
def cue_texts() -> dict[str, dict[str, str]]:
    """key -> {"en": ..., "zh-CN": ...}."""
    text = resources.files(__package__).joinpath("cues.toml").read_text("utf-8")
    return {k: dict(v) for k, v in tomllib.loads(text).items()}


def cue_text(key: str, lang: Lang = "en") -> str:
    """Text of a cue; KeyError for an unknown key."""
    return cue_texts()[key][lang]


@dataclass(frozen=True, slots=True)
class Cue:
    key: str
    en: str
    zh_cn: str

    @classmethod
    def of(cls, key: str) -> Cue:
        texts = cue_texts()[key]
        return cls(key=key, en=texts["en"], zh_cn=texts["zh-CN"])

    def as_dict(self) -> dict[str, str]:
        return {"key": self.key, "en": self.en, "zh-CN": self.zh_cn}


@dataclass(slots=True)
class CueLimiter:
    """At most one cue per ``min_interval_s``; the same cue again only after ``repeat_s``."""

    min_interval_s: float = 3.0
    repeat_s: float = 10.0
    _last_any: float = field(default=-1e9)
    _last: dict[str, float] = field(default_factory=dict)

    def pick(self, t: float, keys: Iterable[str]) -> Cue | None:
        """The most important allowed cue among ``keys`` at time ``t``, or None."""
        if t - self._last_any < self.min_interval_s:
            return None
        allowed = [k for k in keys if t - self._last.get(k, -1e9) >= self.repeat_s]
        if not allowed:
            return None
        key = min(allowed, key=lambda k: PRIORITY.get(k, 50))
        self._last_any = t
        self._last[key] = t
        return Cue.of(key)
