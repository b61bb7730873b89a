"""A large PDF does not hold pdfium's shared lock while it renders: a small upload that comes
in meanwhile finishes first."""

from __future__ import annotations

import asyncio
from io import BytesIO

import pypdfium2 as pdfium

from annotation import uploads
from tests.annotation.conftest import upload
from tests.helpers import wait_until


def pdf(pages: int, size: tuple[float, float]) -> bytes:
    doc = pdfium.PdfDocument.new()
    for _ in range(pages):
        doc.new_page(*size)
    out = BytesIO()
    doc.save(out)
    doc.close()
    return out.getvalue()


async def test_small_pdf_is_not_queued_behind_a_large_one(live):
    big, small = pdf(40, (842, 1191)), pdf(1, (200, 200))  # A3 pages, 1684x2382 px each
    big_upload = asyncio.ensure_future(upload(live, "ward", "dr-host", "host", big, "大报告.pdf"))
    # the large one is rendering (it holds the lock now and then)
    await wait_until(lambda: uploads._PDFIUM_LOCK.locked() or big_upload.done(), timeout=60)
    status, body = await upload(live, "ward", "dr-host", "host", small, "小.pdf")
    assert status == 201, body
    assert not big_upload.done(), "the small PDF waited for the whole large one"
    status, body = await big_upload
    assert status == 201 and body["document"]["frames"] == 40
