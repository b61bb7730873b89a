"""DICOM Softcopy Presentation State export (highdicom), for DICOM documents.

Grayscale images get a Grayscale Softcopy Presentation State (GSPS), colour images a Color
Softcopy Presentation State (CSPS). One graphic layer per author (display colour = the author's
colour); each mark becomes a graphic object in PIXEL units (DICOM's pixel origin is the
top-left corner of the top-left pixel, as in our model) plus a text object with its label or
measurement.

Conformance choices (checked with dicom3tools ``dciodvfy`` in the tests):
- the character set is always ISO_IR 192 (UTF-8), whatever the source's, so "90.0°" and
  Chinese labels and names survive (the source's names are decoded with its own set first);
- General Series Laterality (Type 2C) is copied from the source's Laterality or
  ImageLaterality, else sent empty;
- a GSPS always carries a VOI window: the one asked for, else the file's, else (a file with
  only a VOI LUT table) that table, else one computed from the referenced frames' min/max;
- MONOCHROME1 sources get an INVERSE presentation LUT so they look as the modality meant;
- UIDs are derived from the source instances and the marks, so the same marks give the same
  instance (the SR export references it).
A source highdicom cannot reference (no UIDs, unknown SOP class, mixed colour/grey series)
raises :class:`InvalidDocument` (HTTP 422) with the reason.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from importlib import resources
from io import BytesIO
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from . import dicom, measure
from .dicom import Window
from .errors import AnnotationError, InvalidDocument
from .model import Annotation

SERIES_DESCRIPTION = "teleconsult annotations"
CHARSET = "ISO_IR 192"
#: Attributes a presentation state must copy from its source; without them it cannot reference it.
REQUIRED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")
#: Type 2 attributes highdicom reads from the source; absent ones are sent empty.
TYPE2_COPIED = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
)


def require_highdicom() -> Any:
    """The highdicom module, or a typed error saying what to install."""
    try:
        import highdicom
    except ImportError as exc:  # optional: raise a message that says what to install
        raise AnnotationError(
            "DICOM export needs highdicom: pip install highdicom", code="gsps_unavailable"
        ) from exc
    return highdicom


def _hex_rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def _lo(text: str) -> str:
    """A value fit for an LO element (no backslash or control characters, 64 characters)."""
    return "".join(" " if c == "\\" or ord(c) < 32 else c for c in text)[:64]


def _ellipse_axes(points: Sequence[tuple[float, float]]) -> np.ndarray:
    (x0, y0), (x1, y1) = points[0], points[1]
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    ax, ay = abs(x1 - x0) / 2, abs(y1 - y0) / 2
    if ax >= ay:  # major axis endpoints first, then minor
        pts = [(cx - ax, cy), (cx + ax, cy), (cx, cy - ay), (cx, cy + ay)]
    else:
        pts = [(cx, cy - ay), (cx, cy + ay), (cx - ax, cy), (cx + ax, cy)]
    return np.array(pts, dtype=float)


def source_header(ds: Dataset) -> Dataset:
    """The source's attributes without pixel data, Type 2 gaps filled, checked for UIDs.

    Values are decoded with the source's character set here, so they can be re-encoded as
    UTF-8 in the exported object.
    """
    missing = [k for k in REQUIRED_UIDS if not str(ds.get(k, "") or "").strip()]
    if missing:
        raise InvalidDocument(
            f"the source DICOM lacks {', '.join(missing)}, so no DICOM object can reference it",
            code="dicom_not_exportable",
        )
    header = Dataset()
    for tag in list(ds.keys()):
        if tag.group == 0x7FE0 or tag.is_private:
            continue
        try:
            header.add(ds[tag])  # converts a raw element with the source's character set
        except (ValueError, TypeError, UnicodeError) as exc:  # a value pydicom cannot read
            raise InvalidDocument(
                f"the source DICOM has an unreadable value in {tag} "
                f"({exc}), so it cannot be copied into an export",
                code="dicom_not_exportable",
            ) from exc
    header.file_meta = getattr(ds, "file_meta", Dataset())
    for keyword in TYPE2_COPIED:
        if keyword not in header:
            setattr(header, keyword, "")
    header.SpecificCharacterSet = CHARSET  # values above are already decoded
    return header


def _pixels_window(datasets: Sequence[Dataset], frame_refs: list[tuple[int, int]]) -> Window:
    """A window over the min..max modality values of every referenced frame."""
    lo, hi = math.inf, -math.inf
    for ds_index, frame_no in frame_refs:
        values = dicom.frame_pixels(datasets[ds_index], frame_no)
        lo, hi = min(lo, float(values.min())), max(hi, float(values.max()))
    if not math.isfinite(lo):
        return Window(0.0, 2.0)
    return Window((lo + hi) / 2.0 + 0.5, max(hi - lo + 1.0, 2.0))


def default_window(
    datasets: Sequence[Dataset], frame_refs: list[tuple[int, int]], window: Window | None
) -> Window | None:
    """The GSPS window: given, else the file's, else None when the file has a VOI LUT table
    (highdicom copies it), else computed from the pixels."""
    if window is not None:
        return window
    window = dicom.file_window(datasets[0])
    if window is not None:
        return window
    if "VOILUTSequence" in datasets[0]:
        return None
    return _pixels_window(datasets, frame_refs)


def _digest(annotations: list[Annotation], window: Window | None) -> str:
    payload = [a.model_dump(exclude={"created", "updated"}) for a in annotations]
    extra = [window.center, window.width] if window else None
    blob = json.dumps([payload, extra], sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def export_uids(datasets: Sequence[Dataset], kind: str, digest: str) -> tuple[str, str]:
    """(series UID, instance UID) of an export of ``kind`` for these sources and content."""
    sources = [str(ds.SOPInstanceUID) for ds in datasets]
    series = generate_uid(entropy_srcs=["teleconsult", kind, *sources])
    return series, generate_uid(entropy_srcs=[series, digest])


def _graphic_annotations(
    hd: Any,
    headers: Sequence[Dataset],
    frame_refs: list[tuple[int, int]],
    annotations: list[Annotation],
) -> tuple[list[Any], list[Any]]:
    authors: dict[str, Annotation] = {}
    for ann in annotations:
        authors.setdefault(ann.author, ann)
    layers = {}
    for order, (author, first) in enumerate(authors.items(), start=1):
        layers[author] = hd.pr.GraphicLayer(
            layer_name=f"AUTHOR{order}",
            order=order,
            description=_lo(first.author_name or author),
            display_color=hd.color.CIELabColor.from_rgb(*_hex_rgb(first.colour)),
        )
    units = hd.pr.AnnotationUnitsValues.PIXEL
    gtype = hd.pr.GraphicTypeValues
    out = []
    for ann in annotations:
        if not 0 <= ann.frame < len(frame_refs):
            continue
        ds_index, frame_no = frame_refs[ann.frame]
        ds = headers[ds_index]
        rows, cols = int(ds.Rows), int(ds.Columns)
        pts = np.array(
            [[min(max(x, 0.0), cols), min(max(y, 0.0), rows)] for x, y in ann.points], dtype=float
        )
        objects = []
        if ann.tool in ("arrow", "length", "angle", "freehand"):
            objects.append(hd.pr.GraphicObject(gtype.POLYLINE, pts, units))
        elif ann.tool == "rect":
            (x0, y0), (x1, y1) = pts
            box = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]], dtype=float)
            objects.append(hd.pr.GraphicObject(gtype.POLYLINE, box, units))
        elif ann.tool == "ellipse":
            axes = _ellipse_axes([tuple(p) for p in pts])
            if not math.isclose(float(np.ptp(axes[:, 0])) * float(np.ptp(axes[:, 1])), 0.0):
                objects.append(hd.pr.GraphicObject(gtype.ELLIPSE, axes, units))
        label = " ".join(
            t for t in (ann.text, measure.label(ann.measurement) if ann.measurement else "") if t
        )
        texts = []
        if label:
            anchor = (float(pts[0][0]), float(pts[0][1]))
            texts.append(hd.pr.TextObject(label[:1024], units, anchor_point=anchor))
        if not objects and not texts:
            continue
        multi = dicom.frame_count(ds) > 1
        out.append(
            hd.pr.GraphicAnnotation(
                referenced_images=[ds],
                graphic_layer=layers[ann.author],
                referenced_frame_number=frame_no + 1 if multi else None,
                graphic_objects=objects or None,
                text_objects=texts or None,
            )
        )
    return out, list(layers.values())


def _srgb_profile(hd: Any) -> bytes:
    return (resources.files(hd) / "_icc_profiles" / "sRGB_v4_ICC_preference.icc").read_bytes()


def presentation_state(
    datasets: Sequence[Dataset],
    frame_refs: list[tuple[int, int]],
    annotations: list[Annotation],
    window: Window | None,
) -> Dataset:
    """The GSPS (grayscale) or CSPS (colour) of the marks on ``datasets``.

    ``frame_refs[i]`` is (index into datasets, frame number within that file) for document
    frame ``i``. Raises :class:`InvalidDocument` for sources that cannot be referenced.
    """
    hd = require_highdicom()
    colour = {dicom.is_color(ds) for ds in datasets}
    if len(colour) != 1:
        raise InvalidDocument(
            "the series mixes colour and grayscale images; a presentation state covers one kind",
            code="dicom_not_exportable",
        )
    is_colour = colour.pop()
    headers = [source_header(ds) for ds in datasets]
    if not is_colour:
        window = default_window(datasets, frame_refs, window)
    series_uid, sop_uid = export_uids(datasets, "pr", _digest(annotations, window))
    try:
        graphic_annotations, layers = _graphic_annotations(hd, headers, frame_refs, annotations)
        common: dict[str, Any] = dict(
            referenced_images=headers,
            series_instance_uid=series_uid,
            series_number=9001,
            sop_instance_uid=sop_uid,
            instance_number=1,
            manufacturer="teleconsult",
            manufacturer_model_name="teleconsult",
            software_versions="0.1",
            device_serial_number="0",
            content_label="ANNOTATIONS",
            content_description=SERIES_DESCRIPTION,
            graphic_annotations=graphic_annotations or None,
            graphic_layers=layers or None,
            specific_character_set=CHARSET,
        )
        if is_colour:
            icc = datasets[0].get("ICCProfile") or _srgb_profile(hd)
            pr = hd.pr.ColorSoftcopyPresentationState(icc_profile=icc, **common)
        else:
            inverse = str(datasets[0].get("PhotometricInterpretation", "")) == "MONOCHROME1"
            shape = hd.PresentationLUTShapeValues
            pr = hd.pr.GrayscaleSoftcopyPresentationState(
                voi_lut_transformations=None
                if window is None
                else [
                    hd.pr.SoftcopyVOILUTTransformation(
                        window_center=window.center, window_width=window.width
                    )
                ],
                presentation_lut_transformation=hd.PresentationLUTTransformation(
                    presentation_lut_shape=shape.INVERSE if inverse else shape.IDENTITY
                ),
                **common,
            )
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise InvalidDocument(
            f"the source DICOM does not allow a presentation state: {exc}",
            code="dicom_not_exportable",
        ) from exc
    src = headers[0]
    laterality = str(src.get("Laterality", "") or src.get("ImageLaterality", "") or "")
    pr.Laterality = laterality if laterality in ("R", "L") else ""
    return pr


def encode(ds: Dataset) -> bytes:
    """A DICOM Part 10 file of ``ds``."""
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def build_gsps(
    datasets: Sequence[Dataset],
    frame_refs: list[tuple[int, int]],
    annotations: list[Annotation],
    window: Window | None,
) -> bytes:
    """Encode the presentation state of the marks (see :func:`presentation_state`)."""
    return encode(presentation_state(datasets, frame_refs, annotations, window))
