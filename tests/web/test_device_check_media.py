"""The device check tests the real media path: a WebRTC loopback through the server (rtc:echo)."""

from __future__ import annotations

from typing import Any

from playwright.async_api import expect

from rtc_server.keys import SIGNALING
from tests.web.helpers import (
    WAIT_MS,
    accessibility_violations,
    media_result,
    pass_device_check,
)


async def test_device_check_reports_bitrate_and_transport_in_both_languages(
    live: Any, new_page: Any, shot: Any
) -> None:
    echo = live.app[SIGNALING].handlers["rtc:echo"].handler.__self__
    en = await new_page()
    await pass_device_check(en, f"{live.url}/join?token={live.tokens('r-m', 'pat-1', 'patient')}")
    got = await media_result(en)
    print("device check, direct:", got)  # figures, with -s
    assert got["state"] == "ok", got
    # the echoed camera came back over a direct UDP path, with a real bitrate
    assert got["transport"] == "udp" and int(got["kbps"]) > 0, got
    assert int(got["width"]) > 0
    assert "Video through the server:" in got["text"] and "Mbit/s" in got["text"]
    assert "direct (UDP)" in got["text"]
    await shot(en, "device-check-media-en")
    assert await accessibility_violations(en) == []

    zh = await new_page(lang="zh-CN")
    token = live.tokens("r-m", "pat-2", "patient", "王芳")
    await pass_device_check(zh, f"{live.url}/join?token={token}")
    got = await media_result(zh)
    assert got["state"] == "ok", got
    assert "经服务器的视频" in got["text"] and "直连" in got["text"], got
    await shot(zh, "device-check-media-zh")

    # each loopback ended with its measurement (rtc:echo_stop): nothing left on the server
    await expect(zh.locator("#join-btn")).to_be_enabled(timeout=WAIT_MS)
    for _ in range(50):
        if not echo.sessions:
            break
        await zh.wait_for_timeout(100)
    assert echo.sessions == {}
