"""A half-open client (answers no ping, reads nothing, never closes) must not freeze its room.

Against a real `teleconsult serve` process: a patient's connection goes silent; while the
server finds out, the host keeps locking, unlocking and chatting, each ack within 5 s (the
issue's bound); afterwards a newcomer joins and chats, and SIGTERM still stops the server.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import socketio

from rtc_server.config import load_settings, prepare_data_dir, signing_secret
from tests.helpers import Client, Tokens, serve_process
from tests.rawsio import RawClient

ROOM = "ward-halfopen"
ACK_S = 5.0  # every host action is acknowledged within this (a bound, not a measurement)
# a dead peer is found within seconds; the host's many rounds stay under the rate limit
PING_CONFIG = """[limits]
ping_interval_s = 1.0
ping_timeout_s = 2.0
rate_per_s = 500.0
rate_burst = 1000.0
"""


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "halfopen.toml"
    path.write_text(PING_CONFIG)
    return path


def _tokens(data: Path) -> Tokens:
    settings = prepare_data_dir(load_settings(overrides={"data_dir": data}, environ={}))
    return Tokens(signing_secret(settings))


async def _host_round(host: Client, n: int) -> None:
    """One lock, one chat, one unlock: each must be acknowledged within ACK_S."""
    for event, payload in (
        ("host:lock", {"locked": True}),
        ("chat:send", {"text": f"第{n}次查房 请保持联网"}),
        ("host:lock", {"locked": False}),
    ):
        try:
            ack = await host.call(event, payload, timeout=ACK_S)
        except (TimeoutError, socketio.exceptions.TimeoutError):
            raise AssertionError(
                f"{event} not acknowledged within {ACK_S} s: room frozen"
            ) from None
        assert ack["ok"], ack


async def test_half_open_patient_does_not_freeze_the_room(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with serve_process(data, "--config", str(_config(tmp_path)), "--room", ROOM) as (
        proc,
        port,
        _link,
    ):
        url = f"http://127.0.0.1:{port}"
        tokens = _tokens(data)
        host = await Client(url, tokens(ROOM, "dr-wang", "host", "王医生")).connect()
        patient = RawClient(url, tokens(ROOM, "pt-li", "patient", "李患者"))
        newcomer: Client | None = None
        try:
            assert (await host.call("join", {}, timeout=ACK_S))["ok"]
            await patient.connect()
            waiting = await patient.call("join", {}, timeout=ACK_S)
            assert waiting["status"] == "waiting", waiting
            admitted = await host.call("lobby:admit", {"identity": "pt-li"}, timeout=ACK_S)
            assert admitted["ok"], admitted
            await host.next("participant:joined", lambda p: p["identity"] == "pt-li")

            await patient.go_silent()
            # until the server drops the silent patient (interval + timeout + one service
            # sweep: ~5 s here), every room update is also sent to the half-open connection
            rounds = 0
            async with asyncio.timeout(60):
                while not any(
                    left["identity"] == "pt-li" for left in host.events["participant:left"]
                ):
                    rounds += 1
                    await _host_round(host, rounds)
            assert rounds > 1, "the half-open window was never exercised"

            # the room still works for everyone else, newcomers included
            newcomer = await Client(url, tokens(ROOM, "dr-zhao", "clinician", "赵医生")).connect()
            joined = await newcomer.call("join", {}, timeout=ACK_S)
            assert joined["status"] == "joined", joined
            await _host_round(host, rounds + 1)
            sent = await newcomer.call("chat:send", {"text": "已到 开始会诊"}, timeout=ACK_S)
            assert sent["ok"], sent
            await host.next("chat:message", lambda m: m["text"] == "已到 开始会诊", ACK_S)
        finally:
            if newcomer is not None:
                await newcomer.close()
            await host.close()
        # SIGTERM with the half-open socket still open: the server stops (bounded wait)
        proc.send_signal(signal.SIGTERM)
        returncode = await asyncio.to_thread(proc.wait, 30)
        await patient.close()
        stderr = proc.stderr.read() if proc.stderr else ""
        assert returncode == 0, stderr[-3000:]
        assert "room lock is held" not in stderr, stderr[-3000:]
