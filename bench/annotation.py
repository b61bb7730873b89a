"""Annotation benchmark: N clients drawing concurrently on one shared DICOM document.

The server runs in its own process (`teleconsult serve`, fresh data dir, per-connection rate
limit lifted); the Python clients (annotation.client) run in --workers spawned processes;
send and receive times are taken on the machine's monotonic clock (time.perf_counter), which
all processes share.
Phases:
  1. throughput: every client draws length marks as fast as acks allow (a window of
     outstanding updates per client); ops/s = marks / time until every client has every mark;
     the server's and the client processes' CPU per mark; server_capacity_ops_s = marks a
     second one core of server CPU would carry at that cost (here the Python clients, which
     apply every mark, share the machine with the server; a room's real clients do not);
  2. fan-out: clients draw at a fixed total rate; latency from a mark's local write to its
     arrival in each other client's doc (p50/p99);
  3. late join: the document is topped up to --doc-ops marks, then a new client opens it;
     time from `doc:open` to holding the whole document.

    python bench/annotation.py [--quick] [--clients N] [--ops N] [--rate R] [--doc-ops N]
    python bench/annotation.py --micro [--quick]   # the server's sync path in-process

The last line printed is one JSON object with the results.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import multiprocessing as mp
import os
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from benchlib import pct, proc_cpu_s, serve  # noqa: E402  (puts ROOT first on sys.path)

ROOM = "bench-mdt"


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def upload_ct(url: str, token: str) -> dict[str, Any]:
    from pydicom.data import get_testdata_file

    data = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    req = urllib.request.Request(
        f"{url}/api/rooms/{ROOM}/documents?name=CT_small.dcm",
        data=data,
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/dicom"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())["document"]


def mark_time(text: str) -> float | None:
    """The send time a bench mark carries in its text ("t=<perf_counter>")."""
    if text.startswith("t="):
        try:
            return float(text[2:])
        except ValueError:
            return None
    return None


async def worker_main(
    url: str, secret: str, doc_id: str, indices: list[int], opts: dict[str, Any], ctl: Any, out: Any
) -> None:
    """One client process: its clients draw; fan-out is timed on the shared monotonic clock."""
    from annotation.client import AnnotationClient, ClientDoc
    from annotation.model import annotations_map
    from kernel.tokens import mint_token

    wait_s = opts["wait_s"]

    async def gate(name: str) -> None:
        if not await asyncio.to_thread(ctl[name].wait, wait_s * 3):
            raise TimeoutError(f"no {name} signal")

    clients = [
        AnnotationClient(
            url, mint_token(secret, room=ROOM, identity=f"dr-{i}", role="clinician", ttl_s=3600)
        )
        for i in indices
    ]
    await asyncio.gather(*(c.connect() for c in clients))
    docs: list[ClientDoc] = [await c.open(doc_id) for c in clients]
    maps = [annotations_map(d.doc) for d in docs]
    fanout: list[float] = []
    own: list[set[str]] = [set() for _ in docs]

    def observer(j: int) -> Any:
        def on_change(event: Any) -> None:
            now = time.perf_counter()
            for key, change in event.keys.items():
                if change.get("action") != "add" or key in own[j]:
                    continue
                sent = mark_time(str(maps[j][key].get("text") or ""))
                if sent is not None:
                    fanout.append((now - sent) * 1000.0)

        return on_change

    def draw(j: int, k: int) -> None:
        x, y = float(k % 100), float((k // 100) % 100)
        key = docs[j].draw(
            "length", [(x, y), (x + 10.0, y + 5.0)], text=f"t={time.perf_counter():.6f}"
        )
        own[j].add(key)

    async def all_have(n: int) -> None:
        async def one(c: AnnotationClient, m: Any) -> None:
            await c.wait_until(lambda: len(m) >= n, wait_s)

        await asyncio.gather(*(one(c, m) for c, m in zip(clients, maps, strict=True)))

    async def blast(j: int, count: int) -> None:
        for k in range(count):
            await docs[j].backpressure(opts["window"], timeout=wait_s)
            draw(j, k)
            if k % 8 == 0:
                await asyncio.sleep(0)
        await docs[j].flush(timeout=wait_s)

    async def paced(j: int, count: int, interval: float, offset: float) -> None:
        await asyncio.sleep(offset)
        start = time.perf_counter()
        for k in range(count):
            delay = start + k * interval - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            draw(j, 100_000 + k)
        await docs[j].flush(timeout=wait_s)

    out.put(("ready", None))
    await gate("go1")
    await asyncio.gather(*(blast(j, opts["ops"]) for j in range(len(docs))))
    await all_have(opts["phase1_total"])
    out.put(("phase1", time.perf_counter()))

    await gate("go2")
    # observed in phase 2 only: pycrdt builds every event's Python values before the callback
    # runs, which in phase 1 cost the clients about 7 % of their CPU for nothing
    subs = [m.observe(observer(j)) for j, m in enumerate(maps)]
    interval = opts["clients"] / opts["rate"]
    await asyncio.gather(
        *(
            paced(j, opts["paced_each"], interval, interval * indices[j] / opts["clients"])
            for j in range(len(docs))
        )
    )
    await all_have(opts["phase2_total"])
    for m, sub in zip(maps, subs, strict=True):
        m.unobserve(sub)
    out.put(("phase2", fanout))

    await gate("go3")
    await asyncio.gather(*(blast(j, opts["topup_each"]) for j in range(len(docs))))
    out.put(("phase3", None))
    await gate("sync3")
    await all_have(opts["doc_total"])
    digests = [
        hashlib.sha256(json.dumps(d.annotations(), sort_keys=True).encode()).hexdigest()
        for d in docs
    ]
    errors = sum(len(d.errors) for d in docs) + sum(len(c.errors) for c in clients)
    out.put(("digests", (digests, errors)))
    await gate("close")
    await asyncio.gather(*(c.close() for c in clients))


def worker(args: tuple[Any, ...]) -> None:
    url, secret, doc_id, indices, opts, ctl, out = args
    try:
        asyncio.run(worker_main(url, secret, doc_id, indices, opts, ctl, out))
    except BaseException as exc:
        out.put(("failed", repr(exc)))
        raise


def collect(queue: Any, kind: str, n: int, timeout: float) -> list[Any]:
    got = []
    for _ in range(n):
        k, value = queue.get(timeout=timeout)
        if k == "failed":
            raise SystemExit(f"a client worker failed: {value}")
        if k != kind:
            raise SystemExit(f"expected {kind} from a worker, got {k}")
        got.append(value)
    return got


def run(url: str, secret: str, opts: argparse.Namespace, server_pid: int) -> dict[str, Any]:
    from kernel.tokens import mint_token

    def token(identity: str, role: str = "clinician") -> str:
        return mint_token(secret, room=ROOM, identity=identity, role=role, ttl_s=3600)

    doc = upload_ct(url, token("host", "host"))
    log(f"uploaded {doc['id']}")
    workers = max(1, min(opts.workers, opts.clients))
    shards = [list(range(opts.clients))[w::workers] for w in range(workers)]
    interval = opts.clients / opts.rate
    paced_each = max(1, int(opts.fanout_s / interval))
    phase1_total = opts.clients * opts.ops
    phase2_total = phase1_total + opts.clients * paced_each
    topup_each = max(0, -(-(opts.doc_ops - phase2_total) // opts.clients))
    doc_total = phase2_total + topup_each * opts.clients
    shared = {
        "ops": opts.ops,
        "window": opts.window,
        "wait_s": opts.wait_s,
        "clients": opts.clients,
        "rate": opts.rate,
        "paced_each": paced_each,
        "phase1_total": phase1_total,
        "phase2_total": phase2_total,
        "topup_each": topup_each,
        "doc_total": doc_total,
    }
    ctx = mp.get_context("spawn")
    ctl = {name: ctx.Event() for name in ("go1", "go2", "go3", "sync3", "close")}
    queue = ctx.Queue()
    procs = [
        ctx.Process(target=worker, args=((url, secret, doc["id"], shard, shared, ctl, queue),))
        for shard in shards
    ]
    for p in procs:
        p.start()
    try:
        wait = opts.wait_s * 3
        collect(queue, "ready", workers, wait)
        log(f"{opts.clients} clients in {workers} processes opened the document")
        cpu0 = proc_cpu_s(server_pid)
        clients_cpu0 = sum(proc_cpu_s(p.pid) for p in procs if p.pid is not None)
        t0 = time.perf_counter()
        ctl["go1"].set()
        ends = collect(queue, "phase1", workers, wait)
        elapsed = max(ends) - t0
        server_cpu_s = proc_cpu_s(server_pid) - cpu0
        clients_cpu_s = sum(proc_cpu_s(p.pid) for p in procs if p.pid is not None) - clients_cpu0
        log(f"phase 1: {phase1_total} ops in {elapsed:.2f} s")
        t1 = time.perf_counter()
        ctl["go2"].set()
        fanout = [v for part in collect(queue, "phase2", workers, wait) for v in part]
        paced_elapsed = time.perf_counter() - t1
        log(f"phase 2: {len(fanout)} fan-out samples in {paced_elapsed:.2f} s")
        ctl["go3"].set()
        collect(queue, "phase3", workers, wait)
        ctl["sync3"].set()
        results = collect(queue, "digests", workers, wait)
        log(f"phase 3: document of {doc_total} marks; late join")
        late_ms, late_digest, late_bytes = asyncio.run(
            late_join(url, token("dr-late"), doc["id"], doc_total)
        )
        ctl["close"].set()
    finally:
        for ev in ctl.values():
            ev.set()
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()
    digests = {d for ds, _ in results for d in ds}
    errors = sum(e for _, e in results)
    return {
        "bench": "annotation",
        "clients": opts.clients,
        "client_processes": workers,
        "ops": phase1_total,
        "elapsed_s": round(elapsed, 3),
        "ops_per_s": round(phase1_total / elapsed, 1),
        "server_cpu_pct": round(100.0 * server_cpu_s / elapsed, 1),
        "server_cpu_ms_per_op": round(1000.0 * server_cpu_s / phase1_total, 3),
        "client_cpu_ms_per_op": round(1000.0 * clients_cpu_s / phase1_total, 3),
        "server_capacity_ops_s": round(phase1_total / server_cpu_s) if server_cpu_s else None,
        "converged": digests == {late_digest},
        "fanout_rate_ops_s": round(opts.clients * paced_each / paced_elapsed, 1),
        "fanout_samples": len(fanout),
        "fanout_ms_p50": pct(fanout, 50),
        "fanout_ms_p99": pct(fanout, 99),
        "late_join_doc_ops": doc_total,
        "late_join_doc_bytes": late_bytes,
        "late_join_sync_ms": round(late_ms, 1),
        "errors": errors,
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }


async def late_join(url: str, token: str, doc_id: str, expected: int) -> tuple[float, str, int]:
    """Open the document with a fresh client: (ms until it holds every mark, digest, bytes)."""
    from annotation.client import AnnotationClient

    late = AnnotationClient(url, token)
    await late.connect()
    try:
        t0 = time.perf_counter()
        cdoc = await late.open(doc_id)
        ms = (time.perf_counter() - t0) * 1000.0
        if len(cdoc.annotations()) != expected:
            raise SystemExit(f"late joiner got {len(cdoc.annotations())} of {expected} marks")
        digest = hashlib.sha256(json.dumps(cdoc.annotations(), sort_keys=True).encode())
        return ms, digest.hexdigest(), len(cdoc.doc.get_update())
    finally:
        await late.close()


def micro(marks: int) -> dict[str, Any]:
    """In-process CPU of the server's sync path per change (`process_time`, best of 3):
    length marks from 10 clients that see each other's marks, a freehand stroke growing point
    by point, and the update log (10 updates every 2 ms, the driver thread included)."""
    import tempfile
    import uuid

    from pycrdt import Map

    from annotation.fixups import Author, ServerFixups
    from annotation.model import annotations_map, identity_colour, new_doc
    from annotation.persistence import UpdateLog
    from annotation.sync import SyncEngine, update_message
    from annotation.tables import documents
    from rtc_server.migrations import open_store

    def mark(key: str, k: int, j: int, tool: str = "length") -> Map:
        x, y, now = float(k % 100), float((k // 100) % 100), time.time()
        return Map(
            {
                "id": key,
                "author": f"dr-{j}",
                "author_name": f"dr-{j}",
                "colour": identity_colour(f"dr-{j}"),
                "tool": tool,
                "points": [[x, y], [x + 10.0, y + 5.0]],
                "frame": 0,
                "sop_uid": None,
                "text": f"t={k}",
                "created": now,
                "updated": now,
            }
        )

    def capture(doc: Any, change: Any) -> list[bytes]:
        got: list[bytes] = []
        sub = doc.observe(lambda e: got.append(e.update))
        change()
        doc.unobserve(sub)
        return got

    clients = [new_doc() for _ in range(10)]
    lengths: list[tuple[int, bytes]] = []
    for k in range(marks):
        j = k % len(clients)
        key = uuid.uuid4().hex
        for update in capture(
            clients[j],
            lambda j=j, k=k, key=key: annotations_map(clients[j]).__setitem__(key, mark(key, k, j)),
        ):
            lengths.append((j, update))
            for other in clients:
                if other is not clients[j]:
                    other.apply_update(update)
    stroke_doc = new_doc()
    strokes: list[tuple[int, bytes]] = []
    for k in range(max(1, marks // 200)):
        key = uuid.uuid4().hex
        strokes += [
            (0, u)
            for u in capture(
                stroke_doc,
                lambda key=key, k=k: annotations_map(stroke_doc).__setitem__(
                    key, mark(key, k, 0, "freehand")
                ),
            )
        ]
        points = [[0.0, 0.0], [1.0, 1.0]]
        for n in range(2, 200):
            points = [*points, [float(n), float(n % 7)]]
            strokes += [
                (0, u)
                for u in capture(
                    stroke_doc,
                    lambda key=key, p=points: annotations_map(stroke_doc)[key].__setitem__(
                        "points", p
                    ),
                )
            ]

    def handle_us(updates: list[tuple[int, bytes]]) -> float:
        best = float("inf")
        authors = [Author(f"dr-{j}", f"dr-{j}") for j in range(len(clients))]
        messages = [(j, update_message(u)) for j, u in updates]
        for _ in range(3):
            doc = new_doc()
            engine = SyncEngine(doc, after_change=ServerFixups(doc, (0.5, 0.5), None, "HU"))
            t0 = time.process_time()
            for j, m in messages:
                engine.handle(m, can_write=True, origin=authors[j])
            best = min(best, time.process_time() - t0)
        return round(1e6 * best / len(messages), 1)

    async def log_us() -> float:
        best = float("inf")
        for _ in range(3):
            with tempfile.TemporaryDirectory() as tmp:
                store = open_store(f"sqlite+aiosqlite:///{Path(tmp) / 'r.db'}")
                await store.start()
                async with store.engine.begin() as conn:
                    await conn.execute(
                        documents.insert().values(
                            id="d" * 32,
                            room="r",
                            name="n",
                            kind="image",
                            mime="image/png",
                            sha256="0" * 64,
                            size=1,
                            frames=1,
                            width=1,
                            height=1,
                            frame_index=[],
                            uploaded_by="u",
                            uploaded_by_name="U",
                            uploaded_at=time.time(),
                        )
                    )
                log = UpdateLog(store)
                t0 = time.process_time()
                futures = []
                for i, (j, update) in enumerate(lengths):
                    futures.append(log.append("d" * 32, update, f"dr-{j}"))
                    if i % 10 == 9:
                        await asyncio.sleep(0.002)
                await asyncio.wait_for(asyncio.gather(*futures), 60)
                best = min(best, time.process_time() - t0)
                await store.close()
        return round(1e6 * best / len(lengths), 1)

    return {
        "bench": "annotation_micro",
        "marks": marks,
        "handle_us_per_length_mark": handle_us(lengths),
        "handle_us_per_freehand_update": handle_us(strokes),
        "update_log_us_per_update": asyncio.run(log_us()),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small run (a few seconds)")
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--ops", type=int, default=300, help="marks per client, phase 1")
    parser.add_argument("--window", type=int, default=16, help="unacked updates per client")
    parser.add_argument("--rate", type=float, default=200.0, help="total marks/s, phase 2")
    parser.add_argument("--fanout-s", type=float, default=5.0, help="duration of phase 2")
    parser.add_argument("--doc-ops", type=int, default=10_000, help="document size, phase 3")
    parser.add_argument("--wait-s", type=float, default=120.0, help="bound on every wait")
    parser.add_argument("--workers", type=int, default=4, help="client processes")
    parser.add_argument(
        "--micro",
        action="store_true",
        help="in-process CPU of the server's sync path and update log only",
    )
    opts = parser.parse_args()
    if opts.micro:
        print(json.dumps(micro(1_000 if opts.quick else 3_000)))
        return
    if opts.quick:
        opts.clients, opts.ops, opts.fanout_s, opts.doc_ops = 4, 100, 2.0, 2_000
        opts.rate, opts.workers = 200.0, 2

    env = {
        "TELECONSULT_LIMITS__RATE_PER_S": "100000",
        "TELECONSULT_LIMITS__RATE_BURST": "100000",
    }
    profile = os.environ.get("BENCH_SERVER_PROFILE")  # a path: cProfile the server into it
    with serve(env, profile=profile, prefix="tc-bench-ann-") as server:
        result = run(server.url, server.secret, opts, server.proc.pid)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
