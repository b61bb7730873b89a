"""Property-based fuzzing of the upload parsers and the annotation sync path.

Every input, random or a mutation of a valid file or message, must end in a result or a typed
AnnotationError, and a document under sync must stay intact. CI runs a bounded number of
examples; `FUZZ_EXAMPLES=5000 pytest tests/test_fuzz_parsers.py` runs longer.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from pycrdt import Doc, Map

from annotation.errors import AnnotationError
from annotation.model import annotations_map, new_doc
from annotation.storage import BlobStore
from annotation.sync import SyncEngine, sync_message, update_message
from annotation.uploads import UploadLimits, ingest

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "120"))
# mutated DICOM files make pydicom warn about every malformed value: expected here
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
LIMITS = UploadLimits(
    max_file_bytes=2 * 1024 * 1024,
    max_pixels=2_000_000,
    max_total_pixels=8_000_000,
    max_pdf_pages=3,
    pdf_dpi=36,
)
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 24), (200, 10, 10)).save(out, "PNG")
    return out.getvalue()


def jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 24), (10, 200, 10)).save(out, "JPEG")
    return out.getvalue()


def pdf() -> bytes:
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 72 72] >>",
    ]
    body = b"%PDF-1.4\n"
    offsets = []
    for i, obj in enumerate(objects, 1):
        offsets.append(len(body))
        body += b"%d 0 obj\n" % i + obj + b"\nendobj\n"
    xref = len(body)
    body += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    body += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    body += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return body


def dicom() -> bytes:
    from pydicom.data import get_testdata_file

    return Path(get_testdata_file("CT_small.dcm")).read_bytes()


SEEDS = {"png": png(), "jpeg": jpeg(), "pdf": pdf(), "dicom": dicom()}


@st.composite
def mutated(draw: st.DrawFn, seed: bytes) -> bytes:
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 8))):
        op = draw(st.sampled_from(["flip", "truncate", "insert", "overwrite"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=64))
        elif op == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=16))
            data[pos : pos + len(chunk)] = chunk
    return bytes(data)


upload_bytes = st.binary(max_size=4096) | st.sampled_from(sorted(SEEDS)).flatmap(
    lambda k: mutated(SEEDS[k])
)


def test_seeds_are_accepted(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    for name, data in SEEDS.items():
        doc = ingest([(name, data)], store, LIMITS)
        assert doc.frames >= 1 and doc.width > 0


@pytest.fixture(scope="module")
def blobs(tmp_path_factory: pytest.TempPathFactory) -> BlobStore:
    return BlobStore(tmp_path_factory.mktemp("fuzz-blobs"))


@FUZZ
@given(upload_bytes)
def test_upload_parsers_answer_or_refuse(blobs: BlobStore, data: bytes) -> None:
    try:
        doc = ingest([("upload", data)], blobs, LIMITS)
    except AnnotationError as exc:
        assert str(exc)
    else:
        assert doc.frames >= 1 and doc.width > 0 and doc.height > 0


@FUZZ
@given(st.lists(upload_bytes, min_size=2, max_size=3))
def test_series_uploads_answer_or_refuse(blobs: BlobStore, files: list[bytes]) -> None:
    try:
        ingest([(f"f{i}", d) for i, d in enumerate(files)], blobs, LIMITS)
    except AnnotationError as exc:
        assert str(exc)


def valid_messages() -> list[bytes]:
    """Real sync messages: a step 1, and updates that add and change annotations."""
    author = new_doc(client_id=7)
    updates = []
    author.observe(lambda event: updates.append(event.update))
    marks = annotations_map(author)
    marks["a1"] = Map({"tool": "arrow", "author": "dr", "geometry": [1.0, 2.0, 30.0, 40.0]})
    marks["a2"] = Map({"tool": "length", "author": "dr", "geometry": [5.0, 5.0, 50.0, 5.0]})
    del marks["a1"]
    return [sync_message(0, author.get_state())] + [update_message(u) for u in updates]


MESSAGES = valid_messages()
sync_bytes = st.binary(max_size=512) | st.sampled_from(range(len(MESSAGES))).flatmap(
    lambda i: mutated(MESSAGES[i])
)


@FUZZ
@given(st.lists(sync_bytes, min_size=1, max_size=5), st.booleans())
def test_sync_engine_answers_or_refuses_and_doc_stays_intact(
    messages: list[bytes], can_write: bool
) -> None:
    doc: Doc = new_doc(client_id=1)
    annotations_map(doc)["keep"] = Map({"tool": "text", "author": "host", "text": "baseline"})
    before = doc.get_update()
    engine = SyncEngine(doc, max_message_bytes=4096)
    try:
        for message in messages:
            try:
                outcome = engine.handle(message, can_write=can_write)
            except AnnotationError as exc:
                assert str(exc)
                continue
            assert all(isinstance(r, bytes) for r in outcome.replies)
        # whatever came in, the document still encodes and decodes ...
        copy = Doc()
        copy.apply_update(doc.get_update())
        # ... and a caller without the annotate grant changed nothing at all
        if not can_write:
            assert doc.get_update() == before
            assert annotations_map(copy)["keep"]["text"] == "baseline"
    finally:
        engine.close()
