"""`teleconsult serve --turn`: a managed coturn, its credentials, health restarts and stop."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from aioice import stun
from aioice import turn as aioice_turn

from rtc_server.config import load_settings
from rtc_server.turn import SECRET_FILE, prepare_turn, render_config, stun_ping
from tests.helpers import Client, free_port, self_signed_cert, serve_process

pytestmark = pytest.mark.skipif(
    shutil.which("turnserver") is None, reason="coturn not installed (apt-get install coturn)"
)
WAIT_S = 15.0


def _relay_range() -> tuple[int, int]:
    low = random.randrange(50000, 59000, 100)
    return low, low + 49


def _config(tmp_path: Path, **turn: object) -> Path:
    low, high = _relay_range()
    lines = ["[turn]", f"relay_port_min = {low}", f"relay_port_max = {high}"]
    lines += [f"{k} = {v!r}".replace("'", '"') for k, v in turn.items()]
    path = tmp_path / "teleconsult.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _children(pid: int) -> list[int]:
    """Child processes of `pid`, whichever of its threads started them."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except FileNotFoundError:
            continue
    return found


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "State:\tZ" not in status


def _wait_for(predicate, what: str, timeout: float = WAIT_S):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_generated_config_relays_only_to_the_sfu_and_keeps_the_secret(tmp_path: Path) -> None:
    settings = load_settings(
        overrides={
            "data_dir": tmp_path / "data",
            "turn": {"enabled": True, "host": "consult.hospital.local"},
            "media": {"bind_addresses": ["10.20.0.5"], "announced_address": "198.51.100.20"},
        },
        environ={},
    )
    prepared = prepare_turn(settings)
    secret_file = tmp_path / "data" / SECRET_FILE
    assert secret_file.stat().st_mode & 0o777 == 0o600
    assert prepared.media.turn_secret == secret_file.read_text().strip()
    assert prepared.media.ice_servers[0].urls == [
        "turn:consult.hospital.local:3478?transport=udp",
        "turn:consult.hospital.local:3478?transport=tcp",
    ]
    text = render_config(prepared, "s3cret", tmp_path)
    assert "denied-peer-ip=0.0.0.0-255.255.255.255" in text
    assert "allowed-peer-ip=10.20.0.5" in text and "allowed-peer-ip=198.51.100.20" in text
    assert "no-tls" in text and "allow-loopback-peers" not in text
    # a second start keeps the same secret (links minted before still work)
    assert prepare_turn(settings).media.turn_secret == prepared.media.turn_secret


def test_tls_certificate_adds_a_turns_url(tmp_path: Path) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("x")
    key.write_text("x")
    settings = load_settings(
        overrides={
            "data_dir": tmp_path / "data",
            "tls_cert": cert,
            "tls_key": key,
            "public_url": "https://consult.hospital.local",
            "turn": {"enabled": True, "tls_port": 443, "udp": False},
        },
        environ={},
    )
    prepared = prepare_turn(settings)
    assert prepared.media.ice_servers[0].urls == [
        "turn:consult.hospital.local:3478?transport=tcp",
        "turns:consult.hospital.local:443?transport=tcp",
    ]
    text = render_config(prepared, "s3cret", tmp_path)
    assert f"cert={cert.resolve()}" in text and "no-tls" not in text


async def _allocate_over_tcp(
    port: int, username: str, password: str, tls: ssl.SSLContext | None = None
) -> tuple[str, int]:
    """A real TURN allocation (aioice's client) over TCP (or TLS) with the minted credentials."""
    transport, _protocol = await aioice_turn.create_turn_endpoint(
        asyncio.DatagramProtocol,
        server_addr=("127.0.0.1", port),
        username=username,
        password=password,
        transport="tcp",
        ssl=tls,
    )
    try:
        return transport.get_extra_info("sockname")
    finally:
        transport.close()


def test_serve_turn_runs_coturn_restarts_it_and_stops_it(tmp_path: Path) -> None:
    port, tls_port = free_port(), free_port()
    cert, key = self_signed_cert(tmp_path, "127.0.0.1")
    config = _config(tmp_path, tls_cert=str(cert), tls_key=str(key))
    args = ("--config", str(config), "--turn", "--turn-port", str(port))
    args += ("--turn-tls-port", str(tls_port), "--room", "ward-3")
    with serve_process(tmp_path / "data", *args) as (proc, http_port, link):
        assert link, proc.stderr.read() if proc.poll() is not None else "no link printed"
        (coturn,) = _wait_for(lambda: _children(proc.pid), "coturn child")
        assert asyncio.run(stun_ping("127.0.0.1", port))
        conf = tmp_path / "data" / "turn" / "turnserver.conf"
        assert conf.stat().st_mode & 0o777 == 0o600

        async def join() -> list[dict[str, object]]:
            token = parse_qs(urlparse(link).query)["token"][0]
            client = Client(f"http://127.0.0.1:{http_port}", token)
            await client.connect()
            try:
                ack = await client.call("join", {})
            finally:
                await client.close()
            assert ack["ok"], ack
            return ack["ice_servers"]

        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=10) as resp:
            text = resp.read().decode()
        assert "teleconsult_turn_up 1.0" in text and "teleconsult_turn_restarts_total 0.0" in text
        (server,) = asyncio.run(join())
        assert server["urls"] == [
            f"turn:127.0.0.1:{port}?transport=udp",
            f"turn:127.0.0.1:{port}?transport=tcp",
            f"turns:127.0.0.1:{tls_port}?transport=tcp",
        ]
        assert "host" not in str(server["username"])  # a pseudonym, not the identity
        user, password = str(server["username"]), str(server["credential"])
        assert asyncio.run(_allocate_over_tcp(port, user, password))[1] > 0
        # TURN over TLS with the configured certificate (verified against it)
        tls = ssl.create_default_context(cafile=str(cert))
        assert asyncio.run(_allocate_over_tcp(tls_port, user, password, tls))[1] > 0
        with pytest.raises(stun.TransactionFailed, match="401"):  # a wrong password is refused
            asyncio.run(_allocate_over_tcp(port, user, "wrong"))

        # coturn dies: the server starts it again (health checks, backoff)
        os.kill(coturn, signal.SIGKILL)
        restarted = _wait_for(
            lambda: [p for p in _children(proc.pid) if p != coturn and _alive(p)], "restart"
        )
        _wait_for(lambda: asyncio.run(stun_ping("127.0.0.1", port)), "coturn answering again")

        def restart_counted() -> bool:
            url = f"http://127.0.0.1:{http_port}/metrics"
            with urllib.request.urlopen(url, timeout=10) as resp:
                return "teleconsult_turn_restarts_total 1.0" in resp.read().decode()

        _wait_for(restart_counted, "the restart in /metrics")
    assert proc.returncode == 0
    assert not _alive(restarted[0]), "coturn outlived the server"


def test_turn_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("TELECONSULT_")}
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "rtc_server.cli",
                "serve",
                "--port",
                str(free_port()),
                "--data-dir",
                str(tmp_path / "data"),
                "--config",
                str(_config(tmp_path, listen_addresses=["127.0.0.1"])),
                "--turn",
                "--turn-port",
                str(port),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
    assert result.returncode == 2
    assert f"TURN port 127.0.0.1:{port} is in use" in result.stderr


def test_workers_share_one_coturn_run_by_the_supervisor(tmp_path: Path) -> None:
    port = free_port()
    args = ("--config", str(_config(tmp_path)), "--turn", "--turn-port", str(port))
    with serve_process(tmp_path / "data", *args, "--workers", "2") as (proc, _http, link):
        assert link, proc.stderr.read() if proc.poll() is not None else "no link printed"
        assert asyncio.run(stun_ping("127.0.0.1", port))
        # two workers and coturn (the second worker may still be starting: bounded wait)
        deadline = time.monotonic() + 30
        while len(children := _children(proc.pid)) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        names = {Path(f"/proc/{p}/comm").read_text().strip() for p in children}
        assert len(children) == 3 and "turnserver" in names, names
        coturn = next(p for p in children if "turnserver" in Path(f"/proc/{p}/comm").read_text())
    assert proc.returncode == 0
    assert not _alive(coturn), "coturn outlived the supervisor"


async def test_server_relay_gives_the_sfu_a_relay_candidate(tmp_path: Path) -> None:
    from media.ice import IcePolicy
    from rtc_server.turn import TurnServer

    low, high = _relay_range()
    settings = prepare_turn(
        load_settings(
            overrides={
                "data_dir": tmp_path / "data",
                "turn": {
                    "enabled": True,
                    "port": free_port(),
                    "relay_port_min": low,
                    "relay_port_max": high,
                    "server_relay": True,
                },
            },
            environ={},
        )
    )
    turn = TurnServer(settings)
    await turn.start()
    pc = IcePolicy(settings.media).new_peer_connection()
    try:
        pc.addTransceiver("video", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        assert " typ relay " in pc.localDescription.sdp
    finally:
        await pc.close()
        await turn.stop()
