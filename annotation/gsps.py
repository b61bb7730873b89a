"""DICOM Grayscale Softcopy Presentation State export (highdicom), for DICOM documents.

One graphic layer per author (display colour = the author's colour); each mark becomes a
graphic object in PIXEL units (DICOM's pixel origin is the top-left corner of the top-left
pixel, as in our model) plus a text object with its label or measurement.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from io import BytesIO

import numpy as np
from pydicom.dataset import Dataset

from . import measure
from .dicom import Window
from .errors import AnnotationError
from .model import Annotation

SERIES_DESCRIPTION = "teleconsult annotations"


def _require_highdicom() -> object:
    try:
        import highdicom
    except ImportError as exc:  # optional: raise a message that says what to install
        raise AnnotationError("GSPS export needs highdicom: pip install highdicom",
                              code="gsps_unavailable") from exc
    return highdicom


def _hex_rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def _ellipse_axes(points: Sequence[tuple[float, float]]) -> np.ndarray:
    (x0, y0), (x1, y1) = points[0], points[1]
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    ax, ay = abs(x1 - x0) / 2, abs(y1 - y0) / 2
    if ax >= ay:  # major axis endpoints first, then minor
        pts = [(cx - ax, cy), (cx + ax, cy), (cx, cy - ay), (cx, cy + ay)]
    else:
        pts = [(cx, cy - ay), (cx, cy + ay), (cx - ax, cy), (cx + ax, cy)]
    return np.array(pts, dtype=float)


def build_gsps(datasets: Sequence[Dataset], frame_refs: list[tuple[int, int]],
               annotations: list[Annotation], window: Window | None) -> bytes:
    """Encode a GSPS referencing ``datasets``.

    ``frame_refs[i]`` is (index into datasets, frame number within that file) for document
    frame ``i``.
    """
    hd = _require_highdicom()
    authors: dict[str, Annotation] = {}
    for ann in annotations:
        authors.setdefault(ann.author, ann)
    layers = {}
    for order, (author, first) in enumerate(authors.items(), start=1):
        layers[author] = hd.pr.GraphicLayer(  # type: ignore[attr-defined]
            layer_name=f"AUTHOR{order}", order=order,
            description=(first.author_name or author)[:64],
            display_color=hd.color.CIELabColor.from_rgb(  # type: ignore[attr-defined]
                *_hex_rgb(first.colour)))
    units = hd.pr.AnnotationUnitsValues.PIXEL  # type: ignore[attr-defined]
    gtype = hd.pr.GraphicTypeValues  # type: ignore[attr-defined]
    graphic_annotations = []
    for ann in annotations:
        if not 0 <= ann.frame < len(frame_refs):
            continue
        ds_index, frame_no = frame_refs[ann.frame]
        ds = datasets[ds_index]
        rows, cols = int(ds.Rows), int(ds.Columns)
        pts = np.array([[min(max(x, 0.0), cols), min(max(y, 0.0), rows)]
                        for x, y in ann.points], dtype=float)
        objects = []
        if ann.tool in ("arrow", "length", "angle", "freehand"):
            objects.append(hd.pr.GraphicObject(gtype.POLYLINE, pts, units))  # type: ignore[attr-defined]
        elif ann.tool == "rect":
            (x0, y0), (x1, y1) = pts
            box = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]], dtype=float)
            objects.append(hd.pr.GraphicObject(gtype.POLYLINE, box, units))  # type: ignore[attr-defined]
        elif ann.tool == "ellipse":
            axes = _ellipse_axes([tuple(p) for p in pts])
            if not math.isclose(float(np.ptp(axes[:, 0])) * float(np.ptp(axes[:, 1])), 0.0):
                objects.append(hd.pr.GraphicObject(gtype.ELLIPSE, axes, units))  # type: ignore[attr-defined]
        label = " ".join(t for t in (ann.text, measure.label(ann.measurement)
                                     if ann.measurement else "") if t)
        texts = []
        if label:
            anchor = (float(pts[0][0]), float(pts[0][1]))
            texts.append(hd.pr.TextObject(label[:1024], units, anchor_point=anchor))  # type: ignore[attr-defined]
        if not objects and not texts:
            continue
        multi = int(ds.get("NumberOfFrames", 1) or 1) > 1
        graphic_annotations.append(hd.pr.GraphicAnnotation(  # type: ignore[attr-defined]
            referenced_images=[ds], graphic_layer=layers[ann.author],
            referenced_frame_number=frame_no + 1 if multi else None,
            graphic_objects=objects or None, text_objects=texts or None))
    voi = None
    if window is not None:
        voi = [hd.pr.SoftcopyVOILUTTransformation(  # type: ignore[attr-defined]
            window_center=window.center, window_width=window.width)]
    gsps = hd.pr.GrayscaleSoftcopyPresentationState(  # type: ignore[attr-defined]
        referenced_images=list(datasets),
        series_instance_uid=hd.UID(), series_number=9001,  # type: ignore[attr-defined]
        sop_instance_uid=hd.UID(), instance_number=1,  # type: ignore[attr-defined]
        manufacturer="teleconsult", manufacturer_model_name="teleconsult",
        software_versions="0.1", device_serial_number="0",
        content_label="ANNOTATIONS", content_description=SERIES_DESCRIPTION,
        graphic_annotations=graphic_annotations or None,
        graphic_layers=list(layers.values()) or None,
        voi_lut_transformations=voi,
    )
    buf = BytesIO()
    gsps.save_as(buf, enforce_file_format=True)
    return buf.getvalue()
