"""The systemd units in deploy/systemd pass `systemd-analyze verify` (Debian's systemd)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNITS = REPO / "deploy" / "systemd"
INSTALLED = "/opt/teleconsult/.venv/bin/teleconsult"


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    # verify checks that ExecStart's program exists: point it at this checkout's console script
    script = Path(sys.executable).parent / "teleconsult"
    if not script.exists():
        pytest.skip(f"no teleconsult console script next to {sys.executable}")
    names = []
    for unit in sorted(UNITS.iterdir()):
        text = unit.read_text()
        assert INSTALLED in text or unit.suffix == ".target", unit.name
        (tmp_path / unit.name).write_text(text.replace(INSTALLED, str(script)))
        names.append(unit.name)
    # a template is verified through an instance of it
    instance = tmp_path / "teleconsult@0.service"
    instance.symlink_to(tmp_path / "teleconsult@.service")
    names = [n for n in names if n != "teleconsult@.service"] + [instance.name]
    proc = subprocess.run(
        [exe, "verify", "--man=no", *names],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    ours = [line for line in proc.stderr.splitlines() if "teleconsult" in line]
    assert proc.returncode == 0, proc.stderr
    assert ours == [], proc.stderr
