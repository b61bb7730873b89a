"""Garbage-collector settings of the server process: keep full collections off the latency path.

CPython's full (generation 2) collection scans every tracked object, about 0.5 µs each, with
the event loop stopped. While connections pile up, full passes over 150,000-220,000 objects
took 70-140 ms each and stalled every connection at once: that was the join p99 of
`bench/signaling.py` (about 270 ms at p99 against 7 ms at p50).

- What start-up allocated (modules, pydantic models, settings, tables) lives as long as the
  process: :func:`gc.freeze` moves it out of every later scan.
- A generation-0 threshold of 10,000 allocations instead of 700 makes young collections
  rarer; the older generations keep CPython's defaults.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 10_000


def settle_heap() -> None:
    """Collect once, freeze the survivors, raise the young threshold (call once started)."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
