"""Triage as data: a risk level from the symptom-tree answers and the vitals of a card.

Rules live in clinic/data/triage.json (docs/clinic.md): each names an answer (`linkId` with
`any_of` codes/booleans or an `at_least` number) or a vital (`below` / `at_least`) and the risk
it raises to; the highest matching rule wins, "low" when none does. `offered` says which risk
levels a doctor of each level (resident / attending / chief, a duty-token claim) is offered.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from .questionnaire import answers

RULES = Path(__file__).with_name("data") / "triage.json"


@dataclass(frozen=True, slots=True)
class Triage:
    """A card's risk level, its rank (0 = lowest) and the reasons that set it (English and
    Chinese, in the same order)."""

    risk: str
    rank: int
    reasons: tuple[str, ...]
    reasons_zh: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "risk": self.risk,
            "reasons": list(self.reasons),
            "reasons_zh": list(self.reasons_zh),
        }


@cache
def rules() -> dict[str, Any]:
    """The triage rules (cached; a restart picks up edits)."""
    data = json.loads(RULES.read_text(encoding="utf-8"))
    levels = data["levels"]
    for rule in data["rules"]:
        if rule["risk"] not in levels:
            raise ValueError(f"triage rule {rule['reason']!r}: unknown risk {rule['risk']!r}")
        if not rule.get("reason_zh"):
            raise ValueError(f"triage rule {rule['reason']!r}: no Chinese reason (reason_zh)")
    for level, offered in data["offered"].items():
        if not set(offered) <= set(levels):
            raise ValueError(f"triage: {level} is offered an unknown risk level")
    return data


def doctor_levels() -> list[str]:
    return list(rules()["offered"])


def offered(level: str) -> set[str]:
    """The risk levels a doctor of `level` is offered (empty for an unknown level)."""
    return set(rules()["offered"].get(level, []))


def _matches(rule: dict[str, Any], values: list[Any]) -> bool:
    if "any_of" in rule:
        # True must not match 1 (bool is an int in Python)
        return any(v == w and type(v) is type(w) for v in values for w in rule["any_of"])
    numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    if "at_least" in rule and any(v >= rule["at_least"] for v in numbers):
        return True
    return "below" in rule and any(v < rule["below"] for v in numbers)


def assess(card: dict[str, Any] | None) -> Triage:
    """The risk of a pre-consult card (answers in `questionnaire_response`, `vitals`)."""
    data = rules()
    levels: list[str] = data["levels"]
    card = card or {}
    given = answers(card.get("questionnaire_response") or {})
    vitals = card.get("vitals") or {}
    rank = 0
    reasons: list[tuple[int, str, str]] = []
    for rule in data["rules"]:
        if "answer" in rule:
            values = given.get(rule["answer"], [])
        else:
            value = vitals.get(rule["vital"])
            values = [] if value is None else [value]
        if values and _matches(rule, values):
            level = levels.index(rule["risk"])
            reasons.append((level, rule["reason"], rule["reason_zh"]))
            rank = max(rank, level)
    ordered = sorted(reasons, key=lambda x: -x[0])
    return Triage(levels[rank], rank, tuple(r[1] for r in ordered), tuple(r[2] for r in ordered))
