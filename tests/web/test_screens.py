"""Browser screens around the call: refusals, languages, elderly mode, host actions, reconnect."""

from __future__ import annotations

import io
import time
from typing import Any

import aiohttp
from PIL import Image, ImageDraw
from playwright.async_api import expect

from rtc_server.keys import ROOMS, SIGNALING
from tests.helpers import Client
from tests.validators import ffprobe, probe_span
from tests.web.helpers import (
    WAIT_MS,
    accessibility_violations,
    pass_device_check,
    wait_video_playing,
)


def sample_png() -> bytes:
    img = Image.new("RGB", (400, 300), (30, 40, 60))
    ImageDraw.Draw(img).ellipse((120, 80, 280, 220), fill=(200, 200, 210))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


async def test_refusals_languages_and_elderly_mode(
    live: Any, new_page: Any, shot: Any, requests_seen: Any
) -> None:
    """No link, an expired link (server's message shown), zh-CN, elderly mode, and the phone."""
    page = await new_page()
    await page.goto(f"{live.url}/")
    await expect(page.locator("#screen-no-token")).to_be_visible(timeout=WAIT_MS)

    expired = live.tokens("r-exp", "pat-1", "patient", "Wu", now=time.time() - 7200, ttl_s=60)
    await page.goto(f"{live.url}/join?token={expired}")
    await expect(page.locator("#screen-refused")).to_be_visible(timeout=WAIT_MS)
    await expect(page.locator("#message-body")).to_contain_text("expired")
    await expect(page.locator("#server-message")).to_have_attribute("data-code", "token_expired")
    await shot(page, "10-refused-expired")
    assert await accessibility_violations(page) == [], "10-refused-expired"

    # a camera the user blocked: the fix says how to allow it; joining without it works
    blocked = await new_page()
    await blocked.add_init_script(
        """(() => {
          const real = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
          navigator.mediaDevices.getUserMedia = (c) => c && c.video
            ? Promise.reject(new DOMException('denied', 'NotAllowedError'))
            : real(c);
        })()"""
    )
    await blocked.goto(f"{live.url}/join?token={live.tokens('r-cam', 'pat-9', 'patient', 'Ma')}")
    await expect(blocked.locator("#fix-camera")).to_contain_text("blocked", timeout=WAIT_MS)
    await expect(blocked.locator("#status-microphone")).to_have_attribute("data-state", "ok")
    await expect(blocked.locator("#join-btn")).to_be_disabled()
    await shot(blocked, "09-device-check-camera-blocked")
    await blocked.click("#skip-camera")
    await expect(blocked.locator("#status-camera")).to_have_attribute("data-state", "skipped")
    await blocked.click("#join-btn")
    await expect(blocked.locator("#screen-waiting")).to_be_visible(timeout=WAIT_MS)

    # zh-CN, elderly mode on a phone-sized screen, spoken prompts
    phone = await new_page(width=390, height=844, is_mobile=True, has_touch=True)
    token = live.tokens("r-elder", "pat-2", "patient", "王奶奶")
    await pass_device_check(phone, f"{live.url}/join?token={token}")
    await phone.click("#lang-switch")
    await expect(phone.locator("html")).to_have_attribute("lang", "zh-CN")
    await expect(phone.locator("#screen-check h1")).to_have_text("检查摄像头和麦克风")
    await phone.click("#elderly-switch")
    await expect(phone.locator("body")).to_have_class("elderly")
    await shot(phone, "11-device-check-zh-elderly-phone")
    assert await accessibility_violations(phone) == [], "11-device-check-zh-elderly-phone"
    await phone.click("#join-btn")
    await expect(phone.locator("#queue-position")).to_have_text("您排在第 1 位", timeout=WAIT_MS)
    spoken = await phone.evaluate("window.__tcLastSpoken")
    assert spoken and spoken["lang"] == "zh-CN" and "候诊室" in spoken["text"]
    await expect(phone.locator(".edu-item h3").first).to_have_text("视频问诊前的准备")
    await shot(phone, "12-waiting-zh-elderly-phone")
    assert await accessibility_violations(phone) == [], "12-waiting-zh-elderly-phone"
    # keyboard: the card form is reachable and submits with the keyboard alone
    await phone.focus("textarea[name=chief_complaint]")
    await phone.keyboard.type("头晕")
    await phone.focus("#card-send")
    await phone.keyboard.press("Enter")
    await expect(phone.locator("#card-result")).to_have_class("form-result ok", timeout=WAIT_MS)

    # admitted by a doctor: the call view on the phone, still in Chinese and elderly mode
    host = Client(live.url, live.tokens("r-elder", "dr-qian", "host", "钱医生"))
    await host.connect()
    try:
        await host.call("join", {})
        assert (await host.call("lobby:admit", {"identity": "pat-2"}))["ok"]
        await expect(phone.locator("#screen-call")).to_be_visible(timeout=WAIT_MS)
        await expect(phone.locator("#btn-mute")).to_have_text("静音")
        await expect(phone.locator(".participant[data-identity=dr-qian]")).to_contain_text("主持人")
        await shot(phone, "17-call-zh-elderly-phone")
        # Enter that confirms a Chinese IME composition does not send; a plain Enter does
        await phone.locator("#tab-chat").click()
        await phone.fill("#chat-input", "你好")
        await phone.dispatch_event(
            "#chat-input", "keydown", {"key": "Enter", "isComposing": True, "bubbles": True}
        )
        await expect(phone.locator("#chat-input")).to_have_value("你好")
        await phone.press("#chat-input", "Enter")
        await host.next("chat:message", where=lambda m: m["text"] == "你好")
        await expect(phone.locator("#chat-input")).to_have_value("")
        assert await accessibility_violations(phone) == [], "17-call-zh-elderly-phone"
    finally:
        await host.close()

    assert requests_seen.outside() == []
    assert page.js_errors == [] and phone.js_errors == [] and blocked.js_errors == []


async def test_host_actions_reach_the_browser(
    live: Any, new_page: Any, shot: Any, requests_seen: Any
) -> None:
    """Admit, deny, lock, chat, record (consent asked in the browser) and remove from a host
    (Socket.IO client); a locked room refuses newcomers."""
    room = "r-host"
    host = Client(live.url, live.tokens(room, "dr-zhao", "host", "Dr Zhao"))
    await host.connect()
    await host.call("join", {})
    try:
        page = await new_page()
        await pass_device_check(
            page, f"{live.url}/join?token={live.tokens(room, 'pat-3', 'patient', 'Chen')}"
        )
        await page.click("#join-btn")
        await expect(page.locator(".doctor-presence")).to_contain_text(
            "doctor is here", timeout=WAIT_MS
        )
        await host.next(
            "lobby:queue", where=lambda q: any(e["identity"] == "pat-3" for e in q["entries"])
        )
        assert (await host.call("lobby:admit", {"identity": "pat-3"}))["ok"]
        await expect(page.locator("#screen-call")).to_be_visible(timeout=WAIT_MS)

        # a second patient is turned away with a reason
        other = await new_page()
        other_token = live.tokens(room, "pat-5", "patient", "Sun")
        await pass_device_check(other, f"{live.url}/join?token={other_token}")
        await other.click("#join-btn")
        await host.next(
            "lobby:queue", where=lambda q: any(e["identity"] == "pat-5" for e in q["entries"])
        )
        denied = await host.call("lobby:deny", {"identity": "pat-5", "reason": "wrong clinic"})
        assert denied["ok"], denied
        await expect(other.locator("#screen-denied")).to_contain_text(
            "wrong clinic", timeout=WAIT_MS
        )

        assert (await host.call("host:lock", {"locked": True}))["ok"]
        await expect(page.locator("#locked-badge")).to_be_visible(timeout=WAIT_MS)
        assert (await host.call("chat:send", {"text": "Please keep your camera on"}))["ok"]
        await page.locator("#tab-chat").click()
        await expect(page.locator(".chat-msg")).to_contain_text(
            "keep your camera on", timeout=WAIT_MS
        )
        await shot(page, "13-patient-call-locked")
        assert await accessibility_violations(page) == [], "13-patient-call-locked"

        # recording needs the patient's consent, asked in the browser
        started = await host.call("record:start", {"reason": "teaching file"})
        assert started["ok"], started
        await expect(page.locator("#consent-prompt")).to_contain_text("Dr Zhao", timeout=WAIT_MS)
        await shot(page, "18-recording-consent")
        assert await accessibility_violations(page) == [], "18-recording-consent"
        await page.click("#consent-yes")
        await host.next("record:state", where=lambda st: "pat-3" in st.get("consented", []))
        await expect(page.locator("#rec-badge")).to_contain_text("you agreed", timeout=WAIT_MS)
        await page.click("#consent-change")
        await host.next("record:state", where=lambda st: "pat-3" in st.get("declined", []))
        stopped = await host.call("record:stop", {})
        assert stopped["ok"], stopped
        for f in stopped["files"]:  # what the browser's tracks recorded, judged by ffprobe
            assert 0 < probe_span(ffprobe(live.settings.data_dir / "recordings" / f["path"])) < 60
        await expect(page.locator("#rec-badge")).to_have_count(0, timeout=WAIT_MS)

        assert (await host.call("host:remove", {"identity": "pat-3", "reason": "test"}))["ok"]
        await expect(page.locator("#screen-removed")).to_be_visible(timeout=WAIT_MS)
        await expect(page.locator("#screen-removed")).to_contain_text("test")

        late = await new_page()
        await late.goto(f"{live.url}/join?token={live.tokens(room, 'pat-4', 'patient', 'Late')}")
        await expect(late.locator("#server-message")).to_have_attribute(
            "data-code", "room_locked", timeout=WAIT_MS
        )
        await shot(late, "14-refused-locked")
        assert page.js_errors == [] and late.js_errors == [] and other.js_errors == []
    finally:
        await host.close()
    assert requests_seen.outside() == []


async def test_reconnect_restores_media_chat_and_documents(
    live: Any, new_page: Any, shot: Any, requests_seen: Any
) -> None:
    """The server drops one browser's connection: it rejoins with video, chat and the open
    document; then screen sharing and the speaker highlight."""
    room = "r-reco"
    a = await new_page()
    b = await new_page()
    await pass_device_check(a, f"{live.url}/join?token={live.tokens(room, 'dr-a', 'host', 'Dr A')}")
    await a.click("#join-btn")
    await pass_device_check(
        b, f"{live.url}/join?token={live.tokens(room, 'dr-b', 'clinician', 'Dr B')}"
    )
    await b.click("#join-btn")
    await expect(b.locator("#screen-call")).to_be_visible(timeout=WAIT_MS)
    await wait_video_playing(b, ".tile[data-key='p:dr-a'] video")
    await b.locator("#tab-chat").click()
    await b.fill("#chat-input", "before the drop")
    await b.click("#chat-send")
    await expect(b.locator(".chat-msg")).to_contain_text("before the drop", timeout=WAIT_MS)

    # a shared image both have open
    token_a = live.tokens(room, "dr-a", "host", "Dr A")
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{live.url}/api/rooms/{room}/documents?name=xray.png",
            data=sample_png(),
            headers={"Authorization": f"Bearer {token_a}"},
        ) as res,
    ):
        assert res.status == 201, await res.text()
    for page in (a, b):
        await page.locator("#tab-documents").click()
        await page.locator("#doc-list li[data-doc] button").first.click(timeout=WAIT_MS)
        await expect(page.locator("#doc-viewer")).to_be_visible(timeout=WAIT_MS)
    await b.locator("#tab-chat").click()

    # drop b's connection from the server side, as a network loss would
    ns = live.app[SIGNALING]
    sid = live.app[ROOMS].get(room).participants["dr-b"].sid
    await ns.disconnect(sid)
    await expect(b.locator("#call-notice")).to_contain_text("Reconnected", timeout=WAIT_MS)
    await expect(b.locator(".chat-msg")).to_contain_text("before the drop")
    await b.evaluate("delete window.__frames")
    await wait_video_playing(b, ".tile[data-key='p:dr-a'] video")
    await wait_video_playing(a, ".tile[data-key='p:dr-b'] video")
    await b.fill("#chat-input", "after the drop")
    await b.click("#chat-send")
    await expect(a.locator(".chat-msg", has_text="after the drop")).to_have_count(
        1, timeout=WAIT_MS
    )
    # screen sharing and the active speaker highlight (the fake microphones beep)
    await b.click("#btn-share")
    await wait_video_playing(a, ".tile[data-key='s:dr-b'] video")
    await expect(a.locator(".tile.speaking")).to_have_count(1, timeout=WAIT_MS)
    # the document is open again after the reconnect: a's new mark reaches b
    await a.locator("[data-tool=rect]").click()
    box = await a.locator("#doc-canvas").bounding_box()
    assert box is not None
    await a.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.3)
    await a.mouse.down()
    await a.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.6, steps=4)
    await a.mouse.up()
    await expect(b.locator("#mark-list li[data-tool=rect]")).to_have_count(1, timeout=WAIT_MS)
    await shot(b, "15-after-reconnect")
    await shot(a, "16-screen-share")
    assert requests_seen.outside() == []
    assert a.js_errors == [] and b.js_errors == []
