"""Media (SFU) settings: one typed block, meant to sit in the server's Settings as ``media``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class IceServer(BaseModel):
    """One STUN/TURN entry handed to clients (``urls`` as in the W3C RTCIceServer)."""

    model_config = ConfigDict(extra="forbid")

    urls: list[str] = Field(min_length=1, max_length=8)
    # Static credentials (rarely wanted: prefer turn_secret, which mints short-lived ones).
    username: str | None = None
    credential: str | None = None


class MediaSettings(BaseModel):
    """Everything the SFU reads from configuration. Defaults suit a closed network: no STUN."""

    model_config = ConfigDict(extra="forbid")

    # UDP ports the server binds for ICE/RTP (one per peer connection and bind address).
    # None: ephemeral ports (aioice default). Size the range >= 2 x participants x addresses.
    udp_port_min: int | None = Field(default=None, ge=1024, le=65535)
    udp_port_max: int | None = Field(default=None, ge=1024, le=65535)
    # Local interface addresses to gather candidates on (None: every non-loopback address).
    bind_addresses: list[str] | None = None
    # Address written into the server's ICE host candidates instead of the bound one
    # (public or NAT-mapped IP, as LiveKit's node_ip / mediasoup's announcedAddress).
    announced_address: str | None = None
    # SO_RCVBUF of the server's media sockets (capped by net.core.rmem_max; 0: aioice's 256 kB)
    udp_receive_buffer_bytes: int = Field(default=4 * 1024 * 1024, ge=0, le=64 * 1024 * 1024)
    # STUN/TURN servers for the clients. Empty by default: hospital networks are closed.
    ice_servers: list[IceServer] = Field(default_factory=list)
    # coturn "use-auth-secret" shared secret: TURN entries get REST credentials minted per join.
    turn_secret: str | None = None
    turn_credential_ttl_s: int = Field(default=3600, ge=60, le=86400)
    # STUN/TURN for the server's own peer connections (none by default; `turn.server_relay`
    # puts the managed coturn here). aiortc uses the first STUN and the first TURN entry.
    server_ice_servers: list[IceServer] = Field(default_factory=list)

    # Forwarding policy.
    auto_subscribe: bool = True
    video_queue_frames: int = Field(default=8, ge=2, le=120)
    audio_queue_frames: int = Field(default=10, ge=2, le=200)
    pli_min_interval_s: float = Field(default=0.3, ge=0.05, le=10)
    # a keyframe request that no keyframe answered is sent again after this long
    keyframe_retry_s: float = Field(default=1.0, ge=0.1, le=30)
    subscriber_pli_min_interval_s: float = Field(default=1.0, ge=0.05, le=10)
    # REMB feedback to publishers (their bandwidth estimate: aiortc negotiates no transport-cc).
    # aiortc's estimator is pure Python and costs ~2-3 % of a core per video publisher.
    publisher_remb: bool = True
    # Forwarding senders write, protect and send a frame's RTP packets as bytes (fastpath.py)
    # instead of through aiortc's per-packet coroutines; false: aiortc's own send path.
    fast_path: bool = True
    # On the fast path, a frame's packets are written, protected and sent by one call into C
    # (media/native, one sendmmsg per frame and subscriber) when scripts/setup-venv.sh built it,
    # and the publishers' REMB estimator runs in C (remb.c); false, or not built: the same work
    # in Python (native_send.py, remb_filters.py).
    native_send: bool = True
    # The compiled send hands each run of equal-sized packets (a video frame's, but the last)
    # to the kernel as one message cut into datagrams at the end (Linux UDP GSO, UDP_SEGMENT):
    # about a third of the kernel's cost per packet. A path that refuses it is sent packet by
    # packet from then on; false: never ask.
    udp_gso: bool = True
    # Publishers' RTP packets are handled in the socket callback (aiortc_receive.py)
    # instead of through aioice's queue and the DTLS transport's task; false: aiortc's path.
    fast_receive: bool = True
    # Automatic camera layer choice per subscriber from its REMB estimate and loss (explicit
    # rtc:layer wins): bandwidth.py. Low after >= loss_down; back up when the estimate holds the
    # high layer, or by a probe after auto_layer_probe_s on the low one (doubling on failure).
    auto_layer: bool = True
    auto_layer_loss_down: float = Field(default=0.10, ge=0, le=1)
    auto_layer_loss_up: float = Field(default=0.02, ge=0, le=1)
    auto_layer_probe_s: float = Field(default=15.0, ge=1, le=600)
    # After a switch down the camera stays low this long (0: off; probes aside): docs/media.md.
    auto_layer_hold_s: float = Field(default=0.0, ge=0, le=600)
    # The layer a new camera subscription starts on (automatic choice; docs/media.md).
    auto_layer_start: Literal["high", "low"] = "low"
    # Probe with padding (RTX copies) instead of switching to the high layer (probe.py), the
    # first time this long after a camera is first seen on the low layer.
    auto_layer_padding_probe: bool = True
    auto_layer_first_probe_s: float = Field(default=0.0, ge=0, le=600)

    # Events.
    active_speaker_interval_s: float = Field(default=0.3, ge=0.05, le=5)
    active_speaker_min_level: int = Field(default=60, ge=0, le=127)  # -dBov, lower is louder
    stats_interval_s: float = Field(default=2.0, ge=0, le=60)  # 0: no rtc:stats pushes

    # Bounds on client messages.
    max_sdp_bytes: int = Field(default=64_000, ge=4_000, le=1_000_000)
    max_tracks_per_publisher: int = Field(default=4, ge=1, le=8)

    @model_validator(mode="after")
    def _check_range(self) -> MediaSettings:
        if (self.udp_port_min is None) != (self.udp_port_max is None):
            raise ValueError("set both udp_port_min and udp_port_max, or neither")
        if self.udp_port_min is not None and self.udp_port_min > self.udp_port_max:  # type: ignore[operator]
            raise ValueError("udp_port_min > udp_port_max")
        return self
