"""Page-side probes of received video quality (Chromium's own getStats), shared by the quality
test and bench/quality.py."""

from __future__ import annotations

import asyncio
from typing import Any

# The inbound video stream with the most bytes on a peer connection (`pc`: a JS expression),
# or (`publisher` given) the one carrying that publisher's camera in the app's subscriber PC.
INBOUND_JS = """
async ([pcExpr, publisher]) => {
  const pc = eval(pcExpr);
  if (!pc) return null;
  let mids = null;
  if (publisher) {
    mids = new Set();
    window.__tc.media.midInfo.forEach((v, mid) => {
      if (v.publisher === publisher && v.source === 'camera') mids.add(mid);
    });
  }
  const stats = await pc.getStats();
  let best = null;
  stats.forEach((r) => {
    const video = r.type === 'inbound-rtp' && r.kind === 'video' && (!mids || mids.has(r.mid));
    if (video && (!best || r.bytesReceived > best.bytesReceived)) best = r;
  });
  if (!best) return null;
  return {
    t: performance.now() / 1000,
    width: best.frameWidth || 0, height: best.frameHeight || 0,
    fps: best.framesPerSecond || 0, bytes: best.bytesReceived || 0,
    frames: best.framesDecoded || 0, freezes: best.freezeCount || 0,
    mid: best.mid || null,
  };
}
"""

# The outbound camera stream of a publisher connection: what the encoder does and why.
OUTBOUND_JS = """
async (pcExpr) => {
  const pc = eval(pcExpr);
  if (!pc) return null;
  const stats = await pc.getStats();
  let best = null, bwe = null;
  stats.forEach((r) => {
    const video = r.type === 'outbound-rtp' && r.kind === 'video';
    if (video && (!best || r.bytesSent > best.bytesSent)) best = r;
    if (r.type === 'candidate-pair' && r.nominated && r.availableOutgoingBitrate)
      bwe = r.availableOutgoingBitrate;
  });
  if (!best) return null;
  return {
    width: best.frameWidth || 0, height: best.frameHeight || 0, fps: best.framesPerSecond || 0,
    bytes: best.bytesSent || 0, limitation: best.qualityLimitationReason || null,
    target: best.targetBitrate || null, bwe,
  };
}
"""

SFU_SUB = "window.__tc && window.__tc.media && window.__tc.media.sub && window.__tc.media.sub.pc"
SFU_PUB = "window.__tc && window.__tc.media && window.__tc.media.pub && window.__tc.media.pub.pc"

# True once the received video has been at least w x h at >= fps for `hold` seconds on end,
# at an average of >= kbps over those seconds.
REACHED_JS = """
async ([pcExpr, w, h, fps, hold, kbps]) => {
  const s = await (INBOUND)([pcExpr, null]);
  const ok = !!s && s.width >= w && s.height >= h && s.fps >= fps;
  const now = performance.now() / 1000;
  const since = window.__qualitySince;
  if (!ok) { window.__qualitySince = null; return false; }
  if (!since) { window.__qualitySince = {t: now, bytes: s.bytes}; return false; }
  if (now - since.t < hold) return false;
  const rate = (s.bytes - since.bytes) * 8 / 1000 / (now - since.t);
  if (rate >= kbps) return true;
  window.__qualitySince = {t: now, bytes: s.bytes};  // a window too thin: start another
  return false;
}
""".replace("INBOUND", INBOUND_JS.strip())


async def inbound(
    page: Any, pc_expr: str = SFU_SUB, publisher: str | None = None
) -> dict[str, Any] | None:
    return await page.evaluate(INBOUND_JS, [pc_expr, publisher])


async def outbound(page: Any, pc_expr: str = SFU_PUB) -> dict[str, Any] | None:
    return await page.evaluate(OUTBOUND_JS, pc_expr)


async def wait_quality(
    page: Any,
    width: int,
    height: int,
    fps: float,
    timeout_ms: int,
    hold_s: float = 0.0,
    min_kbps: float = 0.0,
    pc_expr: str = SFU_SUB,
) -> None:
    """Bounded wait (polling Chromium's getStats) until the received video has held the mark
    for ``hold_s`` seconds on end, at ``min_kbps`` on average over them; TimeoutError if not.

    Polled from here with ``evaluate`` (which awaits the page's promise): Playwright's
    ``wait_for_function`` takes the promise an async predicate returns as truthy at once.
    """
    await page.evaluate("() => { window.__qualitySince = null; }")
    arg = [pc_expr, width, height, fps, hold_s, min_kbps]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_ms / 1000
    while not await page.evaluate(REACHED_JS, arg):
        if loop.time() > deadline:
            raise TimeoutError(f"received video never held {width}x{height}@{fps}")
        await asyncio.sleep(0.5)
