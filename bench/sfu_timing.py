"""Where the SFU's time goes, inside the bench's server process (``SFU_BENCH_TIMING=1``).

Wraps a few functions of the server with wall-clock accumulators (``time.perf_counter_ns``)
and reports them per forwarded packet: the whole of each socket read (``receive``), the part of
it that fans a frame out to its subscribers (``send``), the compiled send's call (``c_send``:
libsrtp and the kernel) and the subscriptions' own step (``push``). What is left of the
server's CPU time is the event loop, timers and RTCP. The clock is the wall's: on a busy
machine a part includes the time the process waited for a core, and the wrappers cost about
0.3 us a call, so the parts can add up to more than ``us_per_packet``; compare them within one
run. ``SFU_BENCH_TIMING_CPU=1`` takes the thread's CPU clock instead (no waiting counted, but
a system call per reading: the wrappers then cost more).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

#: the wrapped functions: (module, attribute owner path, name, key)
_TARGETS = (
    ("asyncio.selector_events", "_SelectorDatagramTransport", "_read_ready", "receive"),
    ("media.forwarder", "Publication", "on_frame", "send"),
    ("media.forwarder", "Subscription", "push", "push"),
    ("media.native_send", "load()", "send_frame", "c_send"),  # the loaded library's call
)


def install(counts: dict[str, Any]) -> None:
    """Wrap the targets; their nanoseconds and calls accumulate in ``counts["timing_ns"]``."""
    import importlib

    acc: dict[str, int] = counts.setdefault("timing_ns", {})
    for *_, key in _TARGETS:
        acc[key] = acc[f"{key}_n"] = 0
    for module_name, owner_name, name, key in _TARGETS:
        module = importlib.import_module(module_name)
        if owner_name == "load()":
            owner = module.load()
            if owner is None:
                continue
        else:
            owner = getattr(module, owner_name) if owner_name else module
        setattr(owner, name, _timed(getattr(owner, name), acc, key))


def _timed(fn: Callable[..., Any], acc: dict[str, int], key: str) -> Callable[..., Any]:
    calls = f"{key}_n"
    clock = time.thread_time_ns if os.environ.get("SFU_BENCH_TIMING_CPU") else time.perf_counter_ns

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = clock()
        try:
            return fn(*args, **kwargs)
        finally:
            acc[key] += clock() - t0
            acc[calls] += 1

    return wrapper


def per_packet(before: dict[str, int], after: dict[str, int], packets: int) -> dict[str, Any]:
    """Microseconds per forwarded packet of each part, and calls per packet, over a window."""
    if not after or packets <= 0:
        return {}
    d = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    out: dict[str, Any] = {
        "receive_us": d["receive"] / packets / 1e3,
        "receive_without_send_us": (d["receive"] - d["send"]) / packets / 1e3,
        "send_us": d["send"] / packets / 1e3,
        "push_us": d["push"] / packets / 1e3,
        "c_send_us": d["c_send"] / packets / 1e3,
        "send_python_us": (d["push"] - d["c_send"]) / packets / 1e3,
        "us_per_datagram_read": d["receive"] / max(d["receive_n"], 1) / 1e3,
        "subscriber_frames_per_packet": d["push_n"] / packets,
    }
    return {k: round(v, 2) for k, v in out.items()}
