"""ICE settings: UDP port range, announced address, TURN REST credentials, client ICE servers."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from media.client import SyntheticVideoTrack
from media.ice import (
    announce,
    client_ice_servers,
    turn_rest_credentials,
    turn_tag,
)
from media.room import RoomMedia
from media.settings import IceServer, MediaSettings

from .conftest import Harness, wait_for

RMEM_MAX = int(Path("/proc/sys/net/core/rmem_max").read_text())
CANDIDATE = re.compile(r"a=candidate:\S+ \d+ udp \d+ (\S+) (\d+) typ host")


class _R0:
    frames = 0


async def test_server_binds_inside_the_configured_udp_port_range() -> None:
    settings = MediaSettings(udp_port_min=42100, udp_port_max=42119)
    harness = Harness(RoomMedia("r", settings))
    answers: list[str] = []
    try:
        alice = await harness.join("alice", subscribe=False)
        bob = await harness.join("bob", publish=False, decode=False)
        original = alice.request

        async def spy(event: str, data: dict) -> dict | None:
            ack = await original(event, data)
            if event == "rtc:offer" and ack:
                answers.append(ack["sdp"])
            return ack

        alice.request = spy  # type: ignore[method-assign]
        await alice.publish({"camera": SyntheticVideoTrack()})
        await wait_for(lambda: bob.received.get(("alice", "camera"), _R0).frames >= 5, 30)
        _, offer = await bob.wait_event(lambda ev, p: ev == "rtc:offer")
        ports = [int(p) for sdp in [*answers, offer["sdp"]] for _, p in CANDIDATE.findall(sdp)]
        assert ports and all(42100 <= p <= 42119 for p in ports), ports
    finally:
        await harness.close()


async def test_announced_address_replaces_host_candidates() -> None:
    harness = Harness(RoomMedia("r", MediaSettings(announced_address="203.0.113.7")))
    try:
        alice = await harness.join("alice", subscribe=False)
        bob = await harness.join("bob", publish=False, decode=False)
        await alice.publish({"camera": SyntheticVideoTrack()})
        _, offer = await bob.wait_event(lambda ev, p: ev == "rtc:offer")
        hosts = {h for h, _ in CANDIDATE.findall(offer["sdp"])}
        assert hosts == {"203.0.113.7"}
    finally:
        await harness.close()


def test_announce_rewrites_only_host_candidates() -> None:
    sdp = (
        "a=candidate:1 1 udp 2130706431 10.0.0.5 40000 typ host\r\n"
        "a=candidate:2 1 udp 1694498815 198.51.100.1 40001 typ srflx raddr 10.0.0.5 rport 40000\r\n"
    )
    out = announce(sdp, "203.0.113.7")
    assert "203.0.113.7 40000 typ host" in out
    assert "198.51.100.1 40001 typ srflx" in out
    assert announce(sdp, None) == sdp


def test_turn_rest_credentials_follow_coturn_use_auth_secret() -> None:
    user, password = turn_rest_credentials("s3cret", "alice", 600, now=1_700_000_000)
    assert user == "1700000600:alice"
    expected = base64.b64encode(hmac.new(b"s3cret", user.encode(), hashlib.sha1).digest())
    assert password == expected.decode()


def test_client_ice_servers_mint_turn_credentials_and_default_to_none() -> None:
    assert client_ice_servers(MediaSettings(), "alice") == []  # closed network default
    settings = MediaSettings(
        ice_servers=[
            IceServer(urls=["stun:stun.hospital.local:3478"]),
            IceServer(urls=["turn:turn.hospital.local:3478?transport=udp"]),
        ],
        turn_secret="s3cret",
    )
    stun, turn = client_ice_servers(settings, "alice")
    assert stun == {"urls": ["stun:stun.hospital.local:3478"]}
    # the username's tag is a pseudonym: TURN servers log usernames, identities stay out
    assert turn["username"].endswith(":" + turn_tag("s3cret", "alice")) and turn["credential"]
    assert "alice" not in turn["username"]


def test_settings_reject_half_a_port_range() -> None:
    with pytest.raises(ValidationError):
        MediaSettings(udp_port_min=40000)
    with pytest.raises(ValidationError):
        MediaSettings(udp_port_min=41000, udp_port_max=40000)


async def test_server_media_sockets_get_the_configured_receive_buffer() -> None:
    import socket

    size = 1024 * 1024
    harness = Harness(RoomMedia("r", MediaSettings(udp_receive_buffer_bytes=size)))
    try:
        alice = await harness.join("alice", subscribe=False)
        await alice.publish({"camera": SyntheticVideoTrack()})
        pc = harness.room.sessions["alice"].pub_pc
        assert pc is not None
        gatherer = pc.getTransceivers()[0].receiver.transport.transport.iceGatherer
        socks = [p.transport.get_extra_info("socket") for p in gatherer._connection._protocols]
        rmem_max = RMEM_MAX
        want = min(size, rmem_max)
        assert socks and all(
            s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= want for s in socks
        )
    finally:
        await harness.close()


def _open_sockets() -> int:
    count = 0
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = fd.readlink()
        except OSError:
            continue
        count += str(target).startswith("socket:")
    return count


@pytest.mark.parametrize("cancel", [False, True], ids=["close", "cancel+close"])
@pytest.mark.parametrize("ports", [None, (42140, 42159)], ids=["any-port", "port-range"])
async def test_a_connection_closed_while_gathering_leaves_no_socket(
    ports: tuple[int, int] | None, cancel: bool
) -> None:
    """A participant leaving while the server gathers candidates for its connection (the
    negotiation task cancelled, or not): every socket the gathering bound is closed (aioice
    alone would leak them)."""
    from contextlib import suppress

    from media.ice import IcePolicy

    low, high = ports or (None, None)
    policy = IcePolicy(MediaSettings(udp_port_min=low, udp_port_max=high))
    before = _open_sockets()
    for _ in range(5):
        pc = policy.new_peer_connection()
        pc.addTransceiver("audio", direction="sendonly")
        offer = await pc.createOffer()
        policy.before_gathering(pc)
        gathering = asyncio.ensure_future(pc.setLocalDescription(offer))
        await asyncio.sleep(0)  # gathering has started and is waiting for its sockets
        if cancel:
            # cancelled between binding its first socket and the next (IPv4, then IPv6)
            for _ in range(1000):
                if _open_sockets() >= before + 2 or gathering.done():
                    break
                await asyncio.sleep(0)
            gathering.cancel()
        await pc.close()
        with suppress(Exception, asyncio.CancelledError):
            await gathering
    # a shielded gathering finishes on its own moments later, and closes what it bound
    await wait_for(lambda: _open_sockets() == before, 10)
