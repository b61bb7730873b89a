"""bench/sfu.py's Janus baseline runs: Debian's janus (VideoRoom) forwards the bench clip from an
aiortc publisher to an aiortc subscriber, and the phase reports its CPU and packets."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _bench_sfu():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("bench_sfu", ROOT / "bench" / "sfu.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_sfu"] = module
    spec.loader.exec_module(module)
    return module


def test_janus_baseline_phase(tmp_path: Path) -> None:
    sfu = _bench_sfu()
    if sfu.sfu_janus.janus_binary() is None:
        pytest.skip(sfu.sfu_janus.JANUS_HINT)
    media = tmp_path / "clip.pkl"
    sfu.prepare_media(media, 160, 120, 15, 1.0)
    people = [
        {"identity": "pub", "publish": True, "subscribe": False},
        {"identity": "sub0", "publish": False, "subscribe": True, "delay": 0.3},
    ]
    result = sfu.phase("fanout1", "janus", people, 2, media, 9.0, 4.0)
    assert result["client_errors"] == []
    assert result["forwarded_streams"] == 2
    # janus forwarded video and audio packets to the subscriber inside the window
    assert result["forwarded_pps"] > 0 and result["us_per_packet"] is not None
    assert result["delivery_ratio_video"] > 0 and result["delivery_ratio_audio"] > 0
    assert result["first_frame_ms_p95"] is not None
