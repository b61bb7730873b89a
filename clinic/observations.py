"""FHIR R4 Observations from home devices: parsed into readings, or refused with a reason.

An Observation needs an `id` (repeats are recognised by it), a LOINC `code` this server knows
(clinic/data/thresholds.json), and a `valueQuantity` in the code's UCUM unit and plausible range;
a blood-pressure panel (85354-9) carries systolic 8480-6 and diastolic 8462-4 as `component`s.
A Bundle (batch, transaction or collection) is taken whole or not at all.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
THRESHOLDS = Path(__file__).with_name("data") / "thresholds.json"
MAX_ENTRIES = 100
ID_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-.")


class ObservationRefused(ValueError):
    """A reading the server will not take: HTTP status, error code and a message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass(frozen=True, slots=True)
class Reading:
    """One measured value of one Observation (a panel gives one per component)."""

    observation_id: str
    code: str
    value: float
    unit: str
    effective: str | None


@cache
def catalogue() -> dict[str, Any]:
    """Known codes with unit, range and default thresholds."""
    return json.loads(THRESHOLDS.read_text(encoding="utf-8"))


def _loinc(codeable: Any, where: str) -> str:
    codings = codeable.get("coding") if isinstance(codeable, dict) else None
    if not isinstance(codings, list) or not codings:
        raise ObservationRefused(400, "invalid_observation", f"{where}.coding is missing")
    known = catalogue()["codes"]
    panels = catalogue()["panels"]
    seen = []
    for coding in codings:
        if isinstance(coding, dict) and coding.get("system") == LOINC:
            code = str(coding.get("code", ""))[:32]
            if code in known or code in panels:
                return code
            seen.append(code)
    shown = ", ".join(seen) or "no LOINC coding"
    raise ObservationRefused(
        422,
        "unknown_code",
        f"{where}: {shown} is not a code this server accepts ({', '.join(known)})",
    )


def _quantity(code: str, quantity: Any, where: str) -> tuple[float, str]:
    spec = catalogue()["codes"][code]
    if not isinstance(quantity, dict) or "value" not in quantity:
        raise ObservationRefused(400, "invalid_observation", f"{where}.valueQuantity is missing")
    value = quantity["value"]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ObservationRefused(
            400, "invalid_observation", f"{where}.valueQuantity.value is not a number"
        )
    unit = quantity.get("code")
    if quantity.get("system") != UCUM or unit != spec["unit"]:
        given = f"{quantity.get('system')}|{unit}" if unit else "no UCUM code"
        raise ObservationRefused(
            422, "wrong_unit", f"{where}: {code} is measured in UCUM {spec['unit']!r}, not {given}"
        )
    low, high = spec["range"]
    if not low <= value <= high:
        raise ObservationRefused(
            422, "absurd_value", f"{where}: {value} {unit} is outside {low}-{high} for {code}"
        )
    return float(value), unit


def parse_observation(resource: Any, where: str = "Observation") -> list[Reading]:
    """Readings of one Observation resource."""
    if not isinstance(resource, dict) or resource.get("resourceType") != "Observation":
        raise ObservationRefused(400, "invalid_observation", f"{where} is not an Observation")
    oid = resource.get("id")
    if not isinstance(oid, str) or not 1 <= len(oid) <= 64 or not set(oid) <= ID_CHARS:
        raise ObservationRefused(
            400, "invalid_observation", f"{where}.id is required (1-64 of A-Z a-z 0-9 - .)"
        )
    where = f"{where}/{oid}"
    if resource.get("status") not in ("final", "amended", "corrected", "preliminary"):
        raise ObservationRefused(400, "invalid_observation", f"{where}.status must be final")
    effective = resource.get("effectiveDateTime")
    effective = str(effective)[:40] if effective is not None else None
    code = _loinc(resource.get("code"), f"{where}.code")
    if code in catalogue()["panels"]:
        components = resource.get("component")
        if not isinstance(components, list) or not components:
            raise ObservationRefused(
                400, "invalid_observation", f"{where}: a panel needs components"
            )
        out = []
        for i, comp in enumerate(components[:10]):
            cwhere = f"{where}.component[{i}]"
            ccode = _loinc(comp.get("code") if isinstance(comp, dict) else None, f"{cwhere}.code")
            if ccode in catalogue()["panels"]:
                raise ObservationRefused(
                    400, "invalid_observation", f"{cwhere}: a panel in a panel"
                )
            value, unit = _quantity(ccode, comp.get("valueQuantity"), cwhere)
            out.append(Reading(oid, ccode, value, unit, effective))
        return out
    value, unit = _quantity(code, resource.get("valueQuantity"), where)
    return [Reading(oid, code, value, unit, effective)]


def parse_body(body: Any) -> list[Reading]:
    """Readings of an Observation or a Bundle of them (all or nothing)."""
    if not isinstance(body, dict):
        raise ObservationRefused(400, "invalid_observation", "The body is not a FHIR resource.")
    kind = body.get("resourceType")
    if kind == "Observation":
        return parse_observation(body)
    if kind != "Bundle":
        raise ObservationRefused(
            400,
            "invalid_observation",
            f"Expected an Observation or a Bundle, not {str(kind)[:40]!r}.",
        )
    if body.get("type") not in ("batch", "transaction", "collection"):
        raise ObservationRefused(
            400, "invalid_observation", "Bundle.type: batch, transaction or collection"
        )
    entries = body.get("entry")
    if not isinstance(entries, list) or not entries:
        raise ObservationRefused(400, "invalid_observation", "Bundle.entry is empty")
    if len(entries) > MAX_ENTRIES:
        raise ObservationRefused(413, "payload_too_large", f"At most {MAX_ENTRIES} entries.")
    readings: list[Reading] = []
    for i, entry in enumerate(entries):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        readings.extend(parse_observation(resource, f"Bundle.entry[{i}]"))
    return readings
