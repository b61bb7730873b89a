"""Teaching rounds in the browser: an observer raises a hand with a Chinese question, the host
promotes it, the observer's camera reaches the host; demoted, the observer stops publishing."""

from __future__ import annotations

import re
from typing import Any

from playwright.async_api import expect

from tests.web.helpers import (
    WAIT_MS,
    accessibility_violations,
    pass_device_check,
    wait_video_playing,
)

QUESTION = "请问ST段抬高怎么判断？"  # noqa: RUF001 (full-width question mark)

# what the observer's page sends: live local tracks and senders with a track
PUBLISHING_JS = """
() => {
  const m = window.__tc.media;
  const live = m.local.getTracks().filter((t) => t.readyState === 'live').length;
  const tr = (m.pub && m.pub.transceivers) || {};
  const sending = Object.values(tr).filter((t) => t.sender.track).length;
  return {live, sending};
}
"""


async def test_raise_hand_promote_publish_demote(
    live: Any, new_page: Any, shot: Any, requests_seen: Any
) -> None:
    room = "round-ui"
    host = await new_page()
    await pass_device_check(
        host, f"{live.url}/join?token={live.tokens(room, 'dr-teach', 'host', 'Dr Chen')}"
    )
    await host.click("#join-btn")
    await expect(host.locator("#screen-call")).to_be_visible(timeout=WAIT_MS)

    # the observer (zh-CN page): no camera or microphone needed to watch
    observer = await new_page(lang="zh-CN")
    await observer.goto(f"{live.url}/join?token={live.tokens(room, 'vil-1', 'observer', '王医生')}")
    await expect(observer.locator("#status-camera")).to_have_attribute(
        "data-state", "skipped", timeout=WAIT_MS
    )
    await expect(observer.locator("#join-btn")).to_be_enabled(timeout=WAIT_MS)
    await observer.click("#join-btn")
    entry = host.locator(".lobby-entry[data-identity=vil-1]")
    await entry.locator("[data-action=admit]").click(timeout=WAIT_MS)
    await expect(observer.locator("#screen-call")).to_be_visible(timeout=WAIT_MS)

    # the host sees an (empty) hands list once an observer is in; the observer a raise button
    count = host.locator("#hands-count")
    await expect(count).to_have_text("0", timeout=WAIT_MS)
    status = observer.locator("#teach-status")
    await expect(status).to_have_attribute("data-state", "watching", timeout=WAIT_MS)
    assert (await observer.evaluate(PUBLISHING_JS)) == {"live": 0, "sending": 0}
    await expect(observer.locator("#teach-raise")).to_have_text("举手")
    await observer.fill("#teach-question", QUESTION)
    await observer.click("#teach-raise")
    await expect(status).to_have_attribute("data-state", "raised", timeout=WAIT_MS)
    await expect(status).to_contain_text("您已举手")
    await expect(observer.locator("#teach-lower")).to_be_visible()
    assert await accessibility_violations(observer) == [], "observer, hand raised"
    await shot(observer, "50-teaching-hand-raised-zh")

    # the host sees the hand with the question and a count badge, and promotes it
    hand = host.locator("#hands-list .hand[data-identity=vil-1]")
    await expect(hand).to_contain_text(QUESTION, timeout=WAIT_MS)
    await expect(hand).to_contain_text("王医生")
    await expect(count).to_have_text("1")
    assert await accessibility_violations(host) == [], "host, hands list"
    await shot(host, "51-teaching-hands-host")
    await hand.locator("[data-action=promote]").click()

    # the observer publishes camera and microphone: the host's page plays its video
    await expect(status).to_have_attribute("data-state", "speaking", timeout=WAIT_MS)
    await expect(status).to_contain_text("您正在发言")
    await wait_video_playing(host, ".tile[data-key='p:vil-1'] video")
    await expect(count).to_have_text("0")
    speaker = host.locator("#speakers-list .speaker[data-identity=vil-1]")
    await expect(speaker).to_be_visible()
    published = await observer.evaluate(PUBLISHING_JS)
    assert published["live"] == 2 and published["sending"] >= 2, published
    await expect(observer.locator("#btn-mute")).to_be_enabled()
    await shot(host, "52-teaching-speaker-host")

    # demoted: the observer's page stops sending and releases the devices, and says so
    await speaker.locator("[data-action=demote]").click()
    await expect(status).to_have_attribute("data-state", "watching", timeout=WAIT_MS)
    await expect(status).to_contain_text("摄像头和麦克风已关闭")
    await observer.wait_for_function(
        f"() => {{ const p = ({PUBLISHING_JS})(); return p.live === 0 && p.sending === 0; }}",
        timeout=WAIT_MS,
    )
    await expect(observer.locator("#btn-mute")).to_be_disabled()
    await expect(host.locator("#speakers-list")).to_have_count(0, timeout=WAIT_MS)
    await expect(observer.locator("#teach-raise")).to_be_visible()
    # the host's tile of the former speaker shows the camera off
    await expect(host.locator(".tile[data-key='p:vil-1']")).to_have_class(
        re.compile(r"\bno-video\b"), timeout=WAIT_MS
    )
    assert await accessibility_violations(observer) == [], "observer, demoted"
    await shot(observer, "53-teaching-demoted-zh")
    await observer.click("#elderly-switch")  # large text: still one labelled field and button
    await expect(observer.get_by_label("您的问题（可不填）")).to_be_visible()  # noqa: RUF001
    assert await accessibility_violations(observer) == [], "observer, elderly mode"
    await shot(observer, "54-teaching-elderly-zh")

    # a second question, promoted again: the same publisher connection sends new tracks
    await observer.click("#teach-raise")
    await hand.locator("[data-action=promote]").click(timeout=WAIT_MS)
    await expect(status).to_have_attribute("data-state", "speaking", timeout=WAIT_MS)
    await host.evaluate("() => { delete window.__frames; }")
    await wait_video_playing(host, ".tile[data-key='p:vil-1'] video")
    await speaker.locator("[data-action=demote]").click(timeout=WAIT_MS)
    await expect(status).to_have_attribute("data-state", "watching", timeout=WAIT_MS)
    assert host.js_errors == [] and observer.js_errors == []
    assert requests_seen.outside() == []
