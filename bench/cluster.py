"""Scale-out benchmark: capacity with 1 and 2 worker processes, and failover time.

Capacity (signaling: chat messages stored and fanned out). `teleconsult serve --workers W`
runs in its own process tree (W = 1, then 2; records in one SQLite file); a load generator in
another process joins ROOMS rooms of PER_ROOM members (following `wrong_node` redirects, so
each room's members end up on its worker) and sends chat at a fixed offered rate, below
saturation. On this 2-core machine the load generator competes with the workers for CPU, so
the throughput the machine shows is not the servers' capacity. Capacity is therefore taken from
the workers' own CPU time per unit of work, measured from /proc: first with every member
joined and nobody chatting (idle share), then over a steady window under load. Per worker i,
with part_i its share of the rooms (the offered load is the same in every room):

    cpu_share_i = idle_i + rate x part_i x marginal_i
    capacity_W  = min_i (1 - idle_i) / (marginal_i x part_i)

i.e. the message rate at which the busiest worker reaches one full core, assuming each worker
has a core of its own (what `--workers N` is for). It counts imbalance (rooms pinned by
rendezvous hashing may split unevenly) and any per-message overhead of the multi-process setup.
2 workers are measured with Redis placement (least-loaded) and with rendezvous hashing (no
Redis). CPU time per message swings with whatever else runs on the machine, so configurations
are interleaved over rounds and summarised by medians.
`scaling_ratio = capacity_2_workers (Redis placement) / capacity_1_worker`.

Failover: two nodes on our own redis-server (default heartbeat 1 s, TTL 5 s), records shared;
a room with two participants and chat history; `kill -9` of the hosting node; both clients
reconnect through the surviving node (redirects followed) and re-join.
`failover_s` = kill to both re-joined with the chat history intact.

    python bench/cluster.py [--quick]

The last line printed is one JSON object with the results.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PER_ROOM = 4


def free_port(span: int = 1) -> int:
    """A port p with p .. p+span-1 free (best effort)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port + span > 65535:
            continue
        ok = True
        for extra in range(1, span):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port + extra))
                except OSError:
                    ok = False
        if ok:
            return port
    raise RuntimeError("no free port range")


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def worker_pids(supervisor: int, workers: int) -> dict[int, int]:
    if workers == 1:
        return {0: supervisor}
    out = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if ppid == supervisor and b"--worker-index" in cmd:
            out[int(cmd[cmd.index(b"--worker-index") + 1])] = int(proc.name)
    return out


def wait_tcp(port: int, timeout: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {port}")


def env(**settings: str) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("TELECONSULT_")}
    out["PYTHONPATH"] = str(ROOT)
    out.update({f"TELECONSULT_{k.upper()}": v for k, v in settings.items()})
    return out


def secret_of(data_dir: Path) -> str:
    from rtc_server.config import load_settings, prepare_data_dir, signing_secret

    return signing_secret(
        prepare_data_dir(load_settings(overrides={"data_dir": data_dir}, environ={}))
    )


async def connect_routed(url: str, token: str, hops: int = 3) -> Any:
    """A socketio client connected at the room's node (wrong_node redirects followed)."""
    import socketio

    for _ in range(hops + 1):
        sio = socketio.AsyncClient(reconnection=False)
        refused: dict[str, Any] = {}

        @sio.on("connect_error")
        async def on_error(data: Any, _r: dict[str, Any] = refused) -> None:
            _r["data"] = data

        try:
            await sio.connect(url, auth={"token": token}, transports=["websocket"], wait_timeout=15)
            sio.bench_url = url  # type: ignore[attr-defined]
            return sio
        except socketio.exceptions.ConnectionError as exc:
            got = refused.get("data")
            inner = got.get("data") if isinstance(got, dict) else None
            if isinstance(inner, dict) and inner.get("code") == "wrong_node":
                url = inner["url"]
                continue
            raise ConnectionError(str(refused.get("data") or exc)) from None
    raise ConnectionError("too many redirects")


# --- capacity -------------------------------------------------------------------------------


def load_generator(
    url: str, secret: str, rooms: list[str], rate: float, warmup: float, window: float, out: Any
) -> None:
    """Process body: join the rooms, then send chat at `rate` msgs/s in total."""
    out.send(asyncio.run(_generate(url, secret, rooms, rate, warmup, window, out)))


async def _generate(
    url: str, secret: str, rooms: list[str], rate: float, warmup: float, window: float, pipe: Any
) -> dict[str, Any]:
    from kernel.tokens import mint_token

    clients: dict[str, list[Any]] = {}
    for room in rooms:
        members = []
        for i in range(PER_ROOM):
            token = mint_token(
                secret,
                room=room,
                identity=f"u{i}",
                role="host" if i == 0 else "clinician",
                ttl_s=3600,
            )
            sio = await connect_routed(url, token)
            ack = await sio.call("join", {}, timeout=30)
            assert ack.get("ok") and ack.get("status") == "joined", ack
            members.append(sio)
        clients[room] = members
    placement: dict[str, str] = {r: m[0].bench_url for r, m in clients.items()}
    pipe.send({"ready": True, "placement": placement})
    pipe.recv()  # go

    acked = 0
    failed = 0
    in_window = 0
    stop_at = time.perf_counter() + warmup + window
    window_start = time.perf_counter() + warmup
    per_room = rate / len(rooms)

    async def sender(room: str) -> None:
        nonlocal acked, failed, in_window
        members = clients[room]
        n = 0
        start = time.perf_counter() + (hash(room) % 1000) / 1000 / per_room
        while True:
            due = start + n / per_room
            if due > stop_at:
                return
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            sio = members[n % PER_ROOM]
            n += 1
            try:
                ack = await sio.call("chat:send", {"text": f"m{n}"}, timeout=30)
            except Exception:
                failed += 1
                continue
            if ack.get("ok"):
                acked += 1
                if window_start <= time.perf_counter() <= stop_at:
                    in_window += 1
            else:
                failed += 1

    senders = [asyncio.create_task(sender(r)) for r in rooms]
    await asyncio.sleep(warmup)
    pipe.send({"window": "start"})
    await asyncio.sleep(window)
    pipe.send({"window": "end"})
    await asyncio.gather(*senders)
    for members in clients.values():
        for sio in members:
            await sio.disconnect()
    return {"acked": acked, "failed": failed, "in_window": in_window}


def capacity(
    workers: int,
    rooms: list[str],
    rate: float,
    warmup: float,
    window: float,
    redis: bool = False,
    idle_window: float = 3.0,
) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="tc-bench-cluster-"))
    port = free_port(span=workers)
    data = tmp / "data"
    log = (tmp / "server.log").open("wb")
    redis_proc = None
    extra: list[str] = []
    if redis:
        redis_proc, rport = start_redis(tmp)
        extra = ["--redis-url", f"redis://127.0.0.1:{rport}/0"]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rtc_server.cli",
            "serve",
            "--workers",
            str(workers),
            "--port",
            str(port),
            "--data-dir",
            str(data),
            *extra,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        env=env(
            log_level="warning",
            limits__rate_per_s="1000",
            limits__rate_burst="1000",
            audit_head_interval_s="5",
        ),
    )
    try:
        for i in range(workers):
            wait_tcp(port + i, 60, proc)
        pids = worker_pids(proc.pid, workers)
        parent, child = mp.Pipe()
        gen = mp.get_context("spawn").Process(
            target=load_generator,
            args=(f"http://127.0.0.1:{port}", secret_of(data), rooms, rate, warmup, window, child),
        )
        gen.start()
        if not parent.poll(120):
            raise TimeoutError("load generator did not get ready")
        ready = parent.recv()
        placement = ready["placement"]
        # idle: every member joined, nobody chatting (heartbeats, pings, timers)
        idle0 = {i: proc_cpu_s(p) for i, p in pids.items()}
        t_idle = time.perf_counter()
        time.sleep(idle_window)
        idle_elapsed = time.perf_counter() - t_idle
        idle = {i: (proc_cpu_s(p) - idle0[i]) / idle_elapsed for i, p in pids.items()}
        parent.send("go")
        if not parent.poll(warmup + 60):
            raise TimeoutError("no window start")
        parent.recv()
        t0 = time.perf_counter()
        cpu0 = {i: proc_cpu_s(p) for i, p in pids.items()}
        if not parent.poll(window + 60):
            raise TimeoutError("no window end")
        parent.recv()
        elapsed = time.perf_counter() - t0
        cpu = {i: proc_cpu_s(p) - cpu0[i] for i, p in pids.items()}
        if not parent.poll(120):
            raise TimeoutError("load generator did not finish")
        result = parent.recv()
        gen.join(30)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()
        if redis_proc is not None:
            redis_proc.kill()
            redis_proc.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)
    handled = result["in_window"] / elapsed
    shares = {i: c / elapsed for i, c in cpu.items()}
    # rooms per worker (by port), and each worker's share of the offered load
    split = dict.fromkeys(pids, 0)
    for url in placement.values():
        split[int(url.rsplit(":", 1)[1]) - port] += 1
    # linear model per worker: cpu_share = idle + msgs_s x marginal; a worker saturates at one
    # core; the cluster saturates when its busiest worker does (load splits by rooms)
    limits = []
    for i in pids:
        part = split[i] / len(rooms)
        if part == 0:
            continue
        marginal = (shares[i] - idle[i]) / (handled * part)
        limits.append((1.0 - idle[i]) / marginal / part if marginal > 0 else float("inf"))
    cap = min(limits) if limits else None
    return {
        "workers": workers,
        "placement": "redis least-loaded" if redis else ("rendezvous" if workers > 1 else "-"),
        "offered_msgs_s": rate,
        "handled_msgs_s": round(handled, 1),
        "failed": result["failed"],
        "worker_cpu_share": {str(i): round(v, 3) for i, v in sorted(shares.items())},
        "worker_idle_share": {str(i): round(v, 3) for i, v in sorted(idle.items())},
        "rooms_per_worker": {str(i): n for i, n in sorted(split.items())},
        "cpu_ms_per_msg": round(
            1000 * sum(shares[i] - idle[i] for i in pids) / max(handled, 1e-9), 3
        ),
        "capacity_msgs_s": round(cap, 1) if cap is not None else None,
    }


# --- failover -------------------------------------------------------------------------------


def start_redis(tmp: Path) -> tuple[subprocess.Popen, int]:
    exe = shutil.which("redis-server")
    if exe is None:
        raise RuntimeError("redis-server is not installed (scripts/test installs it)")
    rport = free_port()
    proc = subprocess.Popen(
        [
            exe,
            "--port",
            str(rport),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_tcp(rport, 30, proc)
    return proc, rport


def start_node(name: str, data: Path, rport: int) -> tuple[subprocess.Popen, str, int]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rtc_server.cli",
            "serve",
            "--port",
            str(port),
            "--data-dir",
            str(data),
            "--node-id",
            name,
            "--redis-url",
            f"redis://127.0.0.1:{rport}/0",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
        env=env(log_level="warning"),
    )
    wait_tcp(port, 60, proc)
    return proc, f"http://127.0.0.1:{port}", port


async def failover(timeout_s: float = 30.0) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="tc-bench-failover-"))
    data = tmp / "data"
    nodes: dict[str, tuple[subprocess.Popen, str]] = {}
    clients: list[Any] = []
    redis_proc, rport = await asyncio.to_thread(start_redis, tmp)
    try:
        for name in ("n1", "n2"):
            proc, url, _port = await asyncio.to_thread(start_node, name, data, rport)
            nodes[name] = (proc, url)
        from kernel.tokens import mint_token

        secret = secret_of(data)
        tokens = [
            mint_token(secret, room="fo", identity=i, role=r, ttl_s=3600)
            for i, r in (("dr", "host"), ("cl", "clinician"))
        ]
        urls = [u for _p, u in nodes.values()]
        for token in tokens:
            sio = await connect_routed(urls[1], token)
            assert (await sio.call("join", {}, timeout=15))["status"] == "joined"
            clients.append(sio)
        for k in range(5):
            assert (await clients[0].call("chat:send", {"text": f"before {k}"}))["ok"]
        home = clients[0].bench_url
        victim = next(p for p, u in nodes.values() if u == home)
        survivor = next(u for _p, u in nodes.values() if u != home)
        dropped = [asyncio.Event() for _ in clients]
        for sio, ev in zip(clients, dropped, strict=True):
            sio.on("disconnect", lambda *_a, _e=ev: _e.set())
        started = time.perf_counter()
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in dropped)), 10)

        async def rejoin(token: str) -> dict[str, Any]:
            deadline = time.perf_counter() + timeout_s
            while True:
                for url in (home, survivor):
                    try:
                        sio = await connect_routed(url, token)
                    except (ConnectionError, OSError):
                        continue
                    clients.append(sio)
                    return await sio.call("join", {}, timeout=15)
                if time.perf_counter() > deadline:
                    raise TimeoutError("no node accepted the client")
                await asyncio.sleep(0.2)

        joined = await asyncio.gather(*(rejoin(t) for t in tokens))
        took = time.perf_counter() - started
        history = [m["text"] for m in joined[0]["chat"]]
        intact = history[-5:] == [f"before {k}" for k in range(5)]
        return {
            "failover_s": round(took, 2),
            "chat_intact": intact,
            "rejoined": all(j.get("status") == "joined" for j in joined),
        }
    finally:
        for sio in clients:
            try:
                await sio.disconnect()
            except Exception:
                pass
        for proc, _url in nodes.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
        redis_proc.kill()
        redis_proc.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)


def median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short windows, 2 rounds (CI)")
    parser.add_argument("--rooms", type=int, default=16)
    parser.add_argument("--rate", type=float, default=None, help="offered chat msgs/s")
    parser.add_argument("--rounds", type=int, default=None)
    args = parser.parse_args()
    rate = args.rate or (120.0 if args.quick else 200.0)
    warmup, window = (2.0, 5.0) if args.quick else (3.0, 12.0)
    rounds = args.rounds or (2 if args.quick else 3)
    rooms = [f"consult-{i:03d}" for i in range(args.rooms)]
    configs = {
        "1": {"workers": 1},
        "2_redis": {"workers": 2, "redis": True},
        "2_rendezvous": {"workers": 2},
    }
    # CPU time per message swings with whatever else this shared machine runs: configurations
    # are interleaved, round after round, and each is summarised by its median
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in configs}
    for n in range(rounds):
        for name, cfg in configs.items():
            result = capacity(
                cfg["workers"], rooms, rate, warmup, window, redis=bool(cfg.get("redis"))
            )
            runs[name].append(result)
            print(json.dumps({"round": n, "config": name, **result}), flush=True)
    cap = {k: median([r["capacity_msgs_s"] for r in v]) for k, v in runs.items()}
    ms = {k: round(median([r["cpu_ms_per_msg"] for r in v]), 3) for k, v in runs.items()}
    fo = asyncio.run(failover())
    print(json.dumps({"phase": "failover", **fo}), flush=True)
    c1, c2, ch = cap["1"], cap["2_redis"], cap["2_rendezvous"]
    print(
        json.dumps(
            {
                "unit": "chat messages/s (stored + fanned out to 4 members) when the busiest "
                "worker reaches one core (median of interleaved rounds)",
                "capacity_1_worker": round(c1, 1),
                "capacity_2_workers": round(c2, 1),
                "scaling_ratio": round(c2 / c1, 2),
                "capacity_2_workers_rendezvous": round(ch, 1),
                "scaling_ratio_rendezvous": round(ch / c1, 2),
                "failover_s": fo["failover_s"],
                "failover_chat_intact": fo["chat_intact"],
                "rooms_per_worker_redis": runs["2_redis"][0]["rooms_per_worker"],
                "rooms_per_worker_rendezvous": runs["2_rendezvous"][0]["rooms_per_worker"],
                "cpu_ms_per_msg": ms,
                "capacity_runs": {k: [r["capacity_msgs_s"] for r in v] for k, v in runs.items()},
                "offered_msgs_s": rate,
                "load_average_1m": round(os.getloadavg()[0], 2),
                "quick": args.quick,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
