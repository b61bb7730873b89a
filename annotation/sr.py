"""DICOM SR export: a TID 1500 Measurement Report of a DICOM document's measurements (highdicom).

- lengths and angles: TID 1501 measurement groups, each measurement inferred from a 2D SCOORD
  (POLYLINE in PIXEL coordinates) on the source image (and frame);
- ellipse/rectangle ROIs: TID 1410 planar ROI groups (ELLIPSE / closed POLYLINE region) with
  the area and the statistics of the pixels inside (CT: "Attenuation Coefficient" with a
  mean/min/max/SD derivation in Hounsfield units; MR: "MR signal intensity"; others: the
  statistic itself, unit "no units");
- units are UCUM (mm, mm2, deg, [hnsf'U], 1); on images without pixel spacing only angles and
  ROI statistics are exported (pixel lengths are not physical quantities);
- every image reference carries the presentation state (the GSPS/CSPS of the same marks) as
  its nested Referenced SOP Sequence, and that presentation state is listed as evidence;
- each group's tracking identifier is the mark's text (or tool) and its author's name; the
  content language is zh-CN when a text or name has Chinese characters, else en-US.
Marks that measure nothing (arrows, freehand, text) are in the presentation state only.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from . import dicom
from .errors import InvalidDocument
from .gsps import CHARSET, encode, export_uids, require_highdicom, source_header
from .model import Annotation

SERIES_NUMBER = 9002


class NoMeasurements(InvalidDocument):
    """Nothing on the document is a measurement the report can hold (HTTP 422)."""

    code = "no_measurements"


_STATS = (
    ("mean", codes.SCT.Mean),
    ("min", codes.SCT.Minimum),
    ("max", codes.SCT.Maximum),
    ("std", codes.SCT.StandardDeviation),
)


def _is_cjk(text: str) -> bool:
    return any("\u3400" <= c <= "\u9fff" or "\uf900" <= c <= "\ufaff" for c in text)


def _stat_measurements(hd: Any, m: dict[str, Any], modality: str) -> list[Any]:
    if "mean" not in m:
        return []
    out = []
    for key, code in _STATS:
        if modality == "CT":
            out.append(
                hd.sr.Measurement(
                    name=codes.DCM.AttenuationCoefficient,
                    value=m[key],
                    unit=codes.UCUM.HounsfieldUnit,
                    derivation=code,
                )
            )
        elif modality == "MR":
            out.append(
                hd.sr.Measurement(
                    name=codes.DCM.MRSignalIntensity,
                    value=m[key],
                    unit=codes.UCUM.NoUnits,
                    derivation=code,
                )
            )
        else:
            out.append(hd.sr.Measurement(name=code, value=m[key], unit=codes.UCUM.NoUnits))
    return out


def _groups(
    hd: Any,
    headers: Sequence[Dataset],
    frame_refs: list[tuple[int, int]],
    annotations: list[Annotation],
) -> Iterator[Any]:
    for ann in annotations:
        m = ann.measurement
        if not m or not 0 <= ann.frame < len(frame_refs):
            continue
        ds_index, frame_no = frame_refs[ann.frame]
        ds = headers[ds_index]
        rows, cols = int(ds.Rows), int(ds.Columns)
        pts = np.array(
            [[min(max(x, 0.0), cols), min(max(y, 0.0), rows)] for x, y in ann.points], dtype=float
        )
        multi = dicom.frame_count(ds) > 1
        source = hd.sr.SourceImageForRegion(
            referenced_sop_class_uid=ds.SOPClassUID,
            referenced_sop_instance_uid=ds.SOPInstanceUID,
            referenced_frame_numbers=[frame_no + 1] if multi else None,
        )
        label = f"{ann.text or ann.tool} ({ann.author_name or ann.author})"
        tracking = hd.sr.TrackingIdentifier(
            identifier=label[:64], uid=generate_uid(entropy_srcs=["teleconsult-mark", ann.id])
        )
        calibrated = not m.get("uncalibrated")
        if ann.tool in ("length", "angle"):
            if ann.tool == "length" and not calibrated:
                continue
            name, unit = (
                (codes.SCT.Length, codes.UCUM.Millimeter)
                if ann.tool == "length"
                else (codes.SCT.Angle, codes.UCUM.Degree)
            )
            coords = hd.sr.CoordinatesForMeasurement(
                graphic_type=hd.sr.GraphicTypeValues.POLYLINE, graphic_data=pts, source_image=source
            )
            yield hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=tracking,
                finding_type=codes.DCM.Finding,
                measurements=[
                    hd.sr.Measurement(
                        name=name,
                        value=float(m["value"]),
                        unit=unit,
                        referenced_coordinates=[coords],
                    )
                ],
            )
        elif ann.tool in ("ellipse", "rect"):
            measurements = []
            if calibrated:
                measurements.append(
                    hd.sr.Measurement(
                        name=codes.SCT.Area,
                        value=float(m["area"]),
                        unit=codes.UCUM.SquareMillimeter,
                    )
                )
            measurements += _stat_measurements(hd, m, str(ds.get("Modality", "")))
            if not measurements:
                continue
            (x0, y0), (x1, y1) = pts
            if ann.tool == "rect":
                gtype, data = (
                    hd.sr.GraphicTypeValues.POLYLINE,
                    np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]], dtype=float),
                )
            else:
                cx, cy, ax, ay = (x0 + x1) / 2, (y0 + y1) / 2, abs(x1 - x0) / 2, abs(y1 - y0) / 2
                if ax == 0 or ay == 0:
                    continue
                major = (
                    [(cx - ax, cy), (cx + ax, cy)] if ax >= ay else [(cx, cy - ay), (cx, cy + ay)]
                )
                minor = (
                    [(cx, cy - ay), (cx, cy + ay)] if ax >= ay else [(cx - ax, cy), (cx + ax, cy)]
                )
                gtype, data = hd.sr.GraphicTypeValues.ELLIPSE, np.array(major + minor)
            region = hd.sr.ImageRegion(graphic_type=gtype, graphic_data=data, source_image=source)
            yield hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=tracking,
                referenced_region=region,
                finding_type=codes.DCM.Finding,
                measurements=measurements,
            )


def _reference_presentation_state(item: Dataset, pr: Dataset) -> None:
    """Add the presentation state to every IMAGE content item below ``item``."""
    for child in item.get("ContentSequence", []):
        if child.get("ValueType") == "IMAGE":
            ref = Dataset()
            ref.ReferencedSOPClassUID = pr.SOPClassUID
            ref.ReferencedSOPInstanceUID = pr.SOPInstanceUID
            child.ReferencedSOPSequence[0].ReferencedSOPSequence = DicomSequence([ref])
        _reference_presentation_state(child, pr)


def build_sr(
    datasets: Sequence[Dataset],
    frame_refs: list[tuple[int, int]],
    annotations: list[Annotation],
    presentation_state: Dataset,
) -> bytes:
    """Encode the TID 1500 Measurement Report (Comprehensive SR) of the marks on ``datasets``.

    ``frame_refs`` as for :func:`annotation.gsps.presentation_state`; ``presentation_state``
    is the GSPS/CSPS of the same marks, referenced from every image reference.
    """
    hd = require_highdicom()
    headers = [source_header(ds) for ds in datasets]
    series_uid, sop_uid = export_uids(datasets, "sr", str(presentation_state.SOPInstanceUID))
    try:
        groups = list(_groups(hd, headers, frame_refs, annotations))
        if not groups:
            raise NoMeasurements(
                "the document has no measurement to report (lengths, angles "
                "and ROIs are; on images without pixel spacing only angles "
                "and ROI statistics)"
            )
        observer = hd.sr.ObserverContext(
            observer_type=codes.DCM.Device,
            observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
                uid=generate_uid(entropy_srcs=["teleconsult-device"]), name="teleconsult"
            ),
        )
        chinese = any(_is_cjk(a.text + a.author_name) for a in annotations)
        language = hd.sr.LanguageOfContentItemAndDescendants(
            hd.sr.CodedConcept(
                *(
                    ("zh-CN", "RFC5646", "Chinese (China)")
                    if chinese
                    else ("en-US", "RFC5646", "English (United States)")
                )
            )
        )
        report = hd.sr.MeasurementReport(
            observation_context=hd.sr.ObservationContext(observer_device_context=observer),
            procedure_reported=codes.SCT.ImagingProcedure,
            imaging_measurements=groups or None,
            language_of_content_item_and_descendants=language,
        )
        sr = hd.sr.ComprehensiveSR(
            evidence=[*headers, presentation_state],
            content=report[0],
            series_instance_uid=series_uid,
            series_number=SERIES_NUMBER,
            sop_instance_uid=sop_uid,
            instance_number=1,
            manufacturer="teleconsult",
            is_complete=True,
            specific_character_set=CHARSET,
        )
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise InvalidDocument(
            f"the source DICOM does not allow a measurement report: {exc}",
            code="dicom_not_exportable",
        ) from exc
    _reference_presentation_state(sr, presentation_state)
    return encode(sr)
