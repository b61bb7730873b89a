"""Garbage-collector settings of the server process: keep full collections off the latency path.

CPython's full (generation 2) collection scans every tracked object, about 0.5 µs each, with
the event loop stopped. While connections pile up, full passes over 150,000-220,000 objects
took 70-140 ms each and stalled every connection at once: that was the join p99 of
`bench/signaling.py` (about 270 ms at p99 against 7 ms at p50).

What start-up allocated (modules, pydantic models, settings, tables) lives as long as the
process: :func:`gc.freeze` moves it out of every later scan. The collection thresholds stay
CPython's: with a young threshold of 10,000 instead of 700, the soak benchmark's RSS grew 19 %
in 10 minutes instead of about 1 %, because closed peer connections (full of reference cycles)
waited that much longer for the full collections that free them.
"""

from __future__ import annotations

import gc


def settle_heap() -> None:
    """Collect once and freeze the survivors out of later collections (call once started)."""
    gc.collect()
    gc.freeze()
