"""Content-addressed blob storage under ``<data_dir>/documents/``."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


class BlobStore:
    """Files named by the SHA-256 of their content, written atomically (temp file + rename)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        # put() and delete_unused() in this process never interleave; across processes sharing
        # the folder, the grace period and the mtime put() refreshes protect uploads
        self._lock = threading.Lock()

    def path(self, sha256: str) -> Path:
        """Where the blob with this digest lives (it may not exist)."""
        if not _SHA_RE.match(sha256):
            raise ValueError(f"not a sha256 hex digest: {sha256!r}")
        return self.root / sha256[:2] / sha256

    def put(self, data: bytes) -> str:
        """Store ``data`` (idempotent) and return its hex digest."""
        digest = hashlib.sha256(data).hexdigest()
        target = self.path(digest)
        with self._lock:
            try:
                os.utime(target)  # stored already: now it is recent again (see delete_unused)
                return digest
            except FileNotFoundError:
                pass
        self._write(target, data)  # a fresh file is recent: delete_unused leaves it alone
        return digest

    def _write(self, target: Path, data: bytes) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get(self, sha256: str) -> bytes:
        """The blob's bytes; FileNotFoundError when absent."""
        return self.path(sha256).read_bytes()

    def exists(self, sha256: str) -> bool:
        """Whether the blob is stored."""
        return self.path(sha256).exists()

    def digests(self) -> Iterator[str]:
        """Every stored blob's digest (temporary files of writes in progress left out)."""
        for folder in self.root.iterdir():
            if folder.is_dir() and len(folder.name) == 2:
                for entry in folder.iterdir():
                    if _SHA_RE.match(entry.name):
                        yield entry.name

    def unused_candidates(self, grace_s: float, now: float | None = None) -> list[str]:
        """Digests of blobs untouched for ``grace_s`` (to be checked against the records)."""
        cutoff = (time.time() if now is None else now) - grace_s
        old = []
        for digest in self.digests():
            try:
                if self.path(digest).stat().st_mtime <= cutoff:
                    old.append(digest)
            except FileNotFoundError:
                continue
        return old

    def delete_unused(self, digests: list[str], grace_s: float, now: float | None = None) -> int:
        """Delete these blobs (no document uses them) unless touched within ``grace_s`` since
        they were listed; how many went.

        The grace period covers an upload whose files are stored but whose document row is not
        committed yet (``put`` also refreshes the mtime of a file it finds already stored).
        """
        cutoff = (time.time() if now is None else now) - grace_s
        removed = 0
        for digest in digests:
            path = self.path(digest)
            with self._lock:
                try:
                    if path.stat().st_mtime > cutoff:
                        continue
                    path.unlink()
                except FileNotFoundError:
                    continue
            removed += 1
        return removed
