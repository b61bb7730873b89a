"""End-to-end: the SFU reuses a departed publisher's m-lines in a subscriber's peer connection,
and Chromium shows the next publisher on them (a new `track` event on the reused transceiver).

The doctor stays in the room; one patient publishes and leaves; the server offers the doctor
that patient's m-lines `inactive`; a second patient publishes; the doctor's subscriber
connection carries the second patient on the same mids, with no new transceivers.
"""

from __future__ import annotations

import asyncio
from typing import Any

from playwright.async_api import expect

from tests.web.helpers import WAIT_MS, pass_device_check, wait_video_playing

ROOM = "mline-reuse"

# The doctor's subscriber connection as the page sees it (window.__tc is the app object).
SUB_STATE_JS = """
() => {
  const m = window.__tc.media;
  if (!m || !m.sub) return null;
  const pc = m.sub.pc;
  return {
    signaling: pc.signalingState,
    transceivers: pc.getTransceivers().map((t) => ({
      mid: t.mid,
      kind: t.receiver.track.kind,
      current: t.currentDirection,
      info: m.midInfo.has(t.mid)
        ? `${m.midInfo.get(t.mid).publisher}/${m.midInfo.get(t.mid).source}` : null,
    })),
  };
}
"""

# True once the subscriber connection is stable and receives exactly `publisher`'s audio and
# video (all other m-lines inactive): the offer carrying that publisher has been answered.
RECEIVING_JS = """
(publisher) => {
  const m = window.__tc.media;
  if (!m || !m.sub || m.sub.pc.signalingState !== 'stable') return false;
  const kinds = [];
  for (const t of m.sub.pc.getTransceivers()) {
    const info = m.midInfo.get(t.mid);
    if (t.currentDirection === 'recvonly') {
      if (!info || info.publisher !== publisher) return false;
      kinds.push(t.receiver.track.kind);
    } else if (t.currentDirection !== 'inactive') {
      return false;
    }
  }
  return kinds.includes('audio') && kinds.includes('video');
}
"""

# True once none of `mids` receives any more (the server's offer showing them inactive has
# been applied and answered by the page).
INACTIVE_JS = """
(mids) => {
  const m = window.__tc.media;
  if (!m || !m.sub || m.sub.pc.signalingState !== 'stable') return false;
  const byMid = new Map(m.sub.pc.getTransceivers().map((t) => [t.mid, t]));
  return mids.every((mid) => byMid.has(mid) && byMid.get(mid).currentDirection === 'inactive');
}
"""

# The mid of the subscriber transceiver whose track the participant's tile is playing.
TILE_MID_JS = """
(identity) => {
  const video = document.querySelector(`.tile[data-key='p:${identity}'] video`);
  const stream = video && video.srcObject;
  const track = stream && stream.getVideoTracks()[0];
  const m = window.__tc.media;
  if (!track || !m.sub) return null;
  const t = m.sub.pc.getTransceivers().find((x) => x.receiver.track === track);
  return t ? t.mid : null;
}
"""

# Frames decoded so far on the subscriber connection's inbound video stream for `mid`.
FRAMES_DECODED_JS = """
async (mid) => {
  const stats = await window.__tc.media.sub.pc.getStats();
  let frames = null;
  stats.forEach((r) => {
    if (r.type === 'inbound-rtp' && r.kind === 'video' && r.mid === mid) frames = r.framesDecoded;
  });
  return frames;
}
"""


async def join_patient(live: Any, new_page: Any, doctor: Any, identity: str, name: str) -> Any:
    """A patient page through the device check and the waiting room, admitted by the doctor."""
    page = await new_page()
    await pass_device_check(
        page, f"{live.url}/join?token={live.tokens(ROOM, identity, 'patient', name)}"
    )
    await page.click("#join-btn")
    await expect(page.locator("#screen-waiting")).to_be_visible(timeout=WAIT_MS)
    await doctor.locator("#tab-people").click()
    entry = doctor.locator(f".lobby-entry[data-identity={identity}]")
    await entry.locator("[data-action=admit]").click(timeout=WAIT_MS)
    await expect(page.locator("#screen-call")).to_be_visible(timeout=WAIT_MS)
    return page


async def wait_decoding(page: Any, mid: str) -> None:
    """Wait until the inbound video on `mid` decodes more frames than at the first look.

    Polled from here: Playwright's wait_for_function takes an async predicate's promise as
    truthy at once."""
    first = await page.evaluate(FRAMES_DECODED_JS, mid) or 0
    async with asyncio.timeout(WAIT_MS / 1000):
        while True:  # getStats has no event to await
            if (await page.evaluate(FRAMES_DECODED_JS, mid) or 0) > first:
                return
            await asyncio.sleep(0.25)


async def test_departed_publishers_mlines_carry_the_next_one(live: Any, new_page: Any) -> None:
    doctor = await new_page()
    await pass_device_check(
        doctor, f"{live.url}/join?token={live.tokens(ROOM, 'dr-wang', 'host', 'Dr Wang')}"
    )
    await doctor.click("#join-btn")
    await expect(doctor.locator("#screen-call")).to_be_visible(timeout=WAIT_MS)

    # first patient: the doctor sees and decodes their video
    first = await join_patient(live, new_page, doctor, "pat-first", "First Patient")
    await wait_video_playing(doctor, ".tile[data-key='p:pat-first'] video")
    await doctor.wait_for_function(RECEIVING_JS, arg="pat-first", timeout=WAIT_MS)
    before = await doctor.evaluate(SUB_STATE_JS)
    first_mids = [
        t["mid"]
        for t in before["transceivers"]
        if t["info"] and t["info"].startswith("pat-first/") and t["current"] == "recvonly"
    ]
    first_video_mid = await doctor.evaluate(TILE_MID_JS, "pat-first")
    assert first_video_mid in first_mids, before
    await wait_decoding(doctor, first_video_mid)
    # record the subscriber connection's track events from here on
    await doctor.evaluate(
        """() => {
          window.__trackMids = [];
          window.__tc.media.sub.pc.addEventListener(
            'track', (e) => window.__trackMids.push(e.transceiver.mid));
        }"""
    )

    # the first patient leaves: their tile goes, and the doctor answers an offer showing
    # their m-lines inactive (only then may the server reuse them)
    await first.click("#btn-leave")
    await expect(first.locator("#screen-left")).to_be_visible(timeout=WAIT_MS)
    await first.context.close()
    await expect(doctor.locator(".tile[data-key='p:pat-first']")).to_have_count(0, timeout=WAIT_MS)
    await doctor.wait_for_function(INACTIVE_JS, arg=first_mids, timeout=WAIT_MS)
    # the answer has reached the server (its call resolved): the subscriber queue is idle
    await asyncio.wait_for(
        doctor.evaluate("() => window.__tc.media.subChain.then(() => true)"), WAIT_MS / 1000
    )

    # second patient: shown playing, on the first patient's m-lines, in the same connection
    second = await join_patient(live, new_page, doctor, "pat-second", "Second Patient")
    await wait_video_playing(doctor, ".tile[data-key='p:pat-second'] video")
    await doctor.wait_for_function(RECEIVING_JS, arg="pat-second", timeout=WAIT_MS)
    after = await doctor.evaluate(SUB_STATE_JS)
    second_video_mid = await doctor.evaluate(TILE_MID_JS, "pat-second")
    second_mids = [t["mid"] for t in after["transceivers"] if t["current"] == "recvonly"]
    assert len(after["transceivers"]) == len(before["transceivers"]), (before, after)
    assert second_video_mid in first_mids, (before, after, second_video_mid)
    assert sorted(second_mids) == sorted(first_mids), (before, after)
    assert all(
        t["info"].startswith("pat-second/")
        for t in after["transceivers"]
        if t["mid"] in second_mids
    ), after
    # the reused transceiver fired a new track event (the page maps it by the offer's tracks)
    assert second_video_mid in await doctor.evaluate("() => window.__trackMids"), after
    await wait_decoding(doctor, second_video_mid)

    await expect(second.locator("#screen-call")).to_be_visible()
    assert doctor.js_errors == [] and second.js_errors == []
