"""Upload validation by content, bounds, content-addressed storage, DICOM and PDF ingestion."""

from __future__ import annotations

import os
import time
import zlib
from io import BytesIO
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from annotation import dicom
from annotation.errors import DocumentTooLarge, InvalidDocument, UnsupportedDocument
from annotation.frames import FrameLoader
from annotation.storage import BlobStore
from annotation.uploads import UploadLimits, ingest, sniff


def png_bytes(w: int = 32, h: int = 24, colour: tuple[int, int, int] = (10, 200, 30)) -> bytes:
    buf = BytesIO()
    Image.new("RGB", (w, h), colour).save(buf, format="PNG")
    return buf.getvalue()


def tiny_pdf(pages: int = 2) -> bytes:
    """A minimal valid PDF (hand-built, no extra library): blank A6 pages."""
    objs = ["<< /Type /Catalog /Pages 2 0 R >>"]
    kids = " ".join(f"{3 + i} 0 R" for i in range(pages))
    objs.append(f"<< /Type /Pages /Kids [{kids}] /Count {pages} >>")
    for _ in range(pages):
        objs.append("<< /Type /Page /Parent 2 0 R /MediaBox [0 0 298 420] >>")
    out = b"%PDF-1.4\n"
    offsets = []
    for i, body in enumerate(objs, start=1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n{body}\nendobj\n".encode()
    xref = len(out)
    out += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return out


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "documents")


def test_sniff_by_content_not_name():
    assert sniff(png_bytes()) == "png"
    assert sniff(Path(get_testdata_file("CT_small.dcm")).read_bytes()) == "dicom"
    assert sniff(tiny_pdf()) == "pdf"
    with pytest.raises(UnsupportedDocument):
        sniff(b"GIF89a....")
    with pytest.raises(UnsupportedDocument):
        sniff(b"<html>not an image</html>")


def test_png_is_stored_content_addressed(store: BlobStore):
    data = png_bytes()
    doc = ingest([("scan.png", data)], store)
    assert (doc.kind, doc.frames, doc.width, doc.height) == ("image", 1, 32, 24)
    assert store.get(doc.sha256) == data
    assert store.path(doc.sha256).parent.name == doc.sha256[:2]
    assert ingest([("again.png", data)], store).sha256 == doc.sha256
    assert doc.pixel_spacing is None


def test_only_old_untouched_blobs_are_deleted(store: BlobStore):
    kept, orphan, fresh = (store.put(bytes([i]) * 10) for i in range(3))
    old = time.time() - 7200
    for digest in (kept, orphan, fresh):
        os.utime(store.path(digest), (old, old))
    store.put(bytes([2]) * 10)  # stored again (a new upload of the same file): recent again
    (store.root / kept[:2] / ".tmp-x").write_bytes(b"a write in progress")
    assert sorted(store.digests()) == sorted([kept, orphan, fresh])
    candidates = store.unused_candidates(grace_s=3600)
    assert sorted(candidates) == sorted([kept, orphan])
    store.put(bytes([0]) * 10)  # re-uploaded between the listing and the deletion
    assert store.delete_unused(candidates, grace_s=3600) == 1
    assert not store.exists(orphan)
    assert store.exists(kept) and store.exists(fresh)
    assert (store.root / kept[:2] / ".tmp-x").exists()
    assert store.delete_unused([fresh], grace_s=3600, now=time.time() + 7200) == 1


def test_truncated_png_is_refused(store: BlobStore):
    data = png_bytes(200, 200)
    with pytest.raises(InvalidDocument):
        ingest([("bad.png", data[: len(data) // 2])], store)


@pytest.mark.parametrize("side", [30000, 8000])  # over Pillow's own bound / over ours (40 M)
def test_decompression_bomb_is_refused_before_decoding(store: BlobStore, side: int):
    # a PNG header claiming side x side pixels, with a tiny compressed body
    width = height = side
    raw = zlib.compress(b"\x00" * 100)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")
        )

    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")
    with pytest.raises(DocumentTooLarge):
        ingest([("bomb.png", bomb)], store)


def test_byte_and_file_bounds(store: BlobStore):
    limits = UploadLimits(max_file_bytes=1000)
    with pytest.raises(DocumentTooLarge):
        ingest([("big.png", png_bytes(300, 300, (1, 2, 3)) + b"\x00" * 2000)], store, limits)
    with pytest.raises(InvalidDocument):
        ingest([("a.png", png_bytes()), ("b.png", png_bytes())], store)


def test_fake_dicom_is_refused(store: BlobStore):
    fake = b"\x00" * 128 + b"DICM" + b"garbage" * 20
    with pytest.raises(InvalidDocument):
        ingest([("fake.dcm", fake)], store)


def test_ct_small_metadata_and_hu(store: BlobStore):
    data = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    doc = ingest([("ct.dcm", data)], store)
    assert doc.kind == "dicom" and doc.modality == "CT" and doc.frames == 1
    assert doc.pixel_spacing == pytest.approx([0.661468, 0.661468])
    assert doc.spacing_source == "PixelSpacing"
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    assert doc.frame_index[0]["sop_uid"] == ds.SOPInstanceUID
    hu = dicom.frame_pixels(ds, 0)
    expected = ds.pixel_array.astype(float) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert np.allclose(hu, expected)


def test_dicom_pixel_bound(store: BlobStore):
    data = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    with pytest.raises(DocumentTooLarge):
        ingest([("ct.dcm", data)], store, UploadLimits(max_total_pixels=100))


def test_multiframe_dicom(store: BlobStore):
    path = get_testdata_file("rtdose.dcm")
    doc = ingest([("dose.dcm", Path(path).read_bytes())], store)
    ds = pydicom.dcmread(path)
    assert doc.frames == int(ds.NumberOfFrames) > 1
    assert [f["frame"] for f in doc.frame_index] == list(range(doc.frames))


def test_series_sorted_along_the_normal(store: BlobStore, tmp_path: Path):
    base = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    files = []
    for z, inst in ((30.0, 1), (10.0, 2), (20.0, 3)):
        ds = base.copy()
        ds.ImagePositionPatient = [0.0, 0.0, z]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.InstanceNumber = inst
        ds.SOPInstanceUID = f"1.2.3.{inst}"
        buf = BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        files.append((f"s{inst}.dcm", buf.getvalue()))
    doc = ingest(files, store)
    assert doc.frames == 3
    assert [f["sop_uid"] for f in doc.frame_index] == ["1.2.3.2", "1.2.3.3", "1.2.3.1"]
    other = base.copy()
    other.SeriesInstanceUID = "9.9.9"
    buf = BytesIO()
    other.save_as(buf, enforce_file_format=True)
    with pytest.raises(InvalidDocument):
        ingest([*files, ("x.dcm", buf.getvalue())], store)


def test_imager_pixel_spacing_and_uncalibrated():
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    del ds.PixelSpacing
    assert dicom.pixel_spacing(ds) == (None, None)
    ds.ImagerPixelSpacing = [0.2, 0.25]
    assert dicom.pixel_spacing(ds) == ((0.2, 0.25), "ImagerPixelSpacing")


def test_windows_and_presets():
    values = np.array([[-1000.0, -600.0, 40.0, 1000.0]])
    lung = dicom.apply_window(values, dicom.WINDOW_PRESETS["lung"])
    assert lung[0, 0] < lung[0, 1] < lung[0, 2] <= lung[0, 3]
    brain = dicom.apply_window(values, dicom.WINDOW_PRESETS["brain"])
    assert brain[0, 0] == 0 and brain[0, 3] == 255 and 100 < brain[0, 2] < 155
    assert set(dicom.WINDOW_PRESETS) == {"soft_tissue", "lung", "bone", "brain"}


def test_mr_file_window_is_used(store: BlobStore):
    path = get_testdata_file("MR_small.dcm")
    ds = pydicom.dcmread(path)
    assert dicom.file_window(ds) == dicom.Window(600.0, 1600.0)
    doc = ingest([("mr.dcm", Path(path).read_bytes())], store)
    from annotation.documents import DocumentInfo

    info = DocumentInfo(
        id="x" * 32,
        room="r",
        uploaded_by="u",
        uploaded_by_name="U",
        uploaded_at=0.0,
        **{
            k: getattr(doc, k)
            for k in (
                "name",
                "kind",
                "mime",
                "sha256",
                "size",
                "frames",
                "width",
                "height",
                "modality",
                "pixel_spacing",
                "spacing_source",
                "series_uid",
                "frame_index",
            )
        },
    )
    img = FrameLoader(store).render(info, 0)
    assert img.size == (64, 64) and img.mode == "RGB"


def test_pdf_pages_are_rendered(store: BlobStore):
    doc = ingest([("report.pdf", tiny_pdf(2))], store, UploadLimits(pdf_dpi=72))
    assert doc.kind == "pdf" and doc.frames == 2
    assert (doc.width, doc.height) == (298, 420)
    page = Image.open(BytesIO(store.get(doc.frame_index[1]["blob"])))
    assert page.size == (298, 420)
    with pytest.raises(DocumentTooLarge):
        ingest([("report.pdf", tiny_pdf(3))], store, UploadLimits(max_pdf_pages=2))
    with pytest.raises(InvalidDocument):
        ingest([("broken.pdf", b"%PDF-1.4\nthis is not a pdf")], store)
