"""Wire payloads of the media events (``rtc:*``), client -> server and server -> client.

Client payloads are untrusted: every string is bounded, unknown fields are refused.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from kernel.sources import Source as Source
from kernel.sources import kind_of as kind_of
from signaling.schemas import Inbound

Layer = Literal["high", "low"]
MAX_SDP = 64_000  # hard ceiling; MediaSettings.max_sdp_bytes may lower it
Identity = str


class _In(Inbound):
    """Inbound with every string bounded by the SDP ceiling (`ref` allowed, as everywhere)."""

    model_config = ConfigDict(extra="forbid", str_max_length=MAX_SDP)


class TrackSource(_In):
    mid: str = Field(min_length=1, max_length=16)
    source: Source


class RtcOffer(_In):
    """``rtc:offer`` (client -> server): publisher offer; the ack carries ``{"sdp": answer}``."""

    pc: Literal["publisher"] = "publisher"
    sdp: str = Field(min_length=10, max_length=MAX_SDP)
    tracks: list[TrackSource] = Field(default_factory=list, max_length=8)


class RtcAnswer(_In):
    """``rtc:answer`` (client -> server): answer to the server's subscriber offer."""

    pc: Literal["subscriber"] = "subscriber"
    sdp: str = Field(min_length=10, max_length=MAX_SDP)
    offer_id: int = Field(ge=0)


class RtcCandidate(_In):
    """``rtc:candidate``: a trickled ICE candidate (``candidate`` None = end of candidates)."""

    pc: Literal["publisher", "subscriber"]
    candidate: str | None = Field(default=None, max_length=1024)
    sdp_mid: str | None = Field(default=None, max_length=16)
    sdp_mline_index: int | None = Field(default=None, ge=0, le=64)


class RtcSubscribe(_In):
    """``rtc:subscribe`` / ``rtc:unsubscribe``: all of a publisher's sources, or some."""

    publisher: Identity = Field(min_length=1, max_length=128)
    sources: list[Source] | None = Field(default=None, max_length=4)


class RtcPause(_In):
    """``rtc:pause``: stop/resume forwarding one subscription without renegotiating."""

    publisher: Identity = Field(min_length=1, max_length=128)
    source: Source
    paused: bool


class RtcLayer(_In):
    """``rtc:layer``: pick the high or low camera layer of a publisher (None: automatic)."""

    publisher: Identity = Field(min_length=1, max_length=128)
    layer: Layer | None


class RtcMute(_In):
    """``rtc:mute``: the publisher mutes/unmutes its own source."""

    source: Source
    muted: bool


class RtcUnpublish(_In):
    """``rtc:unpublish``: the publisher stops one source (its transceiver goes inactive)."""

    source: Source


class RtcStatsRequest(_In):
    """``rtc:stats``: ask for this participant's media statistics (answered in the ack)."""


CLIENT_EVENTS: dict[str, type[BaseModel]] = {
    "rtc:offer": RtcOffer,
    "rtc:answer": RtcAnswer,
    "rtc:candidate": RtcCandidate,
    "rtc:subscribe": RtcSubscribe,
    "rtc:unsubscribe": RtcSubscribe,
    "rtc:pause": RtcPause,
    "rtc:layer": RtcLayer,
    "rtc:mute": RtcMute,
    "rtc:unpublish": RtcUnpublish,
    "rtc:stats": RtcStatsRequest,
}
# The grant each client event needs (signaling checks it before the handler runs).
EVENT_GRANTS: dict[str, str | None] = {
    "rtc:offer": "publish",
    "rtc:answer": "subscribe",
    "rtc:candidate": None,
    "rtc:subscribe": "subscribe",
    "rtc:unsubscribe": "subscribe",
    "rtc:pause": "subscribe",
    "rtc:layer": "subscribe",
    "rtc:mute": "publish",
    "rtc:unpublish": "publish",
    "rtc:stats": None,
}


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OfferedTrack(_Out):
    mid: str
    track_id: str
    publisher: Identity
    source: Source
    kind: Literal["audio", "video"]


class ServerOffer(_Out):
    """``rtc:offer`` (server -> client): subscriber offer; answer with ``rtc:answer``."""

    pc: Literal["subscriber"] = "subscriber"
    sdp: str
    offer_id: int
    tracks: list[OfferedTrack]


class RtcConfig(_Out):
    """``rtc:config`` (server -> client at join): ICE servers and what the client may do."""

    ice_servers: list[dict[str, object]]
    can_publish: bool
    can_subscribe: bool
    auto_subscribe: bool
    max_tracks: int


class TrackPublished(_Out):
    """``rtc:track_published`` (server -> room)."""

    publisher: Identity
    source: Source
    kind: Literal["audio", "video"]
    codec: str
    track_id: str
    muted: bool


class TrackUnpublished(_Out):
    """``rtc:track_unpublished`` (server -> room)."""

    publisher: Identity
    source: Source
    reason: str


class TrackMuted(_Out):
    """``rtc:track_muted`` (server -> room): ``forced`` when a host muted it."""

    publisher: Identity
    source: Source
    muted: bool
    forced: bool


class ActiveSpeaker(_Out):
    """``rtc:active_speaker`` (server -> room): loudest unmuted speaker, levels 0..1."""

    identity: Identity | None
    levels: dict[str, float]


class MediaError(Exception):
    """A client request the media layer refuses; ``code`` is a stable, typed error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
