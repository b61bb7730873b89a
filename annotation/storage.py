"""Content-addressed blob storage under ``<data_dir>/documents/``."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


class BlobStore:
    """Files named by the SHA-256 of their content, written atomically (temp file + rename)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        """Where the blob with this digest lives (it may not exist)."""
        if not _SHA_RE.match(sha256):
            raise ValueError(f"not a sha256 hex digest: {sha256!r}")
        return self.root / sha256[:2] / sha256

    def put(self, data: bytes) -> str:
        """Store ``data`` (idempotent) and return its hex digest."""
        digest = hashlib.sha256(data).hexdigest()
        target = self.path(digest)
        if target.exists():
            return digest
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
        return digest

    def get(self, sha256: str) -> bytes:
        """The blob's bytes; FileNotFoundError when absent."""
        return self.path(sha256).read_bytes()

    def exists(self, sha256: str) -> bool:
        """Whether the blob is stored."""
        return self.path(sha256).exists()
