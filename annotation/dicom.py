"""DICOM loading: pixel values in modality units (HU for CT), windows, spacing, series order."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from io import BytesIO

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import _read_file_meta_info, read_preamble
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from pydicom.uid import DeflatedExplicitVRLittleEndian

from .errors import DocumentTooLarge, InvalidDocument


@dataclass(frozen=True)
class Window:
    """A VOI window in modality units (HU for CT): DICOM's linear function C.11.2.1.2."""

    center: float
    width: float


#: Common CT window presets in HU (level/width as radiology references give them).
WINDOW_PRESETS: dict[str, Window] = {
    "soft_tissue": Window(40.0, 400.0),
    "lung": Window(-600.0, 1500.0),
    "bone": Window(400.0, 1800.0),
    "brain": Window(40.0, 80.0),
}

#: What a deflated dataset may inflate to (Deflated Explicit VR Little Endian): a pixel budget
#: of 40 M pixels at up to 6 bytes each, and room for the other elements.
MAX_INFLATED_BYTES = 256 * 1024 * 1024

#: Modalities whose images are projections: ImagerPixelSpacing is at the detector plane.
PROJECTION_MODALITIES = frozenset({"CR", "DX", "MG", "XA", "RF", "IO", "PX"})


def check_inflation(data: bytes, max_inflated: int = MAX_INFLATED_BYTES) -> None:
    """Refuse a deflated dataset that inflates past `max_inflated` bytes, before pydicom
    inflates it whole (a 1 MiB zlib stream of zeros becomes 1 GiB): the body is inflated
    a MiB at a time, counted and dropped."""
    fp = BytesIO(data)
    try:
        read_preamble(fp, False)
        meta = _read_file_meta_info(fp)
    except Exception as exc:  # pydicom raises many kinds on bad input
        raise InvalidDocument(f"DICOM file meta does not parse: {exc}") from exc
    if meta.get("TransferSyntaxUID") != DeflatedExplicitVRLittleEndian:
        return
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    pending, total = data[fp.tell() :], 0
    try:
        while chunk := inflater.decompress(pending, 1 << 20):
            total += len(chunk)
            if total > max_inflated:
                raise DocumentTooLarge(f"deflated DICOM inflates to over {max_inflated} bytes")
            pending = inflater.unconsumed_tail
    except zlib.error as exc:
        raise InvalidDocument(f"deflated DICOM does not inflate: {exc}") from exc


def read_dataset(
    data: bytes, *, max_pixels: int, max_inflated: int = MAX_INFLATED_BYTES
) -> Dataset:
    """Parse a DICOM Part 10 file, check its pixel bounds and decode its pixels once."""
    if len(data) < 132 or data[128:132] != b"DICM":
        raise InvalidDocument("not a DICOM Part 10 file (no DICM preamble)")
    check_inflation(data, max_inflated)
    try:
        ds = pydicom.dcmread(BytesIO(data))
    except (InvalidDicomError, Exception) as exc:  # pydicom raises many kinds on bad input
        raise InvalidDocument(f"DICOM does not parse: {exc}") from exc
    if "PixelData" not in ds and "FloatPixelData" not in ds:
        raise InvalidDocument("DICOM has no pixel data")
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        frames = frame_count(ds)
        samples = int(ds.get("SamplesPerPixel", 1))
    except (AttributeError, TypeError, ValueError) as exc:
        raise InvalidDocument(f"DICOM image attributes missing: {exc}") from exc
    if rows <= 0 or cols <= 0 or frames <= 0 or samples not in (1, 3):
        raise InvalidDocument("DICOM image attributes out of range")
    if rows * cols * frames > max_pixels:
        raise DocumentTooLarge(f"DICOM has {rows}x{cols}x{frames} pixels, over {max_pixels}")
    try:
        arr = ds.pixel_array
    except Exception as exc:  # decoder plug-ins raise their own types
        raise InvalidDocument(f"DICOM pixel data does not decode: {exc}") from exc
    expected = (frames, rows, cols) if frames > 1 else (rows, cols)
    if arr.shape[: len(expected)] != expected:
        raise InvalidDocument(f"DICOM pixel array shape {arr.shape} != {expected}")
    return ds


def frame_count(ds: Dataset) -> int:
    """NumberOfFrames (1 when absent)."""
    return int(ds.get("NumberOfFrames", 1) or 1)


def _shared_item(ds: Dataset, seq: str) -> Dataset | None:
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared and seq in shared[0] and shared[0][seq]:
        return shared[0][seq][0]
    return None


def pixel_spacing(ds: Dataset) -> tuple[tuple[float, float] | None, str | None]:
    """(row_mm, col_mm) and the attribute it came from, or (None, None) if uncalibrated.

    PixelSpacing (also inside the enhanced shared functional groups) wins; ImagerPixelSpacing
    is used when it is absent (projection radiographs: spacing at the detector plane).
    """
    candidates: list[tuple[object, str]] = [(ds.get("PixelSpacing"), "PixelSpacing")]
    measures = _shared_item(ds, "PixelMeasuresSequence")
    if measures is not None:
        candidates.append((measures.get("PixelSpacing"), "PixelSpacing"))
    candidates.append((ds.get("ImagerPixelSpacing"), "ImagerPixelSpacing"))
    for value, source in candidates:
        if value is None:
            continue
        try:
            row, col = float(value[0]), float(value[1])  # type: ignore[index]
        except (TypeError, ValueError, IndexError):
            continue
        if row > 0 and col > 0 and np.isfinite(row) and np.isfinite(col):
            return (row, col), source
    return None, None


def is_color(ds: Dataset) -> bool:
    """Whether frames carry 3 samples per pixel (RGB/YBR)."""
    return int(ds.get("SamplesPerPixel", 1)) == 3


def frame_pixels(ds: Dataset, index: int) -> np.ndarray:
    """One frame: float64 modality values (HU for CT) for grayscale, uint8 RGB for colour."""
    frames = frame_count(ds)
    if not 0 <= index < frames:
        raise IndexError(f"frame {index} out of range 0..{frames - 1}")
    arr = ds.pixel_array
    frame = arr[index] if frames > 1 else arr
    if is_color(ds):
        if frame.dtype != np.uint8:
            peak = float(frame.max()) or 1.0
            frame = np.clip(frame / peak * 255.0, 0, 255).astype(np.uint8)
        return frame
    if "RescaleSlope" in ds or "RescaleIntercept" in ds or "ModalityLUTSequence" in ds:
        return np.asarray(apply_modality_lut(frame, ds), dtype=np.float64)
    transform = _shared_item(ds, "PixelValueTransformationSequence")
    if transform is not None and "RescaleSlope" in transform:
        slope = float(transform.RescaleSlope)
        intercept = float(transform.get("RescaleIntercept", 0.0))
        return frame.astype(np.float64) * slope + intercept
    return frame.astype(np.float64)


def file_window(ds: Dataset) -> Window | None:
    """The first WindowCenter/WindowWidth pair stored in the file, if any."""
    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if center is None or width is None:
        voi = _shared_item(ds, "FrameVOILUTSequence")
        if voi is None:
            return None
        center, width = voi.get("WindowCenter"), voi.get("WindowWidth")
        if center is None or width is None:
            return None
    try:
        c = float(center[0]) if isinstance(center, Sequence) else float(center)
        w = float(width[0]) if isinstance(width, Sequence) else float(width)
    except (TypeError, ValueError, IndexError):
        return None
    return Window(c, w) if w >= 1.0 else None


def apply_window(values: np.ndarray, window: Window, *, invert: bool = False) -> np.ndarray:
    """Map modality values to uint8 grey with the DICOM linear VOI function."""
    c, w = window.center, max(window.width, 1.0)
    lo = c - 0.5 - (w - 1.0) / 2.0
    scaled = (values - (c - 0.5)) / (w - 1.0) + 0.5 if w > 1.0 else (values > lo).astype(float)
    out = np.clip(scaled, 0.0, 1.0) * 255.0
    if invert:
        out = 255.0 - out
    return out.round().astype(np.uint8)


def render_grey(
    ds: Dataset, values: np.ndarray, window: Window | None, index: int = 0
) -> np.ndarray:
    """uint8 image of a grayscale frame: the given window, else the file's, else min-max."""
    invert = str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1"
    if window is None and "VOILUTSequence" in ds:
        raw = ds.pixel_array[index] if frame_count(ds) > 1 else ds.pixel_array
        out = np.asarray(apply_voi_lut(raw, ds), dtype=np.float64)
        lo, hi = float(out.min()), float(out.max())
        grey = (out - lo) / ((hi - lo) or 1.0) * 255.0
        grey = 255.0 - grey if invert else grey
        return grey.round().astype(np.uint8)
    if window is None:
        window = file_window(ds)
    if window is None:
        lo, hi = float(values.min()), float(values.max())
        window = Window((lo + hi) / 2.0 + 0.5, max(hi - lo + 1.0, 2.0))
    return apply_window(values, window, invert=invert)


def series_order(datasets: Sequence[Dataset]) -> list[int]:
    """Indices of ``datasets`` in slice order: along the slice normal, else InstanceNumber."""

    def position_key(ds: Dataset) -> float | None:
        pos, ori = ds.get("ImagePositionPatient"), ds.get("ImageOrientationPatient")
        if pos is None or ori is None or len(pos) != 3 or len(ori) != 6:
            return None
        row, col = np.array(ori[:3], dtype=float), np.array(ori[3:], dtype=float)
        return float(np.dot(np.cross(row, col), np.array(pos, dtype=float)))

    keys = [position_key(ds) for ds in datasets]
    if all(k is not None for k in keys) and len(set(keys)) == len(keys):
        return sorted(range(len(datasets)), key=lambda i: keys[i] or 0.0)
    return sorted(
        range(len(datasets)), key=lambda i: int(datasets[i].get("InstanceNumber", 0) or 0)
    )
