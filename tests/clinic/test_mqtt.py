"""The MQTT bridge: readings published to a broker (Debian's mosquitto, started by the test on
a free loopback port; else the one on 127.0.0.1:1883) take the POST /api/observations path."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from clinic import MQTT
from clinic.device_routes import ALERTS
from clinic.devices import add_device
from rtc_server.keys import RECORDS
from tests.clinic.test_observations import obs

WAIT_S = 15.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Until the broker accepts connections (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mosquitto exited with {proc.returncode}")
        with socket.socket() as s, contextlib.suppress(OSError):
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError("mosquitto did not listen in time")


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[int]:
    """Port of a mosquitto of this test's own (or the machine's at 1883 without the binary)."""
    binary = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    if binary is None:
        yield 1883
        return
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    proc = subprocess.Popen(
        [binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        wait_listening(port, proc)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
async def bridged(start_server: Any, broker: int) -> AsyncIterator[Any]:
    live = await start_server(mqtt={"host": "127.0.0.1", "port": broker})
    async with asyncio.timeout(WAIT_S):
        await live.app[MQTT].connected.wait()
    yield live


async def test_mqtt_readings_alert_once_and_refusals_are_answered(
    bridged: Any, broker: int
) -> None:
    live = bridged
    _device, key = await add_device(live.app[RECORDS], "pat-mq", "cardiology", "gw-1")
    async with aiomqtt.Client("127.0.0.1", broker) as client:
        await client.subscribe("teleconsult/results/gw-1", qos=1)

        async def publish(payload: Any) -> dict[str, Any]:
            data = payload if isinstance(payload, bytes) else json.dumps(payload)
            await client.publish("teleconsult/observations/gw-1", data, qos=1)
            async with asyncio.timeout(WAIT_S):
                async for message in client.messages:
                    return json.loads(message.payload)
            raise AssertionError("no result")

        reading = obs("spo2-1", "59408-5", 88, "%")
        result = await publish({"key": key, "resource": reading})
        assert result["status"] == 201 and result["ref"] == "spo2-1"
        (alert,) = result["alerts"]
        assert alert["code"] == "59408-5" and alert["direction"] == "low"

        # QoS 1 may deliver twice: the repeat is a duplicate, no second alert
        result = await publish({"key": key, "resource": reading})
        assert result["status"] == 200 and result["duplicates"] == 1 and result["alerts"] == []

        result = await publish({"key": key, "resource": obs("t-9", "8310-5", 38.0, "[degF]")})
        assert result["status"] == 422 and result["error"]["code"] == "wrong_unit"
        result = await publish(
            {"key": "tcd_nobody", "resource": obs("t-10", "8310-5", 37.0, "Cel")}
        )
        assert result["status"] == 401 and result["error"]["code"] == "unknown_device"
        result = await publish(b"\xff not json")
        assert result["status"] == 400 and result["error"]["code"] == "invalid_json"
    opened = await live.app[ALERTS].list("open")
    assert [a["id"] for a in opened] == [alert["id"]]
