"""The SFU through the real server: Socket.IO signaling, aiortc media, host mute, leave, end."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from media.client import MediaClient, SyntheticVideoTrack, ToneAudioTrack
from media.service import MEDIA
from tests.helpers import Client

from .conftest import wait_for

SERVER_EVENTS = (
    "rtc:config",
    "rtc:offer",
    "rtc:track_published",
    "rtc:track_unpublished",
    "rtc:track_muted",
    "rtc:active_speaker",
    "rtc:disconnected",
)


class _R0:
    frames = 0


async def media_peer(
    connect: Callable[..., Awaitable[Client]], room: str, identity: str, role: str, **kw: Any
) -> tuple[Client, MediaClient]:
    """A joined Socket.IO client with an aiortc media client bridged onto it."""
    sio = await connect(room, identity, role, join=False)

    async def request(event: str, data: dict[str, Any]) -> dict[str, Any]:
        ack = await sio.call(event, data)
        if not ack.get("ok"):
            raise RuntimeError(f"{event} refused: {ack}")
        return ack

    media = MediaClient(identity, request, **kw)
    for event in SERVER_EVENTS:

        def on(data: Any = None, _event: str = event) -> None:
            media.deliver(_event, data)

        sio.sio.on(event, on)
    sio.joined = await sio.call("join", {})  # type: ignore[attr-defined]
    return sio, media


async def test_publish_subscribe_mute_and_leave_over_socketio(live: Any, connect: Any) -> None:
    host_sio, host = await media_peer(connect, "mdt-1", "dr-host", "host", decode=False)
    viewer_sio, viewer = await media_peer(connect, "mdt-1", "dr-view", "clinician", decode=False)
    observer_sio, observer = await media_peer(connect, "mdt-1", "obs", "observer", decode=False)
    try:
        assert host_sio.joined["ok"] and host_sio.joined["ice_servers"] == []  # type: ignore[attr-defined]
        assert observer_sio.joined["status"] == "waiting"  # type: ignore[attr-defined]
        assert (await host_sio.call("lobby:admit", {"identity": "obs"}))["ok"]
        await host.wait_event(lambda ev, p: ev == "rtc:config" and p["can_publish"])
        await observer.wait_event(lambda ev, p: ev == "rtc:config" and not p["can_publish"])

        await host.publish({"camera": SyntheticVideoTrack(), "microphone": ToneAudioTrack()})
        mic = ("dr-host", "microphone")
        for peer in (viewer, observer):
            await wait_for(lambda p=peer: p.received.get(mic, _R0).frames >= 10, 30)
            await wait_for(lambda p=peer: p.received.get(("dr-host", "camera"), _R0).frames >= 5)

        # an observer has no publish grant: the signaling layer refuses before the SFU sees it
        ack = await observer_sio.call("rtc:offer", {"sdp": "v=0\r\n" + "x" * 20, "tracks": []})
        assert ack["ok"] is False and ack["error"]["code"] == "permission_denied"
        ack = await viewer_sio.call("rtc:layer", {"publisher": "nobody", "layer": "low"})
        assert ack["ok"] is False and ack["error"]["code"] == "not_subscribed"
        # `ref` is allowed on every event (docs/protocol.md) and echoed in the error
        ack = await viewer_sio.call(
            "rtc:layer", {"publisher": "nobody", "layer": "low", "ref": "r-7"}
        )
        assert ack["error"]["code"] == "not_subscribed" and ack["error"]["ref"] == "r-7"

        # host:mute (signaling) -> mute_changed -> the SFU stops forwarding the viewer's mic
        await viewer.publish({"microphone": ToneAudioTrack()})
        view_mic = ("dr-view", "microphone")
        await wait_for(lambda: host.received.get(view_mic, _R0).frames >= 10, 30)
        ack = await host_sio.call("host:mute", {"identity": "dr-view", "kind": "audio"})
        assert ack["ok"]
        await host.wait_event(
            lambda ev, p: ev == "rtc:track_muted" and p["publisher"] == "dr-view" and p["forced"]
        )
        service = live.app[MEDIA]
        room = service.rooms["mdt-1"]
        assert room.publications[view_mic].forced_muted
        ack = await viewer_sio.call("rtc:mute", {"source": "microphone", "muted": False})
        assert ack["ok"] is False and ack["error"]["code"] == "forced_mute"

        # leave tears the publisher's media down for everyone
        await host_sio.call("leave", {})
        await viewer.wait_event(
            lambda ev, p: ev == "rtc:track_unpublished" and p["publisher"] == "dr-host"
        )
        await wait_for(lambda: "dr-host" not in room.sessions, 10)
        assert all(key[0] != "dr-host" for key in room.publications)

        text = await _metrics(live)
        assert "teleconsult_media_subscriptions" in text
        assert "teleconsult_media_idle_transceivers" in text
        # per-participant series (room and identity labels) only with metrics_participant_labels
        assert 'identity="obs"' not in text and 'room="mdt-1"' not in text
    finally:
        for m in (host, viewer, observer):
            await m.close()
    # the last participants leaving closes the room's media
    await viewer_sio.close()
    await observer_sio.close()
    await wait_for(lambda: "mdt-1" not in live.app[MEDIA].rooms, 10)


async def _metrics(live: Any) -> str:
    import aiohttp

    async with aiohttp.ClientSession() as http, http.get(f"{live.url}/metrics") as resp:
        return await resp.text()
