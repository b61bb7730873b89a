"""Upload validation by content and ingestion into the blob store.

Type comes from magic bytes and a full decode (Pillow with a pixel bound checked before
decoding, pydicom, pypdfium2), never from the file name or the client's content type.
"""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any, Literal

from PIL import Image

from . import dicom
from .errors import DocumentTooLarge, InvalidDocument, UnsupportedDocument
from .storage import BlobStore

Kind = Literal["image", "pdf", "dicom"]
Sniffed = Literal["png", "jpeg", "pdf", "dicom"]

_PDFIUM_LOCK = threading.Lock()  # pdfium is not thread-safe


@dataclass(frozen=True)
class UploadLimits:
    """Bounds applied to every upload."""

    max_file_bytes: int = 64 * 1024 * 1024
    max_total_bytes: int = 512 * 1024 * 1024
    max_files: int = 1000
    max_pixels: int = 40_000_000  # one image or rendered page
    max_total_pixels: int = 400_000_000  # all frames of a DICOM series
    max_pdf_pages: int = 100
    pdf_dpi: float = 144.0


@dataclass
class IngestedDocument:
    """What a validated upload became: stored blobs plus the metadata of the documents row."""

    name: str
    kind: Kind
    mime: str
    sha256: str
    size: int
    frames: int
    width: int
    height: int
    frame_index: list[dict[str, Any]]
    modality: str | None = None
    pixel_spacing: list[float] | None = None
    spacing_source: str | None = None
    series_uid: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def sniff(data: bytes) -> Sniffed:
    """The file type from its leading bytes; UnsupportedDocument otherwise."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith(b"%PDF-"):
        return "pdf"
    if len(data) >= 132 and data[128:132] == b"DICM":
        return "dicom"
    raise UnsupportedDocument("only PNG, JPEG, PDF and DICOM (Part 10) files are accepted")


def _check_image(data: bytes, expected: str, limits: UploadLimits) -> Image.Image:
    try:
        img = Image.open(BytesIO(data))  # parses the header only
    except Image.DecompressionBombError as exc:
        raise DocumentTooLarge(f"image is a decompression bomb: {exc}") from exc
    except Exception as exc:
        raise InvalidDocument(f"image does not parse: {exc}") from exc
    if (img.format or "").lower() != expected:
        raise InvalidDocument(f"content is {img.format}, not {expected}")
    width, height = img.size
    if width <= 0 or height <= 0:
        raise InvalidDocument("image has no pixels")
    if width * height > limits.max_pixels:
        raise DocumentTooLarge(f"image is {width}x{height}, over {limits.max_pixels} pixels")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img.load()
    except DocumentTooLarge:
        raise
    except Exception as exc:
        raise InvalidDocument(f"image does not decode: {exc}") from exc
    return img


def _ingest_image(
    name: str, data: bytes, kind: Sniffed, store: BlobStore, limits: UploadLimits
) -> IngestedDocument:
    img = _check_image(data, kind, limits)
    sha = store.put(data)
    return IngestedDocument(
        name=name,
        kind="image",
        mime=f"image/{kind}",
        sha256=sha,
        size=len(data),
        frames=1,
        width=img.size[0],
        height=img.size[1],
        frame_index=[{"blob": sha, "frame": 0, "width": img.size[0], "height": img.size[1]}],
    )


def _ingest_pdf(name: str, data: bytes, store: BlobStore, limits: UploadLimits) -> IngestedDocument:
    """Render every page to PNG. pdfium is not thread-safe, so its calls hold the shared lock,
    but one page at a time, and the PNG encoding (most of the work) runs outside it: a large
    PDF never keeps other uploads waiting for more than one page's rendering."""
    import pypdfium2 as pdfium

    with _PDFIUM_LOCK:
        try:
            pdf = pdfium.PdfDocument(data)
        except Exception as exc:
            raise InvalidDocument(f"PDF does not open: {exc}") from exc
        pages = len(pdf)
    try:
        if pages <= 0:
            raise InvalidDocument("PDF has no pages")
        if pages > limits.max_pdf_pages:
            raise DocumentTooLarge(f"PDF has {pages} pages, over {limits.max_pdf_pages}")
        rendered: list[bytes] = []
        sizes: list[tuple[int, int]] = []
        for i in range(pages):
            with _PDFIUM_LOCK:
                page = pdf[i]
                w_pt, h_pt = page.get_size()
                scale = limits.pdf_dpi / 72.0
                if w_pt * h_pt * scale * scale > limits.max_pixels:
                    scale = (limits.max_pixels / max(w_pt * h_pt, 1.0)) ** 0.5
                bitmap = page.render(scale=scale)
                img = bitmap.to_pil().convert("RGB")  # a copy: the bitmap is pdfium's
                bitmap.close()
                page.close()
            out = BytesIO()
            img.save(out, format="PNG")
            rendered.append(out.getvalue())
            sizes.append(img.size)
    except (InvalidDocument, DocumentTooLarge):
        raise
    except Exception as exc:
        raise InvalidDocument(f"PDF does not render: {exc}") from exc
    finally:
        with _PDFIUM_LOCK:
            pdf.close()
    sha = store.put(data)
    index = []
    for i, (png, (w, h)) in enumerate(zip(rendered, sizes, strict=True)):
        index.append({"blob": store.put(png), "frame": 0, "page": i, "width": w, "height": h})
    return IngestedDocument(
        name=name,
        kind="pdf",
        mime="application/pdf",
        sha256=sha,
        size=len(data),
        frames=pages,
        width=sizes[0][0],
        height=sizes[0][1],
        frame_index=index,
    )


def _ingest_dicom(
    files: list[tuple[str, bytes]], store: BlobStore, limits: UploadLimits
) -> IngestedDocument:
    datasets = []
    budget = limits.max_total_pixels
    for fname, data in files:
        try:
            ds = dicom.read_dataset(data, max_pixels=budget)
        except InvalidDocument as exc:
            raise InvalidDocument(f"{fname}: {exc.message}") from exc
        budget -= int(ds.Rows) * int(ds.Columns) * dicom.frame_count(ds)
        datasets.append(ds)
    first = datasets[0]
    series = {str(ds.get("SeriesInstanceUID", "")) for ds in datasets}
    if len(datasets) > 1 and len(series) != 1:
        raise InvalidDocument("files of one upload must belong to one DICOM series")
    shapes = {(int(ds.Rows), int(ds.Columns), int(ds.get("SamplesPerPixel", 1))) for ds in datasets}
    if len(shapes) != 1:
        raise InvalidDocument("all images of a series must have the same size")
    order = dicom.series_order(datasets)
    index: list[dict[str, Any]] = []
    digests = [store.put(data) for _, data in files]
    for i in order:
        ds = datasets[i]
        for f in range(dicom.frame_count(ds)):
            index.append(
                {
                    "blob": digests[i],
                    "frame": f,
                    "sop_uid": str(ds.get("SOPInstanceUID", "")),
                    "width": int(ds.Columns),
                    "height": int(ds.Rows),
                }
            )
    spacing, source = dicom.pixel_spacing(first)
    name = (
        files[0][0]
        if len(files) == 1
        else str(first.get("SeriesDescription") or f"series of {len(files)} files")
    )
    return IngestedDocument(
        name=name,
        kind="dicom",
        mime="application/dicom",
        sha256=digests[order[0]],
        size=sum(len(d) for _, d in files),
        frames=len(index),
        width=int(first.Columns),
        height=int(first.Rows),
        frame_index=index,
        modality=str(first.get("Modality", "")) or None,
        pixel_spacing=list(spacing) if spacing else None,
        spacing_source=source,
        series_uid=str(first.get("SeriesInstanceUID", "")) or None,
    )


def ingest(
    files: list[tuple[str, bytes]], store: BlobStore, limits: UploadLimits | None = None
) -> IngestedDocument:
    """Validate one upload (one file, or several DICOM files of one series) and store it.

    Blocking and CPU-bound: call it in a worker thread.
    """
    limits = limits or UploadLimits()
    if not files:
        raise InvalidDocument("no file in the upload")
    if len(files) > limits.max_files:
        raise DocumentTooLarge(f"{len(files)} files, over {limits.max_files}")
    total = 0
    for _, data in files:
        if len(data) > limits.max_file_bytes:
            raise DocumentTooLarge(f"file over {limits.max_file_bytes} bytes")
        total += len(data)
    if total > limits.max_total_bytes:
        raise DocumentTooLarge(f"upload over {limits.max_total_bytes} bytes")
    kinds = [sniff(data) for _, data in files]
    if len(files) > 1:
        if any(k != "dicom" for k in kinds):
            raise InvalidDocument("several files in one upload must all be DICOM of one series")
        return _ingest_dicom(files, store, limits)
    name, data = files[0]
    kind = kinds[0]
    if kind in ("png", "jpeg"):
        return _ingest_image(name, data, kind, store, limits)
    if kind == "pdf":
        return _ingest_pdf(name, data, store, limits)
    return _ingest_dicom(files, store, limits)
