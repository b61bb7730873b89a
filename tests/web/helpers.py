"""Page-side probes shared by the browser tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from playwright.async_api import expect

WAIT_MS = 15_000

# Draw a <video> into a small canvas: mean brightness and a hash of the pixels.
SNAPSHOT_JS = """
(el) => {
  if (!el || el.readyState < 2 || !el.videoWidth) return null;
  const c = document.createElement('canvas');
  c.width = 64; c.height = 48;
  const g = c.getContext('2d');
  g.drawImage(el, 0, 0, 64, 48);
  const d = g.getImageData(0, 0, 64, 48).data;
  let sum = 0, hash = 0;
  for (let i = 0; i < d.length; i += 4) {
    sum += d[i] + d[i + 1] + d[i + 2];
    hash = (hash * 31 + d[i] + d[i + 1] * 7 + d[i + 2] * 13) >>> 0;
  }
  return {mean: sum / (d.length / 4 * 3), hash, w: el.videoWidth, h: el.videoHeight};
}
"""

# True once the video shows a picture that is not black and has changed since the first look.
PLAYING_JS = """
([selector, key]) => {
  const el = document.querySelector(selector);
  const snap = (SNAPSHOT)(el);
  if (!snap || snap.mean < 8) return false;
  window.__frames = window.__frames || {};
  const first = window.__frames[key];
  if (!first) { window.__frames[key] = snap; return false; }
  return first.hash !== snap.hash;
}
""".replace("SNAPSHOT", SNAPSHOT_JS.strip())


async def wait_video_playing(page: Any, selector: str, timeout_ms: int = 30_000) -> dict[str, Any]:
    """Wait until the <video> at `selector` shows advancing, non-black frames; its snapshot."""
    await page.wait_for_function(
        PLAYING_JS, arg=[selector, selector], timeout=timeout_ms, polling=250
    )
    return await page.eval_on_selector(selector, SNAPSHOT_JS)


async def pass_device_check(page: Any, url: str, load_ms: int = WAIT_MS) -> None:
    """Open a join link and pass the device check with the fake devices (``load_ms``: how
    long the app may take to load, longer on a capped link)."""
    await page.goto(url)
    await expect(page.locator("#status-camera")).to_be_attached(timeout=load_ms)
    for check in ("camera", "microphone", "connection"):
        await expect(page.locator(f"#status-{check}")).to_have_attribute(
            "data-state", "ok", timeout=WAIT_MS
        )
    await expect(page.locator("#join-btn")).to_be_enabled(timeout=WAIT_MS)
    # the fake microphone beeps: the level meter must have moved
    await page.wait_for_function(
        "() => Number(document.querySelector('#mic-meter').dataset.peak || 0) > 0",
        timeout=WAIT_MS,
    )


MEDIA_DONE_JS = """
() => ['ok', 'failed'].includes(document.querySelector('#media-result').dataset.state)
"""


async def media_result(page: Any, timeout_ms: int = 40_000) -> dict[str, str]:
    """Wait for the device check's media loopback verdict (#media-result): its data
    attributes (state, kbps, transport, relayProtocol, width, height) and shown text."""
    await page.wait_for_function(MEDIA_DONE_JS, timeout=timeout_ms, polling=250)
    data = await page.locator("#media-result").evaluate(
        "(el) => ({...el.dataset, text: el.textContent})"
    )
    return dict(data)


AXE = (
    Path(__file__).resolve().parents[2] / "web_client" / "node_modules" / "axe-core" / "axe.min.js"
)


async def accessibility_violations(page: Any) -> list[str]:
    """WCAG 2 A/AA violations axe-core finds on the page (the local devDependency, injected
    through the debugging protocol, so the page's CSP is untouched)."""
    if not await page.evaluate("() => typeof window.axe !== 'undefined'"):
        await page.evaluate(AXE.read_text(encoding="utf-8"))
    result = await page.evaluate(
        """async () => {
          const only = {type: 'tag', values: ['wcag2a', 'wcag2aa']};
          const r = await axe.run(document, {runOnly: only});
          return r.violations.map(v => `${v.id} (${v.impact}): ` +
            v.nodes.slice(0, 3).map(n => n.target.join(' ')).join(', '));
        }"""
    )
    return list(result)
