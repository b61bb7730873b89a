"""Picture quality with real browsers: Chromium through the SFU beside Chromium peer to peer.

Every scenario uses Chromium's fake camera (the same capture request as the app's device check)
and reads the receiving page's own getStats(): resolution, frames per second, received bitrate
at 10/20/40 s (or the marks that fit a --quick run), freezeCount, and the time until the picture
is at full quality (capture resolution at >= 20 fps). Scenarios, in one run and one browser:

- ``p2p``: two plain RTCPeerConnections (no server in the media path), the reference;
- ``sfu_1to1``: two app pages in one consult through the server;
- ``sfu_mdt4``: four app pages in one MDT room (each receives three);
- ``capped_*`` (not with --quick, needs root): the receiver in a network namespace whose link
  is limited with ``tc tbf`` (1 Mbit/s, 300 kbit/s), through the SFU and peer to peer;
- ``lossy_*`` (only when asked: ``--loss``/``--delay-ms``/``--jitter-ms``/``--burst``, or
  ``--only lossy``; needs root and nftables): the receiver in the same namespace, every UDP
  datagram of its link going through the userspace relay of tests/web/udp_relay.py (no netem
  in this kernel), which drops and delays them both ways (each way on its own, seeded: SFU
  and P2P see the same drop pattern by order of arrival); uncapped (tbf at 100 Mbit/s) unless
  ``--lossy-cap``. Through the SFU and peer to peer, with the relay's counts (datagrams
  received, dropped, and how late its event loop sent them) beside each.

Prints one JSON line last. ``--quick``: 20 s per scenario, no capped or lossy links unless
asked (< 2 min).
``BENCH_LOG_LEVEL=info`` shows the server's log (layer switches with their estimate and loss);
``TELECONSULT_MEDIA__*`` settings (e.g. ``TELECONSULT_MEDIA__AUTO_LAYER_HOLD_S=10``) reach the
server too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import itertools
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import serve

from tests.web.netns import HOST_IP, NS, NS_IP, browser_in_namespace, can_cap, capped_namespace
from tests.web.quality_probe import INBOUND_JS, OUTBOUND_JS, SFU_PUB, SFU_SUB
from tests.web.udp_relay import Impairment, relay_in_namespace

CHROMIUM = os.environ.get("TELECONSULT_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
]
FULL_FPS = 20
UNCAPPED_KBIT = 100_000  # the lossy scenarios' tbf when --lossy-cap is not given
P2P_PC = "window.__p2p"

# The app's capture request (web_client/src/devicecheck.js), for the peer-to-peer reference.
P2P_SETUP_JS = """
async ([role]) => {
  const constraints = window.__captureConstraints;
  const pc = new RTCPeerConnection({iceServers: []});
  window.__p2p = pc;
  if (role === 'send') {
    const stream = await navigator.mediaDevices.getUserMedia(constraints);
    // the app's rule (media.js): open at 1280x720, send 640x480, 1280x720 once the estimate
    // has room for it
    const cam = stream.getVideoTracks()[0];
    await cam.applyConstraints({width: {ideal: 640}, height: {ideal: 480}, frameRate: {ideal: 24}});
    for (const t of stream.getTracks()) pc.addTrack(t, stream);
    const timer = setInterval(async () => {
      const stats = await pc.getStats();
      let bwe = null, limited = null;
      stats.forEach((r) => {
        if (r.type === 'outbound-rtp' && r.kind === 'video') limited = r.qualityLimitationReason;
        if (r.type === 'candidate-pair' && r.nominated && r.availableOutgoingBitrate)
          bwe = r.availableOutgoingBitrate;
      });
      if (bwe >= 2500000 && limited === 'none') {
        clearInterval(timer);
        const hd = {width: {ideal: 1280}, height: {ideal: 720}, frameRate: {ideal: 24}};
        await cam.applyConstraints(hd);
      }
    }, 3000);
  }
  return true;
}
"""
OFFER_JS = """
async () => {
  const pc = window.__p2p;
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((ok) => {
    if (pc.iceGatheringState === 'complete') return ok();
    pc.addEventListener('icegatheringstatechange',
      () => pc.iceGatheringState === 'complete' && ok());
  });
  return pc.localDescription.sdp;
}
"""
# The receiving connection's round-trip time (ms) on its selected ICE pair (STUN checks).
RTT_JS = """
async (pcExpr) => {
  const pc = eval(pcExpr);
  if (!pc) return null;
  let rtt = null;
  (await pc.getStats()).forEach((r) => {
    if (r.type === 'candidate-pair' && r.nominated && r.currentRoundTripTime !== undefined)
      rtt = r.currentRoundTripTime * 1000;
  });
  return rtt;
}
"""
# The publisher connection's view each second: its estimate, each video stream's encoder
# target and bytes, and the loss the server's receiver reports tell it (remote-inbound-rtp).
SENDER_JS = """
async (pcExpr) => {
  const pc = eval(pcExpr);
  if (!pc) return null;
  const stats = await pc.getStats();
  const out = {t: performance.now() / 1000, bwe: null, streams: []};
  const remote = {};
  stats.forEach((r) => {
    if (r.type === 'remote-inbound-rtp' && r.kind === 'video')
      remote[r.localId] = {lost: r.packetsLost, fraction: r.fractionLost};
    if (r.type === 'candidate-pair' && r.nominated && r.availableOutgoingBitrate)
      out.bwe = r.availableOutgoingBitrate;
  });
  stats.forEach((r) => {
    if (r.type !== 'outbound-rtp' || r.kind !== 'video') return;
    out.streams.push({
      mid: r.mid, bytes: r.bytesSent, target: r.targetBitrate || null,
      width: r.frameWidth || 0, limitation: r.qualityLimitationReason || null,
      nacks: r.nackCount || 0, plis: r.pliCount || 0, ...(remote[r.id] || {}),
    });
  });
  return out;
}
"""


class SenderTimeline:
    """The publisher's own stats once a second (when its estimate falls, and on what)."""

    def __init__(self, page: Any, pc_expr: str) -> None:
        self.page, self.pc_expr = page, pc_expr
        self.samples: list[dict[str, Any]] = []

    async def sample(self) -> None:
        with contextlib.suppress(Exception):
            s = await self.page.evaluate(SENDER_JS, self.pc_expr)
            if s is not None:
                self.samples.append(s)

    def summary(self) -> list[dict[str, Any]]:
        """One row per sample: seconds, estimate and summed target (kbit/s), summed NACKs and
        PLIs received, the highest fraction lost the server reported, widths sent."""
        rows = []
        t0 = self.samples[0]["t"] if self.samples else 0.0
        for s in self.samples:
            streams = s["streams"]
            rows.append(
                {
                    "at": round(s["t"] - t0, 1),
                    "bwe": round((s["bwe"] or 0) / 1000),
                    "target": round(sum(x["target"] or 0 for x in streams) / 1000),
                    "nacks": sum(x["nacks"] for x in streams),
                    "plis": sum(x["plis"] for x in streams),
                    "rr_fraction_lost": max((x.get("fraction") or 0 for x in streams), default=0),
                    "rr_lost": sum(x.get("lost") or 0 for x in streams),
                    "widths": [x["width"] for x in streams],
                    "limitation": sorted({x["limitation"] for x in streams if x["limitation"]}),
                }
            )
        return rows


SET_ANSWER_JS = "(sdp) => window.__p2p.setRemoteDescription({type: 'answer', sdp})"
ANSWER_JS = """
async (offer) => {
  const pc = window.__p2p;
  await pc.setRemoteDescription({type: 'offer', sdp: offer});
  await pc.setLocalDescription(await pc.createAnswer());
  await new Promise((ok) => {
    if (pc.iceGatheringState === 'complete') return ok();
    pc.addEventListener('icegatheringstatechange',
      () => pc.iceGatheringState === 'complete' && ok());
  });
  return pc.localDescription.sdp;
}
"""


def capture_constraints() -> dict[str, Any]:
    """What the app's device check asks the camera for (devicecheck.js); media.js sends 640x480
    from it first and 1280x720 when the estimate allows, which the reference sender mirrors."""
    width, height = 1280, 720
    return {
        "video": {
            "width": {"ideal": width},
            "height": {"ideal": height},
            "frameRate": {"ideal": 24},
        },
        "audio": True,
    }


class Receiver:
    """Samples one receiving page's inbound video once a second."""

    def __init__(self, name: str, page: Any, pc_expr: str, publisher: str | None = None) -> None:
        self.name = name
        self.page = page
        self.pc_expr = pc_expr
        self.publisher = publisher  # whose camera (app pages); None: the busiest stream
        self.samples: list[dict[str, Any]] = []
        self.t0: float | None = None
        self.started: str | None = None
        self.layer: dict[str, Any] | None = None  # SFU receivers: the server's layer choice

    async def sample(self) -> None:
        with contextlib.suppress(Exception):
            s = await self.page.evaluate(INBOUND_JS, [self.pc_expr, self.publisher])
            if s is None or not s["bytes"]:
                return
            now = time.monotonic()
            s["rtt_ms"] = None
            with contextlib.suppress(Exception):
                s["rtt_ms"] = await self.page.evaluate(RTT_JS, self.pc_expr)
            if self.t0 is None:
                self.t0 = now
                self.started = time.strftime("%H:%M:%S")  # to line up with the server's log
            s["at"] = now - self.t0
            self.samples.append(s)

    def summary(self, marks: list[int], full: tuple[int, int]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for mark in marks:
            after = [s for s in self.samples if s["at"] >= mark]
            before = [s for s in self.samples if s["at"] <= mark - 2]
            if not after or not before:
                out[f"at_{mark}s"] = None
                continue
            a, b = after[0], before[-1]
            kbps = (a["bytes"] - b["bytes"]) * 8 / max(a["t"] - b["t"], 1e-3) / 1000
            out[f"at_{mark}s"] = {
                "res": f"{a['width']}x{a['height']}",
                "fps": round(a["fps"], 1),
                "kbps": round(kbps),
            }
        full_at = next(
            (
                s["at"]
                for s in self.samples
                if s["width"] >= full[0] and s["height"] >= full[1] and s["fps"] >= FULL_FPS
            ),
            None,
        )
        out["time_to_full_s"] = round(full_at, 1) if full_at is not None else None
        out["freezes"] = self.samples[-1]["freezes"] if self.samples else None
        rtts = sorted(s["rtt_ms"] for s in self.samples if s.get("rtt_ms") is not None)
        out["rtt_ms_median"] = round(rtts[len(rtts) // 2], 1) if rtts else None
        out["first_bytes_at"] = self.started
        # seconds (since the first bytes) by which each freeze had been counted
        # (approximate where a page's busiest stream changes between samples: MDT pages)
        out["freezes_by_s"] = [
            round(b["at"])
            for a, b in itertools.pairwise([{"freezes": 0}, *self.samples])
            for _ in range(max(0, (b["freezes"] or 0) - (a["freezes"] or 0)))
        ]
        if self.layer is not None:
            out["server"] = self.layer
        return out


async def sample_for(
    receivers: list[Receiver], seconds: float, sender: SenderTimeline | None = None
) -> None:
    """Sample every receiver (and ``sender``) once a second until each receiver has
    ``seconds`` of media."""
    deadline = time.monotonic() + seconds + 30  # bounded even if media never starts
    samplers = [*receivers, *([sender] if sender else [])]
    while time.monotonic() < deadline:
        await asyncio.gather(*(r.sample() for r in samplers))
        if all(r.samples and r.samples[-1]["at"] >= seconds for r in receivers):
            return
        await asyncio.sleep(1.0)


async def new_page(browser: Any) -> Any:
    context = await browser.new_context(viewport={"width": 960, "height": 720}, locale="zh-CN")
    await context.grant_permissions(["camera", "microphone"])
    return await context.new_page()


async def join_app(browser: Any, url: str, token: str) -> Any:
    page = await new_page(browser)
    await page.goto(f"{url}/join?token={token}")
    await page.wait_for_selector("#join-btn:not([disabled])", timeout=60_000)
    await page.click("#join-btn")
    await page.wait_for_selector("#screen-call", state="visible", timeout=60_000)
    return page


async def p2p(
    sender: Any, receiver: Any, url: str, rx_url: str, seconds: float
) -> tuple[Receiver, Any]:
    """The reference: fake camera -> RTCPeerConnection -> RTCPeerConnection, no server."""
    for page, origin in ((sender, url), (receiver, rx_url)):
        await page.goto(f"{origin}/healthz")  # any page of the (secure) server origin
        await page.evaluate(f"window.__captureConstraints = {json.dumps(capture_constraints())}")
    await sender.evaluate(P2P_SETUP_JS, ["send"])
    await receiver.evaluate(P2P_SETUP_JS, ["recv"])
    offer = await sender.evaluate(OFFER_JS)
    answer = await receiver.evaluate(ANSWER_JS, offer)
    await sender.evaluate(SET_ANSWER_JS, answer)
    rec = Receiver("p2p", receiver, P2P_PC)
    await sample_for([rec], seconds)
    send_stats = await sender.evaluate(OUTBOUND_JS, P2P_PC)
    for page in (sender, receiver):
        await page.context.close()
    return rec, send_stats


async def sfu(
    browser: Any, server: Any, room: str, parties: int, seconds: float, browser_rx: Any = None
) -> tuple[list[Receiver], Any]:
    """``parties`` app pages in one room; the first is the host. With ``browser_rx``, the
    last page runs there (a browser in a capped network namespace)."""
    from kernel.tokens import mint_token

    pages = []
    for i in range(parties):
        role = "host" if i == 0 else "clinician"
        token = mint_token(server.secret, room=room, identity=f"dr-{i}", role=role, name=f"医生{i}")
        target = browser_rx if (browser_rx is not None and i == parties - 1) else browser
        url = server.rx_url if target is browser_rx else server.url
        pages.append(await join_app(target, url, token))
    receivers = [Receiver(f"dr-{i}", p, SFU_SUB, "dr-0") for i, p in enumerate(pages) if i > 0]
    timeline = SenderTimeline(pages[0], SFU_PUB)
    await sample_for(receivers, seconds, timeline)
    for rec in receivers:  # the server's view: which layer, how many automatic switches
        with contextlib.suppress(Exception):
            ack = await rec.page.evaluate("() => window.__tc.session.call('rtc:stats', {})")
            sub = (ack.get("stats") or ack).get("subscriptions", {}).get("dr-0/camera", {})
            keys = ("layer", "layer_switches", "frames_dropped", "nack_ratio", "remb_kbps")
            rec.layer = {k: sub.get(k) for k in keys}
    send_stats = await pages[0].evaluate(OUTBOUND_JS, SFU_PUB)
    with contextlib.suppress(Exception):  # the server's view of the publisher's camera
        ack = await pages[0].evaluate("() => window.__tc.session.call('rtc:stats', {})")
        pubs = (ack.get("stats") or ack).get("publications", {})
        keys = ("keyframes", "plis_sent", "losses_unrepaired")
        server = {src: {k: pubs[src].get(k) for k in keys} for src in pubs if "camera" in src}
        send_stats = (send_stats or {}) | {"server": server}
    send_stats = (send_stats or {}) | {"timeline": timeline.summary()}
    for page in pages:
        await page.context.close()
    return receivers, send_stats


@contextlib.contextmanager
def scenario(result: dict[str, Any], name: str) -> Any:
    """Run one scenario; a failure is recorded in the result instead of ending the run."""
    try:
        yield
    except Exception as exc:
        result[name] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    from playwright.async_api import async_playwright

    seconds = 20 if args.quick else 40
    marks = [10, 20] if args.quick else [10, 20, 40]

    def want(name: str) -> bool:
        return not args.only or name in args.only.split(",")

    full = (640, 480)  # the goal: at least VGA at >= FULL_FPS
    result: dict[str, Any] = {"full": f">={full[0]}x{full[1]}@{FULL_FPS}", "seconds": seconds}
    # HTTP on every address: a capped receiver reaches the server through the veth pair
    env = {"TELECONSULT_HOST": "0.0.0.0"}
    if level := os.environ.get("BENCH_LOG_LEVEL"):
        env["TELECONSULT_LOG_LEVEL"] = level
    with serve(env=env) as server:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
            try:
                if want("p2p"):
                    with scenario(result, "p2p"):
                        pair = (await new_page(browser), await new_page(browser))
                        rec, sent = await p2p(*pair, server.url, server.url, seconds)
                        result["p2p"] = rec.summary(marks, full) | {"sender": sent}
                if want("sfu_1to1"):
                    with scenario(result, "sfu_1to1"):
                        recs, sent = await sfu(browser, server, "q-1to1", 2, seconds)
                        result["sfu_1to1"] = recs[0].summary(marks, full) | {"sender": sent}
                if want("sfu_mdt4") and (not args.quick or args.mdt):
                    with scenario(result, "sfu_mdt4"):
                        recs, sent = await sfu(browser, server, "q-mdt4", 4, seconds)
                        result["sfu_mdt4"] = {r.name: r.summary(marks, full) for r in recs}
                if want("capped") and not args.quick:
                    reason = can_cap()
                    if reason:
                        result["capped"] = f"skipped: {reason}"
                    else:
                        with scenario(result, "capped"):
                            caps = tuple(int(c) for c in args.caps.split(","))
                            result["capped"] = await capped(
                                pw, browser, server, marks, full, seconds, caps
                            )
                if want("lossy") and (impairment(args) is not None or args.only):
                    name = lossy_name(args)
                    reason = can_cap() or (None if shutil.which("nft") else "nft not installed")
                    if reason:
                        result[name] = f"skipped: {reason}"
                    else:
                        with scenario(result, name):
                            result[name] = await lossy(
                                pw, browser, server, marks, full, seconds, args
                            )
            finally:
                await browser.close()
    ref, got = result.get("p2p"), result.get("sfu_1to1")
    if isinstance(ref, dict) and isinstance(got, dict):
        add_p2p_ratios(got, ref, marks)
    return result


def add_p2p_ratios(got: dict[str, Any], ref: dict[str, Any], marks: list[int]) -> None:
    """``ratio_p2p_<mark>s``: the SFU receiver's bitrate over the P2P reference's, per mark."""
    for mark in marks:
        r, g = ref.get(f"at_{mark}s"), got.get(f"at_{mark}s")
        if r and g and r["kbps"]:
            got[f"ratio_p2p_{mark}s"] = round(g["kbps"] / r["kbps"], 2)


async def p2p_into_namespace(
    browser: Any, rx_browser: Any, server: Any, seconds: float
) -> tuple[Receiver, Any]:
    """The P2P reference with its receiver in the namespace's browser."""
    return await p2p(
        await new_page(browser), await new_page(rx_browser), server.url, server.rx_url, seconds
    )


async def capped(
    pw: Any,
    browser: Any,
    server: Any,
    marks: list[int],
    full: tuple[int, int],
    seconds: float,
    caps: tuple[int, ...] = (1000, 300),
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for rate in caps:
        with capped_namespace(rate):
            server.rx_url = server.url.replace("127.0.0.1", HOST_IP)
            async with browser_in_namespace(pw, CHROMIUM, ARGS, server.rx_url) as rx_browser:
                recs, _ = await sfu(browser, server, f"q-cap{rate}", 2, seconds, rx_browser)
                out[f"sfu_{rate}k"] = recs[0].summary(marks, full)
                rec, _ = await p2p_into_namespace(browser, rx_browser, server, seconds)
                out[f"p2p_{rate}k"] = rec.summary(marks, full)
    return out


def impairment(args: argparse.Namespace) -> Impairment | None:
    """The lossy link asked for on the command line (None: none asked)."""
    imp = Impairment(args.loss, args.burst, args.delay_ms, args.jitter_ms, seed=args.seed)
    return None if imp == Impairment(seed=args.seed) else imp


def lossy_name(args: argparse.Namespace) -> str:
    """e.g. ``lossy_2pct_50ms_j10ms``, ``lossy_5pct_0ms_b3``, ``lossy_2pct_50ms_cap1000k``."""
    name = f"lossy_{args.loss * 100:g}pct_{args.delay_ms:g}ms"
    name += f"_j{args.jitter_ms:g}ms" if args.jitter_ms else ""
    name += f"_b{args.burst:g}" if args.burst > 1 else ""
    return name + (f"_cap{args.lossy_cap}k" if args.lossy_cap else "")


async def lossy(
    pw: Any,
    browser: Any,
    server: Any,
    marks: list[int],
    full: tuple[int, int],
    seconds: float,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """The receiver behind the loss/delay relay: SFU, then P2P, a fresh relay (same seed)
    for each."""
    imp = impairment(args) or Impairment(seed=args.seed)
    out: dict[str, Any] = {"impairment": dataclasses.asdict(imp) | {"both_ways": True}}
    with capped_namespace(args.lossy_cap or UNCAPPED_KBIT):
        server.rx_url = server.url.replace("127.0.0.1", HOST_IP)
        async with browser_in_namespace(pw, CHROMIUM, ARGS, server.rx_url) as rx_browser:
            async with relay_in_namespace(NS, HOST_IP, NS_IP, imp) as relay:
                recs, sent = await sfu(browser, server, "q-lossy", 2, seconds, rx_browser)
            out["sfu"] = recs[0].summary(marks, full) | {"sender": sent, "relay": relay}
            async with relay_in_namespace(NS, HOST_IP, NS_IP, imp) as relay:
                rec, sent = await p2p_into_namespace(browser, rx_browser, server, seconds)
            out["p2p"] = rec.summary(marks, full) | {"sender": sent, "relay": relay}
    add_p2p_ratios(out["sfu"], out["p2p"], marks)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="20 s per scenario, no capped links")
    parser.add_argument("--mdt", action="store_true", help="with --quick: the 4-party room too")
    parser.add_argument("--only", help="comma-separated: p2p,sfu_1to1,sfu_mdt4,capped,lossy")
    parser.add_argument(
        "--caps", default="1000,300", help="capped link rates in kbit/s (default 1000,300)"
    )
    link = parser.add_argument_group(
        "lossy link (the receiver's, both ways, through tests/web/udp_relay.py; needs root)"
    )
    link.add_argument("--loss", type=float, default=0.0, help="share of datagrams dropped")
    link.add_argument(
        "--burst", type=float, default=1.0, help="mean loss burst in datagrams (1: independent)"
    )
    link.add_argument("--delay-ms", type=float, default=0.0, help="added one-way delay")
    link.add_argument("--jitter-ms", type=float, default=0.0, help="+/- on the delay (order kept)")
    link.add_argument("--seed", type=int, default=1, help="the relay's random seed")
    link.add_argument("--lossy-cap", type=int, default=0, help="also cap it (kbit/s, tbf)")
    args = parser.parse_args()
    if not Path(CHROMIUM).exists():
        raise SystemExit(f"Chromium not found at {CHROMIUM}")
    t0 = time.monotonic()
    load_start = Path("/proc/loadavg").read_text().split()[:3]
    result = asyncio.run(main_async(args))
    result["wall_s"] = round(time.monotonic() - t0, 1)
    result["loadavg"] = Path("/proc/loadavg").read_text().split()[:3]
    result["loadavg_start"] = load_start
    print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    main()
