"""Measurements on pydicom's CT_small.dcm, checked against independent numpy arithmetic."""

from __future__ import annotations

import math

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from annotation import measure

SPACING = 0.661468


@pytest.fixture(scope="module")
def hu() -> np.ndarray:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    assert float(ds.PixelSpacing[0]) == pytest.approx(SPACING)
    return ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


def test_length_mm():
    m = measure.length([(10, 20), (70, 100)], (SPACING, SPACING))
    assert m["unit"] == "mm" and not m["uncalibrated"]
    assert m["value"] == pytest.approx(100 * SPACING)  # 60-80-100 triangle


def test_length_anisotropic_spacing():
    # row spacing 2 mm (y), column spacing 0.5 mm (x)
    m = measure.length([(0, 0), (10, 10)], (2.0, 0.5))
    assert m["value"] == pytest.approx(math.hypot(10 * 0.5, 10 * 2.0))


def test_uncalibrated_flag():
    m = measure.length([(0, 0), (3, 4)], None)
    assert m == {"kind": "length", "value": 5.0, "unit": "px", "uncalibrated": True}
    assert "uncal" in measure.label(m)


def test_angle_degrees():
    assert measure.angle([(10, 0), (0, 0), (0, 10)], (SPACING, SPACING))["value"] == pytest.approx(
        90.0
    )
    assert measure.angle([(10, 0), (0, 0), (10, 10)], None)["value"] == pytest.approx(45.0)
    assert measure.angle([(1, 0), (0, 0), (-1, 0)], None)["value"] == pytest.approx(180.0)


def test_rect_roi_hu(hu: np.ndarray):
    # pixels whose centre lies in x in [20, 40], y in [30, 50]: columns 20..39, rows 30..49
    m = measure.roi("rect", [(20, 30), (40, 50)], (SPACING, SPACING), hu)
    block = hu[30:50, 20:40]
    assert m["pixels"] == block.size == 400
    assert m["mean"] == pytest.approx(block.mean())
    assert m["min"] == block.min() and m["max"] == block.max()
    assert m["area"] == pytest.approx(400 * SPACING**2)


def test_ellipse_roi_hu(hu: np.ndarray):
    cx, cy, a, b = 64.0, 60.0, 20.0, 12.0
    m = measure.roi("ellipse", [(cx - a, cy - b), (cx + a, cy + b)], (SPACING, SPACING), hu)
    rows, cols = np.indices(hu.shape)
    inside = (((cols + 0.5) - cx) / a) ** 2 + (((rows + 0.5) - cy) / b) ** 2 <= 1.0
    assert m["pixels"] == int(inside.sum())
    assert m["mean"] == pytest.approx(hu[inside].mean())
    assert m["area"] == pytest.approx(math.pi * a * b * SPACING**2)
    # the right HU scale: CT_small has air near -1000 at a corner and tissue inside
    assert m["min"] >= -1100 and m["max"] <= 3100


def test_non_measuring_tools():
    assert measure.measure("arrow", [(0, 0), (1, 1)], None) is None
    assert measure.measure("freehand", [(0, 0), (1, 1)], None) is None
