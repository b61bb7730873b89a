"""ICE configuration: server-side candidate gathering, announced address, client ICE servers.

TURN credentials follow coturn's ``use-auth-secret`` (TURN REST API) scheme: the username is
``<expiry unix time>:<tag>`` and the password ``base64(HMAC-SHA1(secret, username))``. The tag is
a pseudonym of the participant (TURN servers log usernames; no identity goes into their logs).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from typing import Any

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection
from aiortc.rtcconfiguration import RTCBundlePolicy

from .aiortc_patch import (
    PortRange,
    close_late_sockets,
    enlarge_receive_buffers,
    restrict_ice_ports,
)
from .settings import IceServer, MediaSettings

_CANDIDATE_RE = re.compile(
    r"^(a=candidate:\S+ \d+ udp \d+ )(\S+)( \d+ typ host.*)$", re.IGNORECASE | re.MULTILINE
)


def turn_rest_credentials(
    secret: str, identity: str, ttl_s: int, now: float | None = None
) -> tuple[str, str]:
    """Short-lived TURN username/password for coturn's ``use-auth-secret``."""
    expiry = int(now if now is not None else time.time()) + ttl_s
    username = f"{expiry}:{identity}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


# TURN allocations of the server's own peer connections live as long as the connection
SERVER_CREDENTIAL_TTL_S = 7 * 24 * 3600


def turn_tag(secret: str, identity: str) -> str:
    """A stable pseudonym of ``identity`` for TURN usernames (not reversible without the secret)."""
    return hmac.new(secret.encode(), b"turn-user:" + identity.encode(), hashlib.sha256).hexdigest()[
        :16
    ]


def _ice_server_dicts(
    settings: MediaSettings, servers: list[IceServer], identity: str, ttl_s: int
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for server in servers:
        entry: dict[str, Any] = {"urls": list(server.urls)}
        is_turn = any(u.lower().startswith(("turn:", "turns:")) for u in server.urls)
        if is_turn and settings.turn_secret and server.username is None:
            user, cred = turn_rest_credentials(
                settings.turn_secret, turn_tag(settings.turn_secret, identity), ttl_s
            )
            entry["username"] = user
            entry["credential"] = cred
        elif server.username is not None:
            entry["username"] = server.username
            entry["credential"] = server.credential or ""
        out.append(entry)
    return out


def client_ice_servers(settings: MediaSettings, identity: str) -> list[dict[str, Any]]:
    """The ``iceServers`` list a client should use (RTCIceServer dictionaries)."""
    return _ice_server_dicts(
        settings, settings.ice_servers, identity, settings.turn_credential_ttl_s
    )


def server_ice_servers(settings: MediaSettings) -> list[RTCIceServer]:
    """STUN/TURN for the server's own peer connections (``server_ice_servers``; usually none:
    the SFU's host candidates are what TURN relays reach)."""
    return [
        RTCIceServer(urls=d["urls"], username=d.get("username"), credential=d.get("credential"))
        for d in _ice_server_dicts(
            settings, settings.server_ice_servers, "sfu", SERVER_CREDENTIAL_TTL_S
        )
    ]


def announce(sdp: str, announced_address: str | None) -> str:
    """Replace the address of every host candidate in ``sdp`` by ``announced_address``."""
    if not announced_address:
        return sdp
    return _CANDIDATE_RE.sub(lambda m: m.group(1) + announced_address + m.group(3), sdp)


class IcePolicy:
    """Creates server peer connections and prepares them for gathering, per the settings."""

    def __init__(self, settings: MediaSettings) -> None:
        self.settings = settings
        self.ports: PortRange | None = None
        if settings.udp_port_min is not None and settings.udp_port_max is not None:
            self.ports = PortRange(settings.udp_port_min, settings.udp_port_max)

    def new_peer_connection(self) -> RTCPeerConnection:
        # The server normally needs no STUN/TURN of its own (a relay reaches its host
        # candidates); max-bundle keeps one socket per PC.
        return RTCPeerConnection(
            RTCConfiguration(
                iceServers=server_ice_servers(self.settings),
                bundlePolicy=RTCBundlePolicy.MAX_BUNDLE,
            )
        )

    def before_gathering(self, pc: RTCPeerConnection) -> None:
        restrict_ice_ports(pc, self.ports, self.settings.bind_addresses)
        close_late_sockets(pc)

    def after_gathering(self, pc: RTCPeerConnection) -> None:
        if self.settings.udp_receive_buffer_bytes:
            enlarge_receive_buffers(pc, self.settings.udp_receive_buffer_bytes)

    def outgoing_sdp(self, sdp: str) -> str:
        return announce(sdp, self.settings.announced_address)
