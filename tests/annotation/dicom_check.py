"""Outside judges for the DICOM the project writes: dicom3tools ``dciodvfy`` and dcmtk.

``new_errors(output, source)`` is the list of ``Error`` lines dciodvfy reports for ``output``
that it does not report for ``source`` (a source image's own faults are not ours).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.validators import tally


def _tool(name: str, package: str) -> str:
    exe = shutil.which(name)
    if exe is None:
        pytest.fail(f"{name} is missing: install the Debian package {package} (scripts/test does)")
    return exe


def dciodvfy(data: bytes | Path) -> list[str]:
    """dciodvfy's output lines (it writes its report to stderr)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = data if isinstance(data, Path) else Path(tmp) / "file.dcm"
        if not isinstance(data, Path):
            path.write_bytes(data)
        proc = subprocess.run(
            [_tool("dciodvfy", "dicom3tools"), str(path)],
            capture_output=True,
            timeout=60,
            check=False,
        )
    lines = (proc.stdout + proc.stderr).decode("utf-8", "replace").splitlines()
    tally(
        "dciodvfy",
        file=data.name if isinstance(data, Path) else f"{len(data)} bytes written",
        error_lines=sum(line.startswith("Error") for line in lines),
        warning_lines=sum(line.startswith("Warning") for line in lines),
    )
    return lines


def errors(data: bytes | Path) -> list[str]:
    """The ``Error`` lines of dciodvfy's report."""
    return [line for line in dciodvfy(data) if line.startswith("Error")]


def new_errors(output: bytes, source: Path | None = None) -> list[str]:
    """Error lines for ``output`` not also reported for ``source``."""
    known = set(errors(source)) if source is not None else set()
    return [line for line in errors(output) if line not in known]


def dcmtk(tool: str, *args: str | Path) -> subprocess.CompletedProcess[bytes]:
    """Run a dcmtk tool (dcmdump, dsrdump, dcmp2pgm, ...)."""
    return subprocess.run(
        [_tool(tool, "dcmtk"), *map(str, args)], capture_output=True, timeout=60, check=False
    )
