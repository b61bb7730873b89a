"""The compiled half of the forwarding fast path (``media/native/fastsend.c``), through cffi
(the same library holds the compiled REMB estimator, ``remb.c``: media/remb_filters.py).

One call per frame and subscriber writes the frame's RTP headers, protects every packet with
the sender's own libsrtp session (pylibsrtp's ``srtp_protect`` and session pointer, passed to
C, so SRTP state stays the one aiortc's retransmissions and RTCP use) and sends them with one
``sendmmsg``, each run of equal-sized packets as one UDP GSO message (``Link.gso``). cffi's
ABI mode loads the shared library ``scripts/setup-venv.sh`` builds with the system C compiler
(no Python headers); when it is absent, or ``media.native_send`` is false,
:class:`~media.fastpath.FastSender` does the same work in Python (the tested fallback).
"""

from __future__ import annotations

import logging
import socket
import struct
from functools import cache
from pathlib import Path
from typing import Any

from .aiortc_patch import srtp_context

logger = logging.getLogger(__name__)

LIBRARY = Path(__file__).with_name("native") / "libtcfastsend.so"
MTU = 1500  # the C side's largest packet before protection (TC_MTU)
ABI_VERSION = 5

_CDEF = """
int tc_abi_version(void);
int tc_send_frame(int fd, int family, const char *host, int port, void *protect_fn,
                  void *srtp, int first, int pt, int seq, uint32_t ts, uint32_t ssrc,
                  const char *ext, int ext_len, const char *payloads, const char *lengths,
                  int count, int picture_id, int picture_id_at, int gso, int abs_at,
                  uint32_t abs_send_time, int *out);
typedef struct tc_remb tc_remb;
tc_remb *tc_remb_new(void);
void tc_remb_free(tc_remb *r);
int tc_remb_add(tc_remb *r, int64_t arrival_ms, uint32_t abs_send_time, int payload_size,
                int64_t *bitrate);
int tc_remb_hypothesis(const tc_remb *r);
double tc_remb_state(const tc_remb *r, int which);
"""


@cache
def _lengths(count: int) -> struct.Struct:
    return struct.Struct(f"={count}H")


def joined(payloads: list[bytes]) -> tuple[bytes, bytes, int, int]:
    """What ``tc_send_frame`` takes of a frame's payloads: ``(joined, lengths as native
    uint16, total bytes, the largest)``."""
    lengths = list(map(len, payloads))
    return b"".join(payloads), _lengths(len(lengths)).pack(*lengths), sum(lengths), max(lengths)


def frame_joined(frame: Any, payloads: list[bytes]) -> tuple[bytes, bytes, int, int]:
    """:func:`joined` of ``frame``'s shared payloads (``frame.rtp``), made by its first
    subscriber and kept on the frame (``EncodedFrame.joined``) for every other one."""
    made = frame.joined
    if made is None:
        made = frame.joined = joined(payloads)
    return made  # type: ignore[no-any-return]


class NativeSendError(RuntimeError):
    """The compiled library cannot be used (a stale build, pylibsrtp not as expected)."""


class Native:
    """The loaded library and the pylibsrtp function it calls."""

    def __init__(self, ffi: Any, lib: Any) -> None:
        from pylibsrtp._binding import ffi as srtp_ffi
        from pylibsrtp._binding import lib as srtp_lib

        self.ffi = ffi
        self.lib = lib
        #: ``tc_send_frame`` (an attribute, so a bench can time it: bench/sfu_timing.py)
        self.send_frame = lib.tc_send_frame
        self._srtp_ffi = srtp_ffi
        protect = srtp_ffi.addressof(srtp_lib, "srtp_protect")
        signature = srtp_ffi.typeof(protect).cname
        if signature != "srtp_err_status_t(*)(struct srtp_ctx_t_ *, void *, int *)":
            raise NativeSendError(f"unexpected srtp_protect signature {signature}")
        self.protect_fn = ffi.cast("void *", int(srtp_ffi.cast("uintptr_t", protect)))

    def session_pointer(self, session: Any) -> Any:
        """The ``srtp_t`` of a pylibsrtp ``Session`` (kept alive by the caller's reference)."""
        pointer = srtp_context(session)
        return self.ffi.cast("void *", int(self._srtp_ffi.cast("uintptr_t", pointer)))


@cache
def load() -> Native | None:
    """The compiled send, or None (not built, or cffi/pylibsrtp do not match): logged once."""
    if not LIBRARY.exists():
        logger.info("native send not built (%s): forwarding in Python", LIBRARY)
        return None
    try:
        import cffi

        ffi = cffi.FFI()
        ffi.cdef(_CDEF)
        lib = ffi.dlopen(str(LIBRARY))
        if lib.tc_abi_version() != ABI_VERSION:
            raise NativeSendError("stale build: run scripts/setup-venv.sh")
        return Native(ffi, lib)
    except (OSError, ImportError, AttributeError, NativeSendError) as exc:
        logger.warning("native send unusable (%s): forwarding in Python", exc)
        return None


class Link:
    """One subscriber socket and destination as the C side takes them (rebuilt on change)."""

    __slots__ = (
        "addr",
        "family",
        "fd",
        "gso",
        "ip",
        "port",
        "protect",
        "session",
        "srtp",
        "transport",
        "usable",
    )

    def __init__(
        self,
        native: Native,
        transport: Any,
        addr: tuple[Any, ...],
        session: Any,
        protect: Any = None,
        gso: bool = True,
    ) -> None:
        self.transport = transport
        self.protect = protect  # the session's bound protect: how the fast path tells a change
        self.addr = addr
        self.session = session  # keeps the srtp_t alive
        self.srtp = native.session_pointer(session)
        sock = transport.get_extra_info("socket")
        self.fd = sock.fileno()
        ip = str(addr[0])
        self.family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        self.ip = ip.encode()
        self.port = int(addr[1])
        #: IPv4 or plain IPv6 (a scoped link-local address stays on asyncio's ``sendto``)
        self.usable = b"%" not in self.ip and self.fd >= 0
        #: runs of equal-sized packets as one segmented message (UDP GSO) until refused
        self.gso = gso

    @classmethod
    def make(
        cls,
        native: Native,
        transport: Any,
        addr: Any,
        session: Any,
        protect: Any = None,
        gso: bool = True,
    ) -> Link | None:
        """The link, or None without a pylibsrtp ``Session`` (:func:`~media.aiortc_patch.
        srtp_session`) or when the transport has no socket (test doubles, other transports)."""
        if session is None or addr is None:
            return None
        sock = transport.get_extra_info("socket")
        if sock is None:
            return None
        return cls(native, transport, addr, session, protect, gso)


def gso_refused(link: Link) -> None:
    """The kernel refused segmentation on ``link``: it sends packet by packet from now on."""
    link.gso = False
    logger.info(
        "media: the kernel refused UDP segmentation towards a subscriber: packet by packet "
        "on that link (family %d)",
        link.family,
    )
