"""Annotation benchmark: N clients drawing concurrently on one shared DICOM document.

The server runs in its own process (`teleconsult serve`, fresh data dir, per-connection rate
limit lifted); the Python clients (annotation.client) run in this process on one clock.
Phases:
  1. throughput: every client draws length marks as fast as acks allow (a window of
     outstanding updates per client); ops/s = marks / time until every client has every mark;
  2. fan-out: clients draw at a fixed total rate; latency from a mark's local write to its
     arrival in each other client's doc (p50/p99);
  3. late join: the document is topped up to --doc-ops marks, then a new client opens it;
     time from `doc:open` to holding the whole document.

    python bench/annotation.py [--quick] [--clients N] [--ops N] [--rate R] [--doc-ops N]

The last line printed is one JSON object with the results.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ROOM = "bench-mdt"


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    idx = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return round(ordered[idx], 2)


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def upload_ct(url: str, token: str) -> dict[str, Any]:
    from pydicom.data import get_testdata_file

    data = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    req = urllib.request.Request(
        f"{url}/api/rooms/{ROOM}/documents?name=CT_small.dcm", data=data, method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/dicom"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())["document"]


async def run(url: str, secret: str, opts: argparse.Namespace, server_pid: int) -> dict[str, Any]:
    from annotation.client import AnnotationClient, ClientDoc
    from annotation.model import annotations_map
    from signaling.tokens import mint_token

    def token(identity: str, role: str = "clinician") -> str:
        return mint_token(secret, room=ROOM, identity=identity, role=role, ttl_s=3600)

    doc = await asyncio.to_thread(upload_ct, url, token("host", "host"))
    log(f"uploaded {doc['id']}")
    clients = [AnnotationClient(url, token(f"dr-{i}")) for i in range(opts.clients)]
    await asyncio.gather(*(c.connect() for c in clients))
    docs: list[ClientDoc] = [await c.open(doc["id"]) for c in clients]
    log(f"{len(docs)} clients opened the document")

    sent_at: dict[str, tuple[int, float]] = {}
    fanout: list[float] = []
    recording = {"on": False}

    def observer(me: int):
        def on_change(event: Any) -> None:
            now = time.perf_counter()
            for key, change in event.keys.items():
                if change.get("action") != "add":
                    continue
                origin = sent_at.get(key)
                if origin is not None and origin[0] != me and recording["on"]:
                    fanout.append((now - origin[1]) * 1000.0)
        return on_change

    maps = [annotations_map(d.doc) for d in docs]
    subs = [m.observe(observer(i)) for i, m in enumerate(maps)]

    def draw(i: int, k: int) -> None:
        x, y = float(k % 100), float((k // 100) % 100)
        t = time.perf_counter()
        key = docs[i].draw_length((x, y), (x + 10.0, y + 5.0))
        sent_at[key] = (i, t)

    async def all_have(n: int, timeout: float) -> None:
        async def one(c: AnnotationClient, d: ClientDoc) -> None:
            await c.wait_until(lambda: len(annotations_map(d.doc)) >= n, timeout)
        try:
            await asyncio.gather(*(one(c, d) for c, d in zip(clients, docs, strict=True)))
        except TimeoutError:
            log(f"not converged to {n}: have {[len(annotations_map(d.doc)) for d in docs]}, "
                f"outstanding {[d._outstanding for d in docs]}, "
                f"seq {[(d.last_seq, d.saved_seq) for d in docs]}, errors "
                f"{[d.errors[-1:] for d in docs]} {[c.errors[-1:] for c in clients]}")
            raise

    # 1. throughput -------------------------------------------------------------------------
    window = opts.window
    cpu0 = proc_cpu_s(server_pid)
    t0 = time.perf_counter()

    async def blast(i: int) -> None:
        d = docs[i]
        for k in range(opts.ops):
            await d.backpressure(window, timeout=opts.wait_s)
            draw(i, k)
            if k % 8 == 0:
                await asyncio.sleep(0)
        await d.flush(timeout=opts.wait_s)

    await asyncio.gather(*(blast(i) for i in range(opts.clients)))
    total = opts.clients * opts.ops
    await all_have(total, opts.wait_s)
    elapsed = time.perf_counter() - t0
    server_cpu_s = proc_cpu_s(server_pid) - cpu0
    first = docs[0].annotations()
    converged_1 = all(d.annotations() == first for d in docs[1:]) and len(first) == total

    log(f"phase 1: {total} ops in {elapsed:.2f} s")
    # 2. fan-out at a fixed rate -------------------------------------------------------------
    per_client_interval = opts.clients / opts.rate
    n_each = max(1, int(opts.fanout_s / per_client_interval))
    recording["on"] = True
    base = len(first)

    async def paced(i: int) -> None:
        await asyncio.sleep(per_client_interval * i / opts.clients)
        start = time.perf_counter()
        for k in range(n_each):
            target = start + k * per_client_interval
            delay = target - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            draw(i, 10_000 + k)
        await docs[i].flush(timeout=opts.wait_s)

    t1 = time.perf_counter()
    await asyncio.gather(*(paced(i) for i in range(opts.clients)))
    await all_have(base + n_each * opts.clients, opts.wait_s)
    paced_elapsed = time.perf_counter() - t1
    recording["on"] = False

    log(f"phase 2: {len(fanout)} fan-out samples in {paced_elapsed:.2f} s")
    # 3. late join on a document of --doc-ops operations ------------------------------------
    have = len(annotations_map(docs[0].doc))
    remaining = max(0, opts.doc_ops - have)
    if remaining:
        per = remaining // opts.clients + 1
        old_ops, opts.ops = opts.ops, per
        await asyncio.gather(*(blast(i) for i in range(opts.clients)))
        opts.ops = old_ops
    n_doc = len(annotations_map(docs[0].doc))
    log(f"phase 3: document topped up to {n_doc} marks")
    await all_have(n_doc, opts.wait_s)
    late = AnnotationClient(url, token("dr-late"))
    await late.connect()
    t2 = time.perf_counter()
    dl = await late.open(doc["id"])
    late_ms = (time.perf_counter() - t2) * 1000.0
    final = docs[0].annotations()
    converged = converged_1 and dl.annotations() == final and all(
        d.annotations() == final for d in docs[1:])
    update_bytes = len(dl.doc.get_update())
    for m, sub in zip(maps, subs, strict=True):
        m.unobserve(sub)
    errors = sum(len(d.errors) for d in docs) + sum(len(c.errors) for c in clients)
    await asyncio.gather(*(c.close() for c in [*clients, late]))
    return {
        "bench": "annotation",
        "clients": opts.clients,
        "ops": total,
        "elapsed_s": round(elapsed, 3),
        "ops_per_s": round(total / elapsed, 1),
        "server_cpu_pct": round(100.0 * server_cpu_s / elapsed, 1),
        "server_cpu_ms_per_op": round(1000.0 * server_cpu_s / total, 3),
        "converged": bool(converged),
        "fanout_rate_ops_s": round(n_each * opts.clients / paced_elapsed, 1),
        "fanout_samples": len(fanout),
        "fanout_ms_p50": pct(fanout, 50),
        "fanout_ms_p99": pct(fanout, 99),
        "late_join_doc_ops": n_doc,
        "late_join_doc_bytes": update_bytes,
        "late_join_sync_ms": round(late_ms, 1),
        "errors": errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small run (a few seconds)")
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--ops", type=int, default=300, help="marks per client, phase 1")
    parser.add_argument("--window", type=int, default=16, help="unacked updates per client")
    parser.add_argument("--rate", type=float, default=1000.0, help="total marks/s, phase 2")
    parser.add_argument("--fanout-s", type=float, default=5.0, help="duration of phase 2")
    parser.add_argument("--doc-ops", type=int, default=10_000, help="document size, phase 3")
    parser.add_argument("--wait-s", type=float, default=120.0, help="bound on every wait")
    opts = parser.parse_args()
    if opts.quick:
        opts.clients, opts.ops, opts.fanout_s, opts.doc_ops = 4, 100, 2.0, 2_000
        opts.rate = 400.0

    from rtc_server.config import load_settings, prepare_data_dir, signing_secret

    data_dir = Path(tempfile.mkdtemp(prefix="tc-bench-ann-", dir=os.environ.get("BENCH_TMP")))
    settings = prepare_data_dir(load_settings(overrides={"data_dir": data_dir}, environ={}))
    secret = signing_secret(settings)
    port = free_port()
    env = {
        **os.environ,
        "TELECONSULT_LIMITS__RATE_PER_S": "100000",
        "TELECONSULT_LIMITS__RATE_BURST": "100000",
        "TELECONSULT_LOG_LEVEL": "warning",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "rtc_server.cli", "serve", "--port", str(port),
         "--data-dir", str(data_dir)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("server did not start") from None
                time.sleep(0.2)
        result = asyncio.run(asyncio.wait_for(run(url, secret, opts, server.pid), 900))
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
