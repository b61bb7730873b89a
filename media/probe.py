"""Padding probes: does a subscriber's downlink carry the high layer, before switching to it?

Switching a camera to its high layer to find out (the earlier probe) sends a high keyframe
burst and the high rate into a link that may not carry them: a freeze whenever it does not.
A padding probe, as libwebrtc and LiveKit probe, adds the rate the high layer would need as
RTX copies of the newest packet sent (aiortc_patch.send_padding) for about a second, while the
low layer goes on. If the link cannot carry it, a queue builds: the subscriber's receive-side
estimator may see the delay grow and lower its REMB, and once the queue overflows the
subscriber asks for lost media packets again (NACKs). Either stops the probe at once and
fails it: no keyframe, no switch, though the overflow may have dropped some media (the copies
repair part of it; docs/media.md, "Capped links: padding probes and a low start").
The verdict goes back to the :class:`~media.bandwidth.LayerChooser`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiortc import RTCRtpSender

from .aiortc_patch import send_padding

logger = logging.getLogger(__name__)

TICK_S = 0.02  # padding goes out in 20 ms portions
ESTIMATE_DROP = 0.95  # Chromium sends a new REMB at once when its estimate falls >= 3 %


def padding_due(rate_bps: float, elapsed_s: float, ramp_s: float) -> int:
    """Bytes of padding due ``elapsed_s`` into a probe that ramps up to ``rate_bps`` over
    ``ramp_s`` and holds it: the link's queue overflows gently, at the rate it cannot carry,
    and the first loss (a NACK) stops the probe before much media is dropped."""
    if ramp_s > 0 and elapsed_s < ramp_s:
        return int(rate_bps / 8 * elapsed_s * elapsed_s / (2 * ramp_s))
    return int(rate_bps / 8 * (elapsed_s - ramp_s / 2))


def probe_failed(
    nacks: int, max_nacks: int, estimate: int | None = None, before: int | None = None
) -> bool:
    """The link did not carry the probe: more NACKs than ``max_nacks`` since it began, or
    the subscriber's estimate fell below ``ESTIMATE_DROP`` x what it was (queue building)."""
    if nacks > max_nacks:
        return True
    return bool(estimate and before and estimate < before * ESTIMATE_DROP)


async def run_padding_probe(
    sender: RTCRtpSender,
    nacks: Callable[[], int],
    rate_bps: float,
    estimate: Callable[[], int | None] = lambda: None,
    duration_s: float = 1.2,
    ramp_s: float = 0.6,
    settle_s: float = 0.3,
    max_nacks: int = 0,
) -> bool | None:
    """Pad ``sender`` up to ``rate_bps`` for ``duration_s``; True if the link carried it.

    None: no padding could be sent (no RTX negotiated): the chooser then probes by switching.

    ``nacks()`` counts the packets the subscriber asked for again (all its video),
    ``estimate()`` is its latest REMB. Late NACKs are awaited ``settle_s`` after the padding
    ends (about a round trip plus a queue).
    """
    loop = asyncio.get_running_loop()
    start = nacks()
    before = estimate()
    began = loop.time()
    sent = 0
    cursor = 0
    while (elapsed := loop.time() - began) < duration_s:
        if probe_failed(nacks() - start, max_nacks, estimate(), before):
            logger.info(
                "media: probe stopped after %.2f s, %d bytes: %d nacks, estimate %s -> %s",
                elapsed, sent, nacks() - start, before, estimate(),
            )  # fmt: skip
            return False  # stop loading the link at once
        due = padding_due(rate_bps, elapsed, ramp_s) - sent
        if due > 0:
            try:
                n, cursor = await send_padding(sender, due, cursor)
            except ConnectionError:
                return False
            if n == 0:
                return None if sent == 0 else False
            sent += n
        await asyncio.sleep(TICK_S)
    await asyncio.sleep(settle_s)
    return not probe_failed(nacks() - start, max_nacks, estimate(), before)
