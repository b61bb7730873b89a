"""Pre-consult questionnaires as data: FHIR R4 Questionnaires with `enableWhen` branches.

A questionnaire lives in clinic/data/<id>.json (texts in English with zh-CN in the standard
`translation` extension). `check_response` validates a QuestionnaireResponse against it: known
linkIds, answers of the item's type and options, nothing answered in a disabled branch; `answers`
flattens one into {linkId: [value, ...]} (codes, booleans, numbers, strings) for the triage rules.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

DATA = Path(__file__).with_name("data")
CANONICAL = "urn:teleconsult:questionnaire:"
MIN_EXT = "http://hl7.org/fhir/StructureDefinition/minValue"
MAX_EXT = "http://hl7.org/fhir/StructureDefinition/maxValue"
VALUE_KEYS = {
    "choice": "valueCoding",
    "boolean": "valueBoolean",
    "integer": "valueInteger",
    "decimal": "valueDecimal",
    "string": "valueString",
}


class ResponseInvalid(ValueError):
    """A QuestionnaireResponse that does not fit its Questionnaire (message names the linkId)."""


@dataclass(frozen=True, slots=True)
class Questionnaire:
    """One loaded questionnaire: the resource and its items by linkId."""

    id: str
    resource: dict[str, Any]
    items: dict[str, dict[str, Any]]

    @property
    def canonical(self) -> str:
        return str(self.resource.get("url") or CANONICAL + self.id)


def _walk(items: list[dict[str, Any]], out: dict[str, dict[str, Any]]) -> None:
    for item in items:
        out[item["linkId"]] = item
        _walk(item.get("item", []), out)


@cache
def load(qid: str) -> Questionnaire:
    """The questionnaire `qid` from clinic/data (KeyError if there is none)."""
    if not qid.replace("-", "").isalnum():
        raise KeyError(qid)
    path = DATA / f"{qid}.json"
    if not path.is_file():
        raise KeyError(qid)
    resource = json.loads(path.read_text(encoding="utf-8"))
    items: dict[str, dict[str, Any]] = {}
    _walk(resource.get("item", []), items)
    for item in items.values():
        for cond in item.get("enableWhen", []):
            if cond["question"] not in items:
                raise ValueError(f"{qid}: {item['linkId']} depends on unknown {cond['question']}")
    return Questionnaire(qid, resource, items)


def by_reference(ref: str) -> Questionnaire:
    """Resolve `Questionnaire/<id>`, `<id>` or the canonical URL."""
    for prefix in ("Questionnaire/", CANONICAL):
        if ref.startswith(prefix):
            ref = ref[len(prefix) :]
    ref = ref.split("|", 1)[0]
    return load(ref)


def _value(answer: dict[str, Any]) -> Any:
    coding = answer.get("valueCoding")
    if isinstance(coding, dict):
        return coding.get("code")
    for key in ("valueBoolean", "valueInteger", "valueDecimal", "valueString"):
        if key in answer:
            return answer[key]
    return None


def answers(response: dict[str, Any]) -> dict[str, list[Any]]:
    """{linkId: [value, ...]} of every answered item (codes for codings)."""
    out: dict[str, list[Any]] = {}

    def walk(items: list[dict[str, Any]]) -> None:
        for item in items:
            values = [_value(a) for a in item.get("answer", [])]
            if values:
                out.setdefault(item["linkId"], []).extend(v for v in values if v is not None)
            walk(item.get("item", []))
            for a in item.get("answer", []):
                walk(a.get("item", []))

    walk(response.get("item", []))
    return out


def _condition_met(cond: dict[str, Any], given: dict[str, list[Any]]) -> bool:
    values = given.get(cond["question"], [])
    op = cond["operator"]
    if op == "exists":
        return bool(values) == bool(cond.get("answerBoolean"))
    expected = next((v for k, v in cond.items() if k.startswith("answer")), None)
    if isinstance(expected, dict):
        expected = expected.get("code")
    if op == "=":
        return expected in values
    if op == "!=":
        return expected not in values
    numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    if not numbers or not isinstance(expected, int | float):
        return False
    compare = {">": float.__gt__, "<": float.__lt__, ">=": float.__ge__, "<=": float.__le__}
    return any(compare[op](float(v), float(expected)) for v in numbers)


def enabled(q: Questionnaire, link_id: str, given: dict[str, list[Any]]) -> bool:
    """Whether an item is enabled by its (and its ancestors') enableWhen, given the answers."""
    parents = _parents(q)
    node: str | None = link_id
    while node is not None:
        item = q.items[node]
        conds = item.get("enableWhen", [])
        if conds:
            met = [_condition_met(c, given) for c in conds]
            ok = all(met) if item.get("enableBehavior") == "all" else any(met)
            if not ok:
                return False
        node = parents.get(node)
    return True


@cache
def _parents_of(qid: str) -> dict[str, str]:
    out: dict[str, str] = {}

    def walk(items: list[dict[str, Any]], parent: str | None) -> None:
        for item in items:
            if parent is not None:
                out[item["linkId"]] = parent
            walk(item.get("item", []), item["linkId"])

    walk(load(qid).resource.get("item", []), None)
    return out


def _parents(q: Questionnaire) -> dict[str, str]:
    return _parents_of(q.id)


def _check_answer(item: dict[str, Any], answer: dict[str, Any]) -> None:
    link = item["linkId"]
    kind = item["type"]
    key = VALUE_KEYS.get(kind)
    value_keys = [k for k in answer if k.startswith("value")]
    if key is None or value_keys != [key]:
        raise ResponseInvalid(f"{link}: a {kind} item takes one {key or 'no'} answer")
    value = answer[key]
    if kind == "choice":
        code = value.get("code") if isinstance(value, dict) else None
        codes = {o["valueCoding"]["code"] for o in item.get("answerOption", [])}
        if code not in codes:
            raise ResponseInvalid(f"{link}: {code!r} is not one of the options")
    elif kind == "boolean" and not isinstance(value, bool):
        raise ResponseInvalid(f"{link}: expected true or false")
    elif kind in ("integer", "decimal"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ResponseInvalid(f"{link}: expected a number")
        if kind == "integer" and not isinstance(value, int):
            raise ResponseInvalid(f"{link}: expected a whole number")
        for ext in item.get("extension", []):
            bound = ext.get("valueInteger", ext.get("valueDecimal"))
            if ext["url"] == MIN_EXT and value < bound:
                raise ResponseInvalid(f"{link}: {value} is below {bound}")
            if ext["url"] == MAX_EXT and value > bound:
                raise ResponseInvalid(f"{link}: {value} is above {bound}")
    elif kind == "string" and not isinstance(value, str):
        raise ResponseInvalid(f"{link}: expected text")


def check_response(response: dict[str, Any]) -> Questionnaire:
    """Validate a QuestionnaireResponse against its questionnaire; returns the questionnaire."""
    ref = response.get("questionnaire")
    if not isinstance(ref, str):
        raise ResponseInvalid("questionnaire: missing")
    try:
        q = by_reference(ref)
    except KeyError:
        raise ResponseInvalid(f"questionnaire: unknown {ref[:80]!r}") from None
    given = answers(response)

    def walk(items: list[dict[str, Any]]) -> None:
        for entry in items:
            link = entry.get("linkId")
            item = q.items.get(link) if isinstance(link, str) else None
            if item is None:
                raise ResponseInvalid(f"{str(link)[:64]}: not a question of {q.id}")
            answered = entry.get("answer", [])
            if answered and not enabled(q, link, given):
                raise ResponseInvalid(f"{link}: answered, but its branch is not enabled")
            if len(answered) > 1 and not item.get("repeats"):
                raise ResponseInvalid(f"{link}: takes one answer")
            for answer in answered:
                _check_answer(item, answer)
            walk(entry.get("item", []))

    walk(response.get("item", []))
    return q
