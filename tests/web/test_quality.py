"""Picture quality through the SFU, judged by Chromium's own getStats on the receiving page.

Two Chromium pages (fake camera) in one consult: the receiver must reach 640x480 at >= 15 fps
and hold it for 10 s on end at >= 300 kbit/s, within a bound (a wait for a state, not a timing
assertion). Chromium's fake camera content is simple: peer to peer, 640x480 at 20 fps takes
~460-490 kbit/s (bench/quality.py). Before transport-cc feedback (commit 3563cf9) the
publisher's estimate was held near 100-130 kbit/s by two contradicting REMBs: 640x480 at a
thin 120-200 kbit/s for the first seconds at best, then 320x240 at 5-10 fps.
"""

from __future__ import annotations

import asyncio
import warnings
from typing import Any

import pytest
from playwright.async_api import expect

from tests.web.conftest import BASE_ARGS, EXECUTABLE
from tests.web.helpers import WAIT_MS, pass_device_check
from tests.web.netns import HOST_IP, browser_in_namespace, can_cap, capped_namespace
from tests.web.quality_probe import inbound, outbound, wait_quality
from web_client import BUNDLE

ROOM = "quality-1"
BOUND_MS = 60_000
HOLD_S = 10.0
MIN_KBPS = 300


async def join_direct(
    live: Any, new_page: Any, identity: str, role: str, name: str, vga: bool = True
) -> Any:
    """A page through the device check into the call. ``vga``: the app's saved preference
    that keeps the camera at 640x480 (media.js adaptCapture would otherwise go to 1280x720
    once the estimate allows; on this 2-core test machine, loaded by parallel runs, 720p
    encode + decode in two pages did not hold 15 fps for 10 s)."""
    page = await new_page()
    if vga:
        await page.add_init_script("localStorage.setItem('tc.capture', 'vga')")
    token = live.tokens(ROOM, identity, role, name)
    await pass_device_check(page, f"{live.url}/join?token={token}")
    await page.click("#join-btn")
    await expect(page.locator("#screen-call")).to_be_visible(timeout=WAIT_MS)
    return page


async def test_receiver_reaches_vga_at_15_fps(live: Any, new_page: Any) -> None:
    sender = await join_direct(live, new_page, "dr-zhang", "host", "张医生")
    receiver = await join_direct(live, new_page, "dr-li", "clinician", "李医生")
    try:
        await wait_quality(receiver, 640, 480, 15, BOUND_MS, hold_s=HOLD_S, min_kbps=MIN_KBPS)
    except Exception as exc:
        got = await inbound(receiver)
        sent = await outbound(sender)
        raise AssertionError(
            f"receiver never held 640x480@15 at {MIN_KBPS} kbit/s: got {got}, sent {sent}"
        ) from exc
    # the server answered the browser's transport-cc (feedback drives Chromium's estimator)
    answer = await sender.evaluate("() => window.__tc.media.pub.pc.remoteDescription.sdp")
    assert "transport-wide-cc" in answer and "transport-cc" in answer
    assert "goog-remb" not in answer
    assert receiver.js_errors == [] and sender.js_errors == []


CAP_KBPS = 300


async def sender_kbps(sender: Any, window_s: float = 2.0) -> tuple[float, dict[str, Any] | None]:
    """The sender's camera rate over ``window_s`` by Chromium's own outbound stats."""
    first = await outbound(sender)
    await asyncio.sleep(window_s)  # a measuring window, not a wait for a state
    last = await outbound(sender)
    if first is None or last is None:
        return 0.0, last
    return (last["bytes"] - first["bytes"]) * 8 / 1000 / window_s, last


@pytest.mark.parametrize("start", ["low", "high"])
async def test_capped_subscriber_is_moved_to_the_low_layer(
    start_server: Any, new_page: Any, browser: Any, start: str
) -> None:
    """The receiver's downlink is capped at 300 kbit/s (network namespace + tc tbf): the SFU
    keeps it on the camera_low layer (a new subscription starts there, and a padding probe
    does not find room for the high one) and its picture keeps moving. Started on the high
    layer instead (`auto_layer_start = "high"`), the subscriber is switched down to it.

    The high layer only fails to fit while the sender's encoder sends more than the cap. On a
    loaded 2-core machine Chromium may find itself CPU-limited and drop the high layer to
    ~200 kbit/s; then the high layer fits and is the right choice. So the judge is the
    invariant: within a bound the subscriber is on the low layer, or on the high one while
    the sender's camera (Chromium's outbound stats) fits the cap."""
    reason = can_cap()
    if reason is not None:
        pytest.skip(f"capped link: {reason}")
    live = await start_server(media={"auto_layer_start": start})
    from aiohttp import web
    from playwright.async_api import async_playwright

    from media.service import MEDIA

    sender = await join_direct(live, new_page, "dr-tx", "host", "王医生")
    with capped_namespace(CAP_KBPS):
        site = web.TCPSite(live.server.runner, HOST_IP, live.server.port)
        await site.start()
        origin = f"http://{HOST_IP}:{live.server.port}"
        async with (
            async_playwright() as pw,
            browser_in_namespace(pw, EXECUTABLE, BASE_ARGS, origin) as rx_browser,
        ):
            context = await rx_browser.new_context(locale="zh-CN")
            await context.grant_permissions(["camera", "microphone"])
            receiver = await context.new_page()
            token = live.tokens(ROOM, "dr-rx", "clinician", "李医生")
            # the app's bundle crosses the capped link too: allow three times its transfer
            bundle = max(BUNDLE.stat().st_size, 1)
            load_ms = WAIT_MS + 3 * bundle * 8 * 1000 // (CAP_KBPS * 1000)
            await pass_device_check(receiver, f"{origin}/join?token={token}", load_ms)
            await receiver.click("#join-btn")
            await expect(receiver.locator("#screen-call")).to_be_visible(timeout=WAIT_MS)

            media = live.app[MEDIA]
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 90

            def layer() -> tuple[str, int] | None:
                room = media.rooms.get(ROOM)
                session = room.sessions.get("dr-rx") if room else None
                sub = session.subscriptions.get(("dr-tx", "camera")) if session else None
                return (sub.layer, sub.layer_switches) if sub else None

            async def settled() -> tuple[str, int]:
                """Bounded wait until the subscriber is on a layer that fits its link."""
                while True:
                    state = layer()
                    if state is not None and state[0] == "low":
                        return state
                    if state is not None:
                        rate, stats = await sender_kbps(sender)
                        if rate <= CAP_KBPS:
                            return state
                    else:
                        rate, stats = 0.0, None
                    assert loop.time() < deadline, (
                        f"kept on a layer that does not fit: {state}, sender {rate:.0f} kbit/s "
                        f"{stats}"
                    )
                    await asyncio.sleep(0.5)

            state = await settled()
            if start == "high" and state[0] == "low":
                assert state[1] >= 1, state  # the switch down is what moved it
            elif start == "high":
                warnings.warn(
                    "the sender's camera fit the cap: the switch down was not exercised",
                    stacklevel=1,
                )
            # the picture plays: frames keep being decoded at the receiver
            while (first := await inbound(receiver)) is None:
                assert loop.time() < deadline, "no video at the receiver"
                await asyncio.sleep(0.5)
            while (now := await inbound(receiver)) is None or now["frames"] < first["frames"] + 30:
                assert loop.time() < deadline, f"no frames at the receiver: {first} {now}"
                await asyncio.sleep(0.5)
            await settled()
            await context.close()
        await site.stop()
    assert sender.js_errors == []
