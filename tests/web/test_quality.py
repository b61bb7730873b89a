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
from typing import Any

import pytest
from playwright.async_api import expect

from tests.web.conftest import BASE_ARGS, EXECUTABLE
from tests.web.helpers import WAIT_MS, pass_device_check
from tests.web.netns import HOST_IP, browser_in_namespace, can_cap, capped_namespace
from tests.web.quality_probe import inbound, outbound, wait_quality

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


@pytest.mark.parametrize("start", ["low", "high"])
async def test_capped_subscriber_is_moved_to_the_low_layer(
    start_server: Any, new_page: Any, browser: Any, start: str
) -> None:
    """The receiver's downlink is capped at 300 kbit/s (network namespace + tc tbf): the SFU
    keeps it on the camera_low layer (a new subscription starts there, and a padding probe
    does not find room for the high one) and its picture keeps moving. Started on the high
    layer instead (`auto_layer_start = "high"`), the subscriber is switched down to it."""
    reason = can_cap()
    if reason is not None:
        pytest.skip(f"capped link: {reason}")
    live = await start_server(media={"auto_layer_start": start})
    from aiohttp import web
    from playwright.async_api import async_playwright

    from media.service import MEDIA

    sender = await join_direct(live, new_page, "dr-tx", "host", "王医生")
    with capped_namespace(300):
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
            await pass_device_check(receiver, f"{origin}/join?token={token}")
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

            while (state := layer()) is None or state[0] != "low":
                assert loop.time() < deadline, f"never on the low layer: {state}"
                await asyncio.sleep(0.5)
            # the low layer plays: frames keep being decoded at the receiver
            while (first := await inbound(receiver)) is None:
                assert loop.time() < deadline, "no video at the receiver"
                await asyncio.sleep(0.5)
            while (now := await inbound(receiver)) is None or now["frames"] < first["frames"] + 30:
                assert loop.time() < deadline, f"no frames on the low layer: {first} {now}"
                await asyncio.sleep(0.5)
            assert layer() is not None and layer()[0] == "low"  # type: ignore[index]
            if start == "high":  # the switch down is what moved it
                assert layer()[1] >= 1, layer()  # type: ignore[index]
            await context.close()
        await site.stop()
    assert sender.js_errors == []
