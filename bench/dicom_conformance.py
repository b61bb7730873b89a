"""DICOM export conformance sweep: every pydicom test file through GSPS/CSPS + SR, by dciodvfy.

For each of pydicom's local test files whose pixel data decodes here, draws a length, an angle,
an ellipse and a rect ROI, an arrow and a text mark (Chinese labels), builds the presentation
state and the SR, and counts dciodvfy ``Error`` lines not also reported for the source image.
Sources the exports refuse (typed 422) are counted with their reasons.

    python bench/dicom_conformance.py [--quick]

``--quick`` takes every fourth file. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pydicom
from pydicom.data import get_testdata_file

from annotation import dicom, measure
from annotation.errors import AnnotationError
from annotation.gsps import encode, presentation_state
from annotation.model import Annotation
from annotation.sr import NoMeasurements, build_sr


def errors(path: str) -> list[str]:
    """dciodvfy's Error lines for a file."""
    proc = subprocess.run(["dciodvfy", path], capture_output=True, timeout=120, check=False)
    return [
        line
        for line in proc.stderr.decode("utf-8", "replace").splitlines()
        if line.startswith("Error")
    ]


def marks(ds: pydicom.Dataset) -> list[Annotation]:
    """One mark of each tool, measured as the server measures, with Chinese text."""
    spacing, _ = dicom.pixel_spacing(ds)
    values = None if dicom.is_color(ds) else dicom.frame_pixels(ds, 0)
    w, h = int(ds.Columns) / 100.0, int(ds.Rows) / 100.0
    out = []
    for i, (tool, pts, text) in enumerate(
        [
            ("length", [(10, 20), (70, 90)], ""),
            ("angle", [(20, 10), (50, 50), (90, 15)], "角度"),
            ("ellipse", [(30, 30), (60, 55)], "右肺结节"),
            ("rect", [(60, 60), (90, 80)], ""),
            ("arrow", [(5, 5), (25, 25)], "病灶"),
            ("text", [(5, 90)], "随访"),
        ]
    ):
        scaled = [(x * w, y * h) for x, y in pts]
        m = measure.measure(tool, scaled, spacing, values)
        if m is not None:
            m["label"] = measure.label(m)
        out.append(
            Annotation(
                id=f"m{i}",
                author="dr-wang",
                author_name="王医生",
                colour="#000075",
                tool=tool,
                points=scaled,
                text=text,
                measurement=m,
            )
        )
    return out


def main() -> None:
    """Run the sweep and print the JSON summary last."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="every fourth file")
    args = parser.parse_args()
    folder = Path(get_testdata_file("CT_small.dcm")).parent
    names = sorted(f for f in os.listdir(folder) if f.endswith(".dcm"))
    if args.quick:
        names = names[::4]
    counts: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    new_lines = 0
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out.dcm")
        for name in names:
            path = str(folder / name)
            try:
                ds = pydicom.dcmread(path)
                ds.pixel_array  # noqa: B018
                int(ds.Rows)
            except Exception:  # not an image, or no decoder here: not an export input
                counts["sources_unreadable"] += 1
                continue
            counts["sources"] += 1
            refs = [(0, i) for i in range(dicom.frame_count(ds))]
            try:
                anns = marks(ds)
                pr = presentation_state([ds], refs, anns, None)
                objects = [("presentation_states", encode(pr))]
                try:
                    objects.append(("reports", build_sr([ds], refs, anns, pr)))
                except NoMeasurements:
                    counts["reports_without_measurement"] += 1
            except AnnotationError as exc:
                counts["refused_422"] += 1
                reasons[exc.message.split(":")[0][:80]] += 1
                continue
            known = set(errors(path))
            for kind, data in objects:
                Path(out).write_bytes(data)
                new = [line for line in errors(out) if line not in known]
                counts[kind] += 1
                new_lines += len(new)
                for line in new:
                    print(f"{name} {kind}: {line}")
    result = {
        **counts,
        "new_error_lines": new_lines,
        "refusals": dict(reasons),
        "seconds": round(time.perf_counter() - started, 1),
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
    }
    print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    main()
