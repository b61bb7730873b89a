"""A network namespace joined to this one by a veth pair, its downlink limited with ``tc tbf``,
and a Chromium running inside it (for capped-link tests and bench/quality.py). Needs root."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

NS = "tcq-rx"
HOST_IP, NS_IP = "10.213.0.1", "10.213.0.2"
VETH, VETH_NS = "tcq0", "tcq1"


def can_cap() -> str | None:
    """Why capped links cannot run here (None: they can)."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, tc)"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"{tool} not installed"
    return None


def _sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, timeout=20)


@contextlib.contextmanager
def capped_namespace(rate_kbit: int) -> Iterator[None]:
    """Namespace ``NS`` at ``NS_IP``, reaching this one at ``HOST_IP``; everything sent into
    it is limited to ``rate_kbit`` by a token bucket (~20 ms burst, 100 ms queue)."""
    subprocess.run(["ip", "link", "del", VETH], capture_output=True, timeout=20)
    subprocess.run(["ip", "netns", "del", NS], capture_output=True, timeout=20)
    _sh("ip", "netns", "add", NS)
    try:
        _sh("ip", "link", "add", VETH, "type", "veth", "peer", "name", VETH_NS)
        _sh("ip", "link", "set", VETH_NS, "netns", NS)
        _sh("ip", "addr", "add", f"{HOST_IP}/24", "dev", VETH)
        _sh("ip", "link", "set", VETH, "up")
        _sh("ip", "netns", "exec", NS, "ip", "addr", "add", f"{NS_IP}/24", "dev", VETH_NS)
        _sh("ip", "netns", "exec", NS, "ip", "link", "set", VETH_NS, "up")
        _sh("ip", "netns", "exec", NS, "ip", "link", "set", "lo", "up")
        burst = max(rate_kbit * 1000 // 8 // 50, 3000)
        _sh(
            "tc", "qdisc", "add", "dev", VETH, "root", "tbf",
            "rate", f"{rate_kbit}kbit", "burst", str(burst), "latency", "100ms",
        )  # fmt: skip
        yield
    finally:
        subprocess.run(["ip", "link", "del", VETH], capture_output=True, timeout=20)
        subprocess.run(["ip", "netns", "del", NS], capture_output=True, timeout=20)


@contextlib.asynccontextmanager
async def browser_in_namespace(
    pw: Any, chromium: str, args: list[str], origin: str
) -> AsyncIterator[Any]:
    """Chromium launched inside ``NS``; ``origin`` (the server as seen from there, not a
    loopback address) is treated as secure so that getUserMedia works."""
    with tempfile.TemporaryDirectory(prefix="tcq-") as tmp:
        wrapper = Path(tmp) / "chromium.sh"
        wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {NS} {chromium} "$@"\n')
        wrapper.chmod(0o755)
        browser = await pw.chromium.launch(
            executable_path=str(wrapper),
            headless=True,
            args=[*args, f"--unsafely-treat-insecure-origin-as-secure={origin}"],
        )
        try:
            yield browser
        finally:
            await browser.close()
