"""Shared pieces of the benchmark scripts: a server process on a free port, percentiles, CPU."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# the repository first: bench/signaling.py must not shadow the `signaling` package
if str(ROOT) in sys.path:
    sys.path.remove(str(ROOT))
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank), rounded; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    idx = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return round(ordered[idx], 2)


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class ServerProcess:
    """A `teleconsult serve` under test: its process, URL, data dir and signing secret."""

    proc: subprocess.Popen[bytes]
    url: str
    data_dir: Path
    secret: str


@contextlib.contextmanager
def serve(
    env: dict[str, str] | None = None,
    start_timeout_s: float = 60.0,
    profile: str | None = None,
    prefix: str = "tc-bench-",
    nice: int = 0,
) -> Iterator[ServerProcess]:
    """Run the server in its own process on a free port with a fresh data dir; stop it after.

    ``profile``: a path to write a cProfile of the server to (it is stopped with SIGINT so
    that the profile gets written). ``nice``: the server's niceness (negative needs root;
    ignored without it), as bench/sfu.py does: on a shared machine the clients stand in for
    remote devices, and what is measured is the server, not the run queue.
    """

    def renice() -> None:
        if nice:
            with contextlib.suppress(PermissionError):
                os.nice(nice)

    from rtc_server.config import load_settings, prepare_data_dir, signing_secret

    data_dir = Path(tempfile.mkdtemp(prefix=prefix, dir=os.environ.get("BENCH_TMP")))
    settings = prepare_data_dir(load_settings(overrides={"data_dir": data_dir}, environ={}))
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            *(["-m", "cProfile", "-o", profile] if profile else []),
            "-m",
            "rtc_server.cli",
            "serve",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
        ],
        cwd=ROOT,
        env={**os.environ, "TELECONSULT_LOG_LEVEL": "warning", **(env or {})},
        stdout=subprocess.DEVNULL,
        preexec_fn=renice if nice else None,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit("server did not start") from None
                time.sleep(0.2)
        yield ServerProcess(proc, url, data_dir, signing_secret(settings))
    finally:
        if profile:
            proc.send_signal(signal.SIGINT)
        else:
            proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
