"""Shared fixtures for the rehab tests: the labelled clips in ../shared/data/rehab."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rehab_vision.landmarks import PoseSequence, load_npz

DATA = (Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "rehab").resolve()


def _labels() -> list[dict[str, Any]]:
    path = DATA / "labels.json"
    if not path.is_file():
        return []
    return json.loads(path.read_text())


LABELS = _labels()
CLIP_IDS = [Path(e["poses"]).stem for e in LABELS] or ["no-data"]


def need_data() -> None:
    if not LABELS:
        pytest.skip(f"rehab test data absent: {DATA} (needs ../shared/data/rehab beside the repo)")


@pytest.fixture(params=LABELS or [None], ids=CLIP_IDS)
def clip(request: pytest.FixtureRequest) -> dict[str, Any]:
    """One labelled clip's entry of labels.json (skips when the data is absent)."""
    need_data()
    return request.param


_cache: dict[str, PoseSequence] = {}


def poses(entry: dict[str, Any]) -> PoseSequence:
    key = entry["poses"]
    if key not in _cache:
        _cache[key] = load_npz(DATA / key)
    return _cache[key]


def entry(stem: str) -> dict[str, Any]:
    need_data()
    return next(e for e in LABELS if Path(e["poses"]).stem == stem)
