"""Measurements from geometry and pixel spacing (pure functions).

Coordinates: x = column, y = row, in image pixels; pixel (row r, column c) covers
[c, c+1) x [r, r+1), so its centre is (c + 0.5, r + 0.5). An ROI holds the pixels whose centre
lies inside it. Spacing is DICOM's (row_mm, col_mm): the distance between rows (along y) and
between columns (along x). Without spacing, results are in pixels and flagged uncalibrated.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

Point = tuple[float, float]
Spacing = tuple[float, float] | None


def _scale(spacing: Spacing) -> tuple[float, float]:
    """(mm per x step, mm per y step), or (1, 1) when uncalibrated."""
    if spacing is None:
        return 1.0, 1.0
    row_mm, col_mm = spacing
    return col_mm, row_mm


def length(points: Sequence[Point], spacing: Spacing) -> dict[str, Any]:
    """Distance between two points, in mm (or px when uncalibrated)."""
    (x0, y0), (x1, y1) = points[0], points[1]
    sx, sy = _scale(spacing)
    value = math.hypot((x1 - x0) * sx, (y1 - y0) * sy)
    return {
        "kind": "length",
        "value": value,
        "unit": "mm" if spacing else "px",
        "uncalibrated": spacing is None,
    }


def angle(points: Sequence[Point], spacing: Spacing) -> dict[str, Any]:
    """Angle at the middle point (vertex) between the two arms, in degrees [0, 180]."""
    (ax, ay), (vx, vy), (bx, by) = points[0], points[1], points[2]
    sx, sy = _scale(spacing)
    u = ((ax - vx) * sx, (ay - vy) * sy)
    w = ((bx - vx) * sx, (by - vy) * sy)
    nu, nw = math.hypot(*u), math.hypot(*w)
    if nu == 0 or nw == 0:
        value = 0.0
    else:
        cos = max(-1.0, min(1.0, (u[0] * w[0] + u[1] * w[1]) / (nu * nw)))
        value = math.degrees(math.acos(cos))
    return {"kind": "angle", "value": value, "unit": "deg", "uncalibrated": spacing is None}


def _box(points: Sequence[Point]) -> tuple[float, float, float, float]:
    (x0, y0), (x1, y1) = points[0], points[1]
    return min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)


def roi_mask(tool: str, points: Sequence[Point], shape: tuple[int, int]) -> np.ndarray:
    """Boolean (rows, cols) mask of the pixels whose centre is inside the ellipse/rect."""
    rows, cols = shape
    x0, y0, x1, y1 = _box(points)
    cx = np.arange(cols, dtype=np.float64) + 0.5
    cy = np.arange(rows, dtype=np.float64) + 0.5
    gx, gy = np.meshgrid(cx, cy)
    if tool == "rect":
        return (gx >= x0) & (gx <= x1) & (gy >= y0) & (gy <= y1)
    if tool == "ellipse":
        a, b = (x1 - x0) / 2.0, (y1 - y0) / 2.0
        if a <= 0 or b <= 0:
            return np.zeros(shape, dtype=bool)
        mx, my = (x0 + x1) / 2.0, (y0 + y1) / 2.0
        return ((gx - mx) / a) ** 2 + ((gy - my) / b) ** 2 <= 1.0
    raise ValueError(f"{tool} is not an ROI tool")


def roi(
    tool: str, points: Sequence[Point], spacing: Spacing, values: np.ndarray | None
) -> dict[str, Any]:
    """ROI area (geometric, mm2 or px2) and, given modality values (HU), mean/min/max/std."""
    x0, y0, x1, y1 = _box(points)
    sx, sy = _scale(spacing)
    w, h = (x1 - x0) * sx, (y1 - y0) * sy
    area = math.pi * w * h / 4.0 if tool == "ellipse" else w * h
    out: dict[str, Any] = {
        "kind": "roi",
        "area": area,
        "unit": "mm2" if spacing else "px2",
        "uncalibrated": spacing is None,
    }
    if values is not None:
        mask = roi_mask(tool, points, values.shape[:2])
        count = int(mask.sum())
        out["pixels"] = count
        if count:
            sel = values[mask]
            out.update(
                mean=float(sel.mean()),
                min=float(sel.min()),
                max=float(sel.max()),
                std=float(sel.std()),
            )
    return out


def measure(
    tool: str, points: Sequence[Point], spacing: Spacing, values: np.ndarray | None = None
) -> dict[str, Any] | None:
    """The measurement for an annotation, or None for tools that measure nothing."""
    if tool == "length":
        return length(points, spacing)
    if tool == "angle":
        return angle(points, spacing)
    if tool in ("ellipse", "rect"):
        return roi(tool, points, spacing, values)
    return None


def label(m: dict[str, Any]) -> str:
    """Short human text of a measurement (used on exported images)."""
    flag = " (uncal.)" if m.get("uncalibrated") else ""
    if m["kind"] == "length":
        return f"{m['value']:.1f} {m['unit']}{flag}"
    if m["kind"] == "angle":
        return f"{m['value']:.1f}°"
    text = f"{m['area']:.1f} {m['unit']}{flag}"
    if "mean" in m:
        text += f" mean {m['mean']:.1f} [{m['min']:.0f}, {m['max']:.0f}]"
    return text
