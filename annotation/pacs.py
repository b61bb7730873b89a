"""C-STORE of a document's DICOM objects (original images, GSPS/CSPS, SR) to a PACS (pynetdicom).

One association per call; every object is offered in its own transfer syntax (and, when that is
uncompressed, the two other uncompressed ones), so nothing is transcoded. The result lists the
C-STORE status of each object; a refused association or a non-success status is a
:class:`PacsError` (HTTP 502) with the PACS's answer, never a silent partial success.
Blocking: run it in a thread.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from io import BytesIO

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from .errors import AnnotationError

log = logging.getLogger(__name__)
UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, "1.2.840.10008.1.2.2")


class PacsError(AnnotationError):
    """The PACS refused the association or did not store an object."""

    code = "pacs_failed"
    http_status = 502


class PacsNotConfigured(AnnotationError):
    """No ``[pacs]`` destination in the settings."""

    code = "pacs_not_configured"
    http_status = 503


@dataclass(frozen=True)
class PacsTarget:
    """Where to send: the PACS's address and AE titles."""

    host: str
    port: int
    called_ae: str
    calling_ae: str = "TELECONSULT"
    timeout_s: float = 30.0


@dataclass(frozen=True)
class Stored:
    """One object's C-STORE outcome."""

    label: str
    sop_class_uid: str
    sop_instance_uid: str
    status: int


def c_store(target: PacsTarget, objects: Sequence[tuple[str, bytes | Dataset]]) -> list[Stored]:
    """Send ``(label, DICOM Part 10 bytes or dataset)`` objects in one association."""
    from pynetdicom import AE  # optional at import time: only this feature needs it

    datasets = [
        (label, pydicom.dcmread(BytesIO(obj)) if isinstance(obj, bytes) else obj)
        for label, obj in objects
    ]
    ae = AE(ae_title=target.calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = target.timeout_s
    offered: dict[str, list[str]] = {}
    for _, ds in datasets:
        syntax = str(ds.file_meta.TransferSyntaxUID)
        syntaxes = offered.setdefault(str(ds.SOPClassUID), [])
        for ts in [syntax, *UNCOMPRESSED] if syntax in UNCOMPRESSED else [syntax]:
            if ts not in syntaxes:
                syntaxes.append(ts)
    for sop_class, syntaxes in offered.items():
        ae.add_requested_context(sop_class, syntaxes)
    assoc = ae.associate(target.host, target.port, ae_title=target.called_ae)
    if not assoc.is_established:
        raise PacsError(
            f"the PACS {target.called_ae}@{target.host}:{target.port} refused or "
            "did not answer the association"
        )
    results: list[Stored] = []
    try:
        for label, ds in datasets:
            status = assoc.send_c_store(ds)
            code = int(status.Status) if status and "Status" in status else -1
            results.append(Stored(label, str(ds.SOPClassUID), str(ds.SOPInstanceUID), code))
            if code not in (0x0000, 0xB000, 0xB007, 0xB006):  # success or warning
                raise PacsError(
                    f"the PACS did not store the {label} object: C-STORE status "
                    f"0x{code & 0xFFFF:04X}"
                    if code >= 0
                    else f"the PACS did not answer the C-STORE of the {label} object"
                )
    finally:
        if assoc.is_established:
            assoc.release()
    log.info("C-STORE to %s: %d objects stored", target.called_ae, len(results))
    return results
