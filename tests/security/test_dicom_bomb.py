"""A deflated DICOM that inflates a thousandfold is refused before pydicom inflates it."""

from __future__ import annotations

import struct
import urllib.error
import urllib.parse
import urllib.request
import zlib
from io import BytesIO
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import DeflatedExplicitVRLittleEndian, generate_uid

from tests.helpers import serve_process

INFLATED = 600 * 1024 * 1024  # what the bomb inflates to


def deflate_bomb() -> bytes:
    """A Part 10 file whose deflated body holds a 600 MiB run of zero pixels."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, generate_uid()
    ds.SpecificCharacterSet, ds.Modality, ds.PatientName = "ISO_IR 192", "OT", "王^小明"
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.BitsAllocated = 1024, 1024, 1, 8
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 7, 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    head = buf.getvalue()
    # the deflated part starts after the file meta: re-deflate that body with the pixels
    from pydicom.filereader import _read_file_meta_info, read_preamble

    fp = BytesIO(head)
    read_preamble(fp, False)
    _read_file_meta_info(fp)
    start = fp.tell()
    body = zlib.decompress(head[start:], -zlib.MAX_WBITS)
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    parts = [head[:start], packer.compress(body)]
    parts.append(packer.compress(b"\xe0\x7f\x10\x00OB\x00\x00" + struct.pack("<I", INFLATED)))
    zeros = bytes(16 << 20)
    for _ in range(INFLATED // len(zeros)):
        parts.append(packer.compress(zeros))
    parts.append(packer.flush())
    return b"".join(parts)


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_deflate_bomb_is_refused_without_inflating(tmp_path: Path) -> None:
    bomb = deflate_bomb()
    assert len(bomb) < 2 * 1024 * 1024
    with serve_process(tmp_path / "data") as (proc, port, link):
        token = urllib.parse.parse_qs(urllib.parse.urlsplit(link).query)["token"][0]
        base = f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(f"{base}/healthz", timeout=30):
            pass
        before = _peak_rss_kib(proc.pid)
        req = urllib.request.Request(
            f"{base}/api/rooms/demo/documents?name=bomb.dcm",
            data=bomb,
            method="POST",
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/dicom"},
        )
        try:
            urllib.request.urlopen(req, timeout=120)
            raise AssertionError("the bomb was accepted")
        except urllib.error.HTTPError as exc:
            status, body = exc.code, exc.read().decode()
        assert status == 413 and "inflates" in body, (status, body)
        grown_mib = (_peak_rss_kib(proc.pid) - before) / 1024
        # the server never held the inflated body (600 MiB) nor a pixel copy of it
        assert grown_mib < 200, f"peak RSS grew {grown_mib:.0f} MiB"
        assert proc.poll() is None
