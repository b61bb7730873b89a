"""MQTT bridge: device readings published to a broker take the same path as
POST /api/observations (aiomqtt, an asyncio client over paho-mqtt: maintained, typed).

Devices (or a gateway) publish to `teleconsult/observations/<device id>` a JSON envelope
`{"key": "<device key>", "resource": <Observation or Bundle>}` (QoS 1). The bridge answers on
`teleconsult/results/<device id>` with `{"status": <HTTP status>, ...the HTTP answer..., "ref":
<resource id>}`, so a bad reading is refused visibly, never dropped; a redelivered message is a
duplicate by Observation id and raises no second alert. It reconnects with capped backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

import aiomqtt
from aiohttp import web

from clinic.settings import MqttSettings

from .device_routes import submit

log = logging.getLogger(__name__)
MAX_PAYLOAD = 256 * 1024


class MqttBridge:
    """Subscribe to device readings and submit each one."""

    def __init__(self, app: web.Application, settings: MqttSettings) -> None:
        self.app = app
        self.settings = settings
        self.task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()
        self.handled = 0

    def start(self) -> None:
        self.task = asyncio.create_task(self.run(), name="clinic-mqtt")

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    async def run(self) -> None:
        delay = 0.5
        s = self.settings
        while True:
            try:
                async with aiomqtt.Client(
                    s.host,
                    s.port,
                    username=s.username,
                    password=s.password.get_secret_value() if s.password else None,
                    identifier=None,
                ) as client:
                    await client.subscribe(s.topic, qos=1)
                    self.connected.set()
                    delay = 0.5
                    log.info("MQTT bridge: subscribed to %s on %s:%d", s.topic, s.host, s.port)
                    async for message in client.messages:
                        await self.handle(client, message)
            except aiomqtt.MqttError as exc:
                self.connected.clear()
                log.warning("MQTT bridge: %s; reconnecting in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, s.reconnect_max_s)

    async def handle(self, client: aiomqtt.Client, message: aiomqtt.Message) -> None:
        device_part = str(message.topic).rsplit("/", 1)[-1][:64]
        status, answer, ref = await self.answer(message.payload)
        self.handled += 1
        reply = json.dumps({"status": status, "ref": ref, **answer})
        await client.publish(f"{self.settings.results_prefix}{device_part}", reply, qos=1)

    async def answer(self, payload: Any) -> tuple[int, dict[str, Any], str | None]:
        if not isinstance(payload, bytes | bytearray) or len(payload) > MAX_PAYLOAD:
            return 413, {"error": {"code": "payload_too_large", "message": "Too large."}}, None
        try:
            envelope = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            return 400, {"error": {"code": "invalid_json", "message": "Not JSON."}}, None
        if not isinstance(envelope, dict) or "resource" not in envelope:
            message = 'Expected {"key": ..., "resource": ...}.'
            return 400, {"error": {"code": "invalid_envelope", "message": message}}, None
        resource = envelope["resource"]
        ref = resource.get("id") if isinstance(resource, dict) else None
        ref = ref if isinstance(ref, str) else None
        key = envelope.get("key")
        status, answer = await submit(self.app, key if isinstance(key, str) else "", resource)
        return status, answer, ref
