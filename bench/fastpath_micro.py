"""Per-packet costs of the forwarding steps, measured apart (input for the fast-path decision).

One forwarded packet in the SFU today: an aiortc RtpPacket object built and serialized (with
header extensions), SRTP protection (libsrtp through pylibsrtp, C), and one UDP `sendto`. This
times each on its own, in this process, over a loopback socket, plus the alternative header
rewrite a fast path would do (SSRC, sequence number and timestamp patched into a copy of the
received bytes with `struct.pack_into`):

    python bench/fastpath_micro.py [--packets N]

The last line printed is one JSON object (microseconds per packet, and the load average).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import socket
import struct
import time
from pathlib import Path

_SSRCS = itertools.count(0x1234)


def per_packet_us(fn, n: int) -> float:  # type: ignore[no-untyped-def]
    """Best of 3 CPU times of ``n`` calls, in microseconds per call."""
    best = float("inf")
    for _ in range(3):
        t = time.process_time()
        for i in range(n):
            fn(i)
        best = min(best, time.process_time() - t)
    return round(best / n * 1e6, 2)


def main() -> None:
    from aiortc.rtp import RtpPacket
    from pylibsrtp import Policy, Session

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--packets", type=int, default=20000)
    parser.add_argument("--quick", action="store_true", help="5,000 packets")
    args = parser.parse_args()
    n = min(args.packets, 5000) if args.quick else args.packets

    payload = os.urandom(1100)
    src = RtpPacket(payload_type=96, sequence_number=1, timestamp=3000, ssrc=0x1234, marker=1)
    src.extensions.abs_send_time = 12345
    src.extensions.transport_sequence_number = 7
    src.payload = payload
    ext_map = None
    try:
        from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters
        from aiortc.rtp import HeaderExtensionsMap

        ext_map = HeaderExtensionsMap()
        ext_map.configure(
            type(
                "P",
                (),
                {
                    "headerExtensions": [
                        RTCRtpHeaderExtensionParameters(
                            id=1, uri="http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
                        ),
                        RTCRtpHeaderExtensionParameters(
                            id=3,
                            uri="http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
                        ),
                    ]
                },
            )()
        )
    except ImportError:
        pass
    wire = src.serialize(ext_map) if ext_map else src.serialize()

    def object_path(i: int) -> bytes:
        pkt = RtpPacket.parse(wire, ext_map) if ext_map else RtpPacket.parse(wire)
        pkt.ssrc = 0x5678
        pkt.sequence_number = i & 0xFFFF
        pkt.timestamp = (3000 + i) & 0xFFFFFFFF
        return pkt.serialize(ext_map) if ext_map else pkt.serialize()

    def rewrite_path(i: int) -> bytes:
        buf = bytearray(wire)
        struct.pack_into("!HII", buf, 2, i & 0xFFFF, (3000 + i) & 0xFFFFFFFF, 0x5678)
        return bytes(buf)

    key = os.urandom(30)
    policy = Policy(key=key, ssrc_type=Policy.SSRC_ANY_OUTBOUND)
    policy.allow_repeat_tx = True
    session = Session(policy=policy)
    rewritten = [rewrite_path(i) for i in range(65536)]
    counter = [0]

    def protect(i: int) -> bytes:  # consecutive sequence numbers across passes (replay check)
        counter[0] += 1
        return session.protect(rewritten[counter[0] & 0xFFFF])

    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.setblocking(False)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.setblocking(False)
    addr = rx.getsockname()
    protected = protect(0)

    def send(i: int) -> None:
        try:
            tx.sendto(protected, addr)
        except BlockingIOError:
            pass
        if i % 64 == 0:  # keep the receiver's buffer from filling
            try:
                while True:
                    rx.recv(2048)
            except BlockingIOError:
                pass

    figures = {
        "rtp_object_parse_rewrite_serialize_us": per_packet_us(object_path, n),
        "header_rewrite_pack_into_us": per_packet_us(rewrite_path, n),
        "srtp_protect_us": per_packet_us(protect, n),
        "udp_sendto_us": per_packet_us(send, n),
    }
    figures["object_vs_rewrite_ratio"] = round(
        figures["rtp_object_parse_rewrite_serialize_us"]
        / max(figures["header_rewrite_pack_into_us"], 1e-6),
        1,
    )
    from media import native_send

    native = native_send.load()
    paths: dict[str, object] = {"fast": None} | ({"native": native} if native else {})
    for label, lib in paths.items():
        for size, suffix in ((3000, ""), (12000, "_10")):
            figures[f"{label}_sender_frame{suffix}_us"] = fast_sender_frame_us(
                session, tx, rx, n // 3, lib, size
            )
        figures[f"{label}_sender_fanout12_us"] = fast_sender_frame_us(
            session, tx, rx, n // 3, lib, 3000, 12
        )
    figures["fast_sender_frame_packets"] = 3
    figures["fast_sender_frame_10_packets"] = 10
    figures["native_send_built"] = native is not None
    figures["packets"] = n
    figures["loadavg"] = [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    print(json.dumps(figures))


def fast_sender_frame_us(
    session: object,
    tx: socket.socket,
    rx: socket.socket,
    n: int,
    native: object = None,
    size: int = 3000,
    subscribers: int = 1,
) -> float:
    """CPU of the SFU's fast path for one VP8 frame of ``size`` bytes (media/fastpath.py):
    pack, headers, RTX history, SRTP and a ``sendto`` per packet on a loopback socket, or with
    ``native`` the compiled send (media/native: SRTP and one ``sendmmsg`` in C). With
    ``subscribers`` > 1, one frame goes to that many senders (packetized once): the figure is
    per frame and subscriber."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from aiortc.rtcrtpparameters import (
        RTCRtpCodecParameters,
        RTCRtpHeaderExtensionParameters,
        RTCRtpParameters,
    )
    from aiortc.rtp import HeaderExtensionsMap

    from media.fastpath import FastSender, FrameHistory
    from media.frames import EncodedFrame, FramePacker

    addr = rx.getsockname()
    ext_map = HeaderExtensionsMap()
    ext_map.configure(
        RTCRtpParameters(
            headerExtensions=[
                RTCRtpHeaderExtensionParameters(id=1, uri="urn:ietf:params:rtp-hdrext:sdes:mid"),
                RTCRtpHeaderExtensionParameters(
                    id=2, uri="http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
                ),
            ]
        )
    )

    class Socket:  # the part of asyncio's datagram transport the fast path uses
        def get_write_buffer_size(self) -> int:
            return 0

        def sendto(self, data: bytes, to: object) -> None:
            try:
                tx.sendto(data, addr)
            except BlockingIOError:
                pass

        def get_extra_info(self, name: str) -> object:
            return tx if name == "socket" else None

        def is_closing(self) -> bool:
            return False

    class Wire:  # aiortc_patch.SenderWire without a peer connection
        enabled = True

        def __init__(self, ssrc: int) -> None:
            self.packer = FramePacker("video/vp8")
            self.ssrc = ssrc
            self.history = FrameHistory()

        mid = "0"

        def header_extensions(self) -> tuple[object, str]:
            return ext_map, "0"

        def link(self) -> tuple[object, object, object]:
            return session.protect, sock, addr  # type: ignore[attr-defined]

        def account(self, *args: int) -> None:
            pass

        def snapshot(self) -> tuple[object, ...]:
            return ()

        def holds(self, snapshot: object, transport: object) -> bool:
            return True

    sock = Socket()
    # one SRTP stream per sender, never reused across runs (the session's replay check)
    fans = [FastSender(Wire(next(_SSRCS)), native) for _ in range(subscribers)]  # type: ignore[arg-type]
    for fast in fans:
        fast.codec = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=97)
    data = os.urandom(size)  # 3000: 3 packets

    def frame(i: int) -> None:
        shared = EncodedFrame(data, 3000 * i, False, 0.0)  # one frame, every subscriber
        for fast in fans:
            fast.ready()
            fast.forward(shared)
        if i % max(1, 4 // subscribers) == 0:
            try:
                while True:
                    rx.recv(2048)
            except BlockingIOError:
                pass

    return round(per_packet_us(frame, n // subscribers) / subscribers, 2)


if __name__ == "__main__":
    main()
