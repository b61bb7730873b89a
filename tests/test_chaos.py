"""Chaos: a room keeps serving its host while its patients misbehave, and loses nothing it
acknowledged when the server is killed (kill -9) and restarted.

A real `teleconsult serve` process; a host (document + lock + chat), patient 李 (a bare
WebSocket client) and patient 陈 (a python-socketio client in its own process). While the host
locks, unlocks, chats and draws without pause (every action acknowledged within 5 s, the
issue's bound on each wait), both patients go half-open (李 stops answering and reading, 陈's
process is SIGSTOPped) until the server drops them; 李 reconnects, floods and sends garbage;
陈's process is SIGKILLed. Then the server is SIGKILLed, restarted on the same data dir, and
every acknowledged chat message, the last acknowledged lock state and every acknowledged mark
are still there.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import socketio
from pydicom.data import get_testdata_file

from annotation.client import AnnotationClient, ClientDoc
from rtc_server.config import load_settings, prepare_data_dir, signing_secret
from tests.helpers import Tokens, serve_process
from tests.rawsio import RawClient

ROOM = "mdt-chaos"
CT_BYTES = Path(get_testdata_file("CT_small.dcm")).read_bytes()
ACK_S = 5.0  # the bound on every host action
CONFIG = """[limits]
ping_interval_s = 1.0
ping_timeout_s = 2.0
"""
# a python-socketio patient in its own process: joins, says so, then just stays connected
PEER = """
import asyncio, sys, socketio
async def main(url, token):
    sio = socketio.AsyncClient(reconnection=False)
    await sio.connect(url, auth={"token": token}, transports=["websocket"], wait_timeout=10)
    ack = await sio.call("join", {}, timeout=10)
    print(ack.get("status"), flush=True)
    await asyncio.Event().wait()
asyncio.run(main(sys.argv[1], sys.argv[2]))
"""
GARBAGE = [
    '42["chat:send"',  # truncated JSON
    '42{"not":"a list"}',
    "42[]",
    "42[null]",
    "42[123,{}]",
    "4",
    '42["connect",{"REMOTE_ADDR":"203.0.113.7"},{"token":"forged"}]',
    '42["disconnect","client namespace disconnect"]',
    '40{"token":"forged"}',  # a second Socket.IO connect on the same connection
    '42["host:lock",{"locked":false}]',  # a patient may not
    '42["lobby:admit",{"identity":"nobody"}]',
    '42["no:such:event",{}]',
    '42["chat:send",{"text":"' + "洪" * 70_000 + '"}]',  # over the message bound
    '42["chat:send",{"text":"\\ud800"}]',  # a lone surrogate
    '42["chat:send",{"text":"ok","reply_to":1180591620717411303424}]',  # 2^70
]


@dataclass
class Acked:
    """What the server acknowledged to the host (must survive kill -9)."""

    chat: dict[int, str] = field(default_factory=dict)
    locked: bool | None = None
    marks: list[str] = field(default_factory=list)
    rounds: int = 0


class Seen:
    """Events the host received, for bounded waits."""

    def __init__(self, sio: socketio.AsyncClient) -> None:
        self.events: dict[str, list[Any]] = defaultdict(list)
        self.changed = asyncio.Condition()
        for name in ("participant:joined", "participant:left", "lobby:queue"):
            sio.on(name, self._recorder(name))

    def _recorder(self, name: str) -> Any:
        async def record(data: Any = None) -> None:
            async with self.changed:
                self.events[name].append(data)
                self.changed.notify_all()

        return record

    def has(self, name: str, identity: str) -> bool:
        return any(isinstance(e, dict) and e.get("identity") == identity for e in self.events[name])

    def waiting(self, identity: str) -> bool:
        return any(
            any(x.get("identity") == identity for x in e.get("entries", []))
            for e in self.events["lobby:queue"]
        )

    async def until(self, check: Any, timeout: float, what: str) -> None:
        try:
            async with asyncio.timeout(timeout), self.changed:
                await self.changed.wait_for(check)
        except TimeoutError:
            raise AssertionError(f"host never saw {what} within {timeout} s") from None


async def _bounded(what: str, coro: Any) -> Any:
    try:
        async with asyncio.timeout(ACK_S):
            return await coro
    except (TimeoutError, socketio.exceptions.TimeoutError):
        raise AssertionError(f"{what}: no acknowledgement within {ACK_S} s") from None


async def _host_round(host: AnnotationClient, doc: ClientDoc, acked: Acked) -> None:
    n = acked.rounds + 1
    locked = n % 2 == 1
    await _bounded("host:lock", host.call("host:lock", {"locked": locked}, timeout=ACK_S))
    acked.locked = locked
    text = f"第{n}轮 查房记录 血压正常"
    ack = await _bounded("chat:send", host.call("chat:send", {"text": text}, timeout=ACK_S))
    acked.chat[ack["message"]["id"]] = text
    if n % 3 == 0:
        mark = doc.draw_arrow((10.0 + n, 10.0), (40.0 + n, 30.0), text=f"病灶{n}")
        await _bounded("doc flush", doc.flush(timeout=ACK_S))
        acked.marks.append(mark)
    acked.rounds = n


async def _upload_ct(url: str, token: str) -> str:
    form = aiohttp.FormData()
    form.add_field("file", CT_BYTES, filename="ct.dcm", content_type="application/octet-stream")
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{url}/api/rooms/{ROOM}/documents",
            data=form,
            headers={"Authorization": f"Bearer {token}"},
            timeout=aiohttp.ClientTimeout(total=30),
        ) as resp,
    ):
        body = await resp.json()
        assert resp.status == 201, body
        return str(body["document"]["id"])


async def _chaos(
    url: str, tokens: Tokens, host: Seen, li: RawClient, peer: asyncio.subprocess.Process
) -> None:
    """What the patients do while the host works."""
    # both patients go half-open: 李 stops answering and reading, 陈's process is stopped;
    # the room keeps sending them updates until the server gives up on them (ping timeout)
    await li.go_silent()
    peer.send_signal(signal.SIGSTOP)
    await host.until(
        lambda: host.has("participant:left", "pt-li") and host.has("participant:left", "pt-chen"),
        30,
        "both half-open patients dropped",
    )
    # 李 comes back on a new connection (admitted before: straight in, even when locked)
    li2 = await RawClient(url, tokens(ROOM, "pt-li", "patient", "李患者")).connect()
    try:
        assert (await li2.call("join", {}))["status"] == "joined"
        # ... floods (no waiting for acks: the rate limit answers) and sends garbage
        for i in range(150):
            await li2.emit("chat:send", {"text": f"刷屏 {i}"})
        for frame in GARBAGE:
            if li2.closed_by_server:
                break
            await li2.send_raw(frame)
        # 陈's stopped process is killed outright
        peer.send_signal(signal.SIGKILL)
        await asyncio.wait_for(peer.wait(), 10)
    finally:
        await li2.close()


async def _admit(host: AnnotationClient, seen: Seen, identity: str) -> None:
    await seen.until(lambda: seen.waiting(identity), 10, f"{identity} waiting")
    await _bounded(f"admit {identity}", host.call("lobby:admit", {"identity": identity}))
    await seen.until(lambda: seen.has("participant:joined", identity), 10, f"{identity} in")


async def test_room_survives_chaos_and_kill_9(tmp_path: Path) -> None:
    data = tmp_path / "data"
    config = tmp_path / "chaos.toml"
    config.write_text(CONFIG)
    settings = prepare_data_dir(load_settings(overrides={"data_dir": data}, environ={}))
    tokens = Tokens(signing_secret(settings))
    host_token = tokens(ROOM, "dr-wang", "host", "王医生")
    acked = Acked()
    peer: asyncio.subprocess.Process | None = None
    li: RawClient | None = None

    with serve_process(data, "--config", str(config), "--room", ROOM) as (server, port, _):
        url = f"http://127.0.0.1:{port}"
        host = AnnotationClient(url, host_token)
        seen = Seen(host.sio)
        await host.connect()
        try:
            doc = await host.open(await _upload_ct(url, host_token))
            li = RawClient(url, tokens(ROOM, "pt-li", "patient", "李患者"))
            await li.connect()
            assert (await li.call("join", {}))["status"] == "waiting"
            await _admit(host, seen, "pt-li")
            peer = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                PEER,
                url,
                tokens(ROOM, "pt-chen", "patient", "陈患者"),
                stdout=asyncio.subprocess.PIPE,
            )
            assert peer.stdout is not None
            status = await asyncio.wait_for(peer.stdout.readline(), 30)
            assert status.strip() == b"waiting", status
            await _admit(host, seen, "pt-chen")

            chaos = asyncio.create_task(_chaos(url, tokens, seen, li, peer))
            async with asyncio.timeout(90):
                while not chaos.done() or acked.rounds < 10:
                    await _host_round(host, doc, acked)
                    # pacing: a host clicks a few times a second (keeps within the rate limit)
                    await asyncio.sleep(0.1)
            await chaos  # re-raises what went wrong on the patients' side
            await _host_round(host, doc, acked)
        finally:
            await host.close()
            if li is not None:
                await li.close()
            if peer is not None:
                if peer.returncode is None:
                    peer.kill()
                await asyncio.wait_for(peer.wait(), 10)
        # kill -9 the server; restart it on the same data dir
        server.kill()
        await asyncio.to_thread(server.wait, 30)
    assert acked.rounds >= 10 and len(acked.marks) >= 3

    with serve_process(data, "--config", str(config), "--room", ROOM) as (_server, port, _):
        url = f"http://127.0.0.1:{port}"
        host = AnnotationClient(url, tokens(ROOM, "dr-wang", "host", "王医生"))
        await host.connect()
        try:
            assert host.joined["room"]["locked"] is acked.locked
            history: dict[int, str] = {}
            before: int | None = None
            for _ in range(50):  # bounded paging
                page = await host.call("chat:history", {"limit": 200, "before_id": before})
                messages = page["messages"]
                history.update({m["id"]: m["text"] for m in messages})
                if len(messages) < 200:
                    break
                before = min(m["id"] for m in messages)
            lost = {i: t for i, t in acked.chat.items() if history.get(i) != t}
            assert not lost, f"acknowledged chat lost: {list(lost.items())[:5]}"
            docs = await host.list_documents()
            reopened = await host.open(docs[0]["id"])
            marks = reopened.annotations()
            missing = [m for m in acked.marks if m not in marks]
            assert not missing, f"acknowledged marks lost: {missing}"
        finally:
            await host.close()
