"""Tamper-evident audit log: an append-only Merkle tree with signed tree heads.

Each entry (time, subject, action, object, result, detail) is stored as a row with its leaf hash
(RFC 6962: SHA-256 over 0x00 + canonical JSON, the sequence number included) and an Ed25519
signature over that hash, so `verify` can name the first entry that was altered, removed or
reordered. Signed tree heads (size, time, Merkle root) are written every few seconds and at
shutdown; they reveal a cut-off tail and anchor inclusion proofs (pymerkle computes both).

Tamper evidence holds against whoever can edit the database but not the signing key: keep
`audit_ed25519.pem` on other storage than the database (or give `audit_key_file`), and copy
signed tree heads to an outside witness (`teleconsult audit head` prints the newest).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pymerkle import (
    BaseMerkleTree,
    InclusionProof,
    InvalidProof,
    verify_consistency,
    verify_inclusion,
)
from sqlalchemy import insert, inspect, select
from sqlalchemy.ext.asyncio import AsyncConnection

from kernel.records import tables as t
from kernel.records.store import RecordStore

log = logging.getLogger(__name__)

ENTRY_CONTEXT = b"teleconsult-audit-entry-v1"
HEAD_CONTEXT = b"teleconsult-audit-head-v1"
KEY_FILE = "audit_ed25519.pem"
PUBLIC_KEY_FILE = "audit_ed25519.pub.pem"
DEFAULT_LOG = "main"
AGGREGATE_WINDOW_S = 60.0
AGGREGATE_MAX_KEYS = 1000  # distinct (action, subject, object, result, key) per window


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One audited event, as stored."""

    seq: int
    ts_us: int
    subject: str
    action: str
    object: str
    result: str
    detail: str  # canonical JSON text
    log_id: str = "main"  # one log per node (scale-out); "main" is the single-node log

    def canonical(self) -> bytes:
        """The exact bytes the leaf hash covers (a node's log id too, except "main", so an
        entry cannot be moved between the logs of two nodes)."""
        fields: dict[str, Any] = {
            "seq": self.seq,
            "ts_us": self.ts_us,
            "subject": self.subject,
            "action": self.action,
            "object": self.object,
            "result": self.result,
            "detail": self.detail,
        }
        if self.log_id != DEFAULT_LOG:
            fields["log"] = self.log_id
        return json.dumps(
            fields,
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
        ).encode()


def canonical_detail(detail: dict[str, Any] | None) -> str:
    """Detail as canonical JSON text (stored as text so it round-trips byte for byte)."""
    return json.dumps(detail or {}, sort_keys=True, separators=(",", ":"), default=str)


def leaf_hash(entry: AuditEntry) -> bytes:
    """RFC 6962 leaf hash of an entry."""
    return hashlib.sha256(b"\x00" + entry.canonical()).digest()


def head_message(tree_size: int, ts_us: int, root: bytes, log_id: str = DEFAULT_LOG) -> bytes:
    """The bytes a tree head signature covers."""
    tag = b"" if log_id == DEFAULT_LOG else log_id.encode() + b"\x00"
    return HEAD_CONTEXT + tag + tree_size.to_bytes(8, "big") + ts_us.to_bytes(8, "big") + root


class LeafTree(BaseMerkleTree):
    """A pymerkle tree over leaf hashes kept in memory (32 bytes an entry)."""

    def __init__(self, leaves: Iterable[bytes] = ()) -> None:
        self.leaves: list[bytes] = list(leaves)
        super().__init__("sha256")

    def _encode_entry(self, data: bytes) -> bytes:
        return data

    def _store_leaf(self, data: bytes, digest: bytes) -> int:
        self.leaves.append(digest)
        return len(self.leaves)

    def _get_leaf(self, index: int) -> bytes:
        return self.leaves[index - 1]

    def _get_leaves(self, offset: int, width: int) -> list[bytes]:
        return self.leaves[offset : offset + width]

    def _get_size(self) -> int:
        return len(self.leaves)

    def add_leaf_hash(self, digest: bytes) -> None:
        """Append a leaf whose hash is already computed."""
        with self.lock:
            self.leaves.append(digest)


def load_or_create_key(path: Path) -> Ed25519PrivateKey:
    """Read the signing key, or create it (mode 0600) with its public half beside it."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} is not an Ed25519 private key")
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    pub_path = path.with_name(PUBLIC_KEY_FILE)
    if not pub_path.exists() or pub_path.read_bytes() != public:
        pub_path.write_bytes(public)
    return key


def _row_entry(row: Any) -> AuditEntry:
    return AuditEntry(
        row.seq, row.ts_us, row.subject, row.action, row.object, row.result, row.detail, row.log_id
    )


class AuditLog:
    """Appends audited events and signs tree heads; one log (and one instance) per node."""

    def __init__(
        self,
        store: RecordStore,
        key: Ed25519PrivateKey,
        head_interval_s: float = 5.0,
        log_id: str = DEFAULT_LOG,
    ) -> None:
        self.store = store
        self.log_id = log_id
        self.key = key
        self.head_interval_s = head_interval_s
        self.tree = LeafTree()
        self.signed_size = 0
        self._signer: asyncio.Task[None] | None = None
        self._signing = asyncio.Lock()
        # high-rate refusals (unauthenticated requests, refused events): see aggregate()
        self.aggregate_window_s = AGGREGATE_WINDOW_S
        self._window_start = time.monotonic()
        self._repeats: dict[tuple[str, str, str, str, str], int] = {}
        self._open_rows: list[dict[str, Any]] | None = None  # rows of the queued insert
        self._open_write: asyncio.Future[None] | None = None
        # rows whose insert failed (the database was away): their sequence numbers and leaves
        # are taken, so they lead the next insert; the log stays gapless once it is back
        self._unwritten: list[dict[str, Any]] = []

    async def start(self) -> None:
        """Load the leaf hashes and start signing tree heads."""
        async with self.store.engine.connect() as conn:
            if self.log_id != DEFAULT_LOG:
                pk = await conn.run_sync(
                    lambda c: inspect(c).get_pk_constraint("audit_entries")["constrained_columns"]
                )
                if "log_id" not in pk:
                    raise RuntimeError(
                        "this records database predates per-node audit logs (its audit_entries "
                        "key is seq alone): a node_id other than 'main' needs a new database"
                    )
            rows = await conn.execute(
                select(t.audit_entries.c.leaf_hash)
                .where(t.audit_entries.c.log_id == self.log_id)
                .order_by(t.audit_entries.c.seq)
            )
            self.tree = LeafTree(r.leaf_hash for r in rows)
            head = (
                await conn.execute(
                    select(t.audit_tree_heads.c.tree_size)
                    .where(t.audit_tree_heads.c.log_id == self.log_id)
                    .order_by(t.audit_tree_heads.c.tree_size.desc())
                    .limit(1)
                )
            ).first()
        self.signed_size = head.tree_size if head else 0
        self._signer = asyncio.create_task(self._sign_periodically(), name="audit-heads")

    async def close(self) -> None:
        """Write the counted repeats, sign a final tree head and stop."""
        if self._signer is not None:
            self._signer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._signer
            self._signer = None
        await self.flush_aggregated()
        if self._unwritten and self._open_rows is None:  # a last try for rows a failure left
            rows, self._unwritten = self._unwritten, []
            try:
                await self.store.write(lambda conn: conn.execute(insert(t.audit_entries), rows))
            except Exception:
                self._unwritten = rows
                log.exception("audit: %d entries could not be written at close", len(rows))
        await self.sign_head()

    def aggregate(self, action: str, subject: str, obj: str, result: str, key: str = "") -> bool:
        """Count one high-rate event (an unauthenticated request, a refused event); True if
        it is the first of its kind in the current window: then the caller appends it. The
        repeats are written as one `audit.aggregated` entry per window (and at close), so a
        flood of 1,000 refusals a second costs one row a minute, and none goes unrecorded."""
        kind = (action, subject[:256], obj[:512], result[:32], key[:64])
        if kind in self._repeats:
            self._repeats[kind] += 1
            return False
        if len(self._repeats) >= AGGREGATE_MAX_KEYS:
            other = (action, "*", "*", result[:32], "*")
            self._repeats[other] = self._repeats.get(other, 0) + 1
            return False
        self._repeats[kind] = 0
        return True

    async def flush_aggregated(self) -> int | None:
        """Append the repeats counted since the window opened (if any); returns the seq."""
        repeats, self._repeats = self._repeats, {}
        started, self._window_start = self._window_start, time.monotonic()
        counts = [
            {"action": a, "subject": s, "object": o, "result": r, "key": k, "repeats": n}
            for (a, s, o, r, k), n in sorted(repeats.items())
            if n
        ]
        if not counts:
            return None
        window = round(time.monotonic() - started, 1)
        return await self.append(
            "audit.aggregated", "server", "audit", "ok", {"window_s": window, "counts": counts}
        )

    def _insert_done(self, write: asyncio.Future[None], rows: list[dict[str, Any]]) -> None:
        """An insert ended. If it failed before it ran (no connection), later rows must not
        join it; if it failed at all, its rows go first into the next insert."""
        if self._open_rows is rows:
            self._open_rows = None
        if write.cancelled() or write.exception() is not None:
            self._unwritten = rows + self._unwritten
            log.error(
                "audit: %d entries not written yet (database error); they lead the next insert",
                len(rows),
            )

    @property
    def size(self) -> int:
        """Entries appended so far."""
        return self.tree.get_size()

    async def append(
        self,
        action: str,
        subject: str,
        obj: str,
        result: str = "ok",
        detail: dict[str, Any] | None = None,
    ) -> int:
        """Record one event; returns its sequence number once it is committed."""
        seq, committed = self.append_soon(action, subject, obj, result, detail)
        await committed
        return seq

    def append_soon(
        self,
        action: str,
        subject: str,
        obj: str,
        result: str = "ok",
        detail: dict[str, Any] | None = None,
    ) -> tuple[int, asyncio.Future[None]]:
        """Queue one event now (its place in the log is taken before this returns): its
        sequence number, and a future that resolves once it is committed."""
        entry = AuditEntry(
            seq=self.size,
            ts_us=time.time_ns() // 1000,
            subject=subject[:256],
            action=action[:64],
            object=obj[:512],
            result=result[:32],
            detail=canonical_detail(detail),
            log_id=self.log_id,
        )
        digest = leaf_hash(entry)
        signature = self.key.sign(ENTRY_CONTEXT + digest)
        # the sequence number is taken, the leaf added and the row queued before the first
        # await, and writes commit in order, so the table and the tree agree
        self.tree.add_leaf_hash(digest)
        row = {
            "log_id": self.log_id,
            "seq": entry.seq,
            "ts_us": entry.ts_us,
            "subject": entry.subject,
            "action": entry.action,
            "object": entry.object,
            "result": entry.result,
            "detail": entry.detail,
            "leaf_hash": digest,
            "sig": signature,
        }
        if self._open_rows is None:
            # rows appended until the writer runs this insert share it (one executemany)
            rows: list[dict[str, Any]] = self._unwritten
            self._unwritten = []

            async def run(conn: AsyncConnection, rows: list[dict[str, Any]] = rows) -> None:
                if self._open_rows is rows:
                    self._open_rows = None  # later rows go into the next insert
                await conn.execute(insert(t.audit_entries), rows)

            write = self.store.write_soon(run)  # raises if the store is closed
            write.add_done_callback(lambda f, rows=rows: self._insert_done(f, rows))
            self._open_write = write
            self._open_rows = rows
        self._open_rows.append(row)
        assert self._open_write is not None
        return entry.seq, asyncio.shield(self._open_write)

    async def sign_head(self) -> dict[str, Any] | None:
        """Sign and store a tree head for every committed entry, if any are new."""
        # one at a time (the periodic signer and close() may overlap; a cancelled signer's
        # queued insert still commits), and a head already stored for this size is kept
        async with self._signing:
            return await self._sign_head()

    async def _sign_head(self) -> dict[str, Any] | None:
        size = self.size
        if size == 0 or size <= self.signed_size:
            return None

        async def barrier(_conn: AsyncConnection) -> None:
            return None

        # once a write queued after the first `size` entries commits, they are all committed
        await self.store.write(barrier)
        ts_us = time.time_ns() // 1000
        root = self.tree.get_root(size)
        signature = self.key.sign(head_message(size, ts_us, root, self.log_id))
        heads = t.audit_tree_heads

        async def run(conn: AsyncConnection) -> None:
            stored = await conn.execute(
                select(heads.c.tree_size)
                .where(heads.c.log_id == self.log_id)
                .where(heads.c.tree_size == size)
            )
            if stored.first() is not None:
                return
            await conn.execute(
                insert(heads).values(
                    log_id=self.log_id, tree_size=size, ts_us=ts_us, root_hash=root, sig=signature
                )
            )

        await self.store.write(run)
        self.signed_size = max(self.signed_size, size)
        return {
            "log_id": self.log_id,
            "tree_size": size,
            "ts_us": ts_us,
            "root": root.hex(),
            "sig": signature.hex(),
        }

    async def _sign_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.head_interval_s)
            try:
                if time.monotonic() - self._window_start >= self.aggregate_window_s:
                    await self.flush_aggregated()
                await self.sign_head()
            except Exception:
                log.exception("could not sign an audit tree head")

    async def prove(self, seq: int) -> dict[str, Any]:
        """An inclusion proof of entry `seq` against the newest signed tree head covering it."""
        if self.signed_size <= seq:
            await self.sign_head()
        return await prove_inclusion(self.store, seq, self.tree, self.log_id)


async def log_ids(store: RecordStore) -> list[str]:
    """The audit logs in the records (one per node that ever ran), sorted."""
    async with store.engine.connect() as conn:
        entries = await conn.execute(select(t.audit_entries.c.log_id).distinct())
        heads = await conn.execute(select(t.audit_tree_heads.c.log_id).distinct())
        return sorted({r.log_id for r in entries} | {r.log_id for r in heads})


async def prove_inclusion(
    store: RecordStore, seq: int, tree: LeafTree | None = None, log_id: str | None = None
) -> dict[str, Any]:
    """Build {log_id, entry, leaf_hash, tree_size, root, head_sig, proof} for one entry of one
    log (`log_id` may be left out when the records hold a single log)."""
    if log_id is None:
        logs = await log_ids(store)
        if len(logs) > 1:
            raise LookupError(f"several audit logs ({', '.join(logs)}): name one with --log")
        log_id = logs[0] if logs else DEFAULT_LOG
    entries, heads = t.audit_entries, t.audit_tree_heads
    async with store.engine.connect() as conn:
        row = (
            await conn.execute(
                select(entries).where(entries.c.log_id == log_id).where(entries.c.seq == seq)
            )
        ).first()
        head = (
            await conn.execute(
                select(heads)
                .where(heads.c.log_id == log_id)
                .where(heads.c.tree_size > seq)
                .order_by(heads.c.tree_size.desc())
                .limit(1)
            )
        ).first()
        if tree is None:
            rows = await conn.execute(
                select(entries.c.leaf_hash)
                .where(entries.c.log_id == log_id)
                .order_by(entries.c.seq)
            )
            tree = LeafTree(r.leaf_hash for r in rows)
    if row is None:
        raise LookupError(f"no audit entry {seq} in log {log_id}")
    if head is None:
        raise LookupError(f"no signed tree head of log {log_id} covers entry {seq} yet")
    proof = tree.prove_inclusion(seq + 1, head.tree_size)
    return {
        "log_id": log_id,
        "entry": {**_entry_dict(_row_entry(row))},
        "leaf_hash": row.leaf_hash.hex(),
        "tree_size": head.tree_size,
        "head_ts_us": head.ts_us,
        "root": head.root_hash.hex(),
        "head_sig": head.sig.hex(),
        "proof": proof.serialize(),
    }


def _entry_dict(entry: AuditEntry) -> dict[str, Any]:
    return {
        "seq": entry.seq,
        "ts_us": entry.ts_us,
        "subject": entry.subject,
        "action": entry.action,
        "object": entry.object,
        "result": entry.result,
        "detail": json.loads(entry.detail),
    }


def check_inclusion(proof_doc: dict[str, Any], public_key: Ed25519PublicKey) -> None:
    """Verify a document from `prove_inclusion`; raise ValueError saying what is wrong."""
    entry = proof_doc["entry"]
    log_id = proof_doc.get("log_id", DEFAULT_LOG)
    rebuilt = AuditEntry(
        entry["seq"],
        entry["ts_us"],
        entry["subject"],
        entry["action"],
        entry["object"],
        entry["result"],
        canonical_detail(entry["detail"]),
        log_id,
    )
    digest = leaf_hash(rebuilt)
    if digest.hex() != proof_doc["leaf_hash"]:
        raise ValueError("the entry does not match its leaf hash")
    root = bytes.fromhex(proof_doc["root"])
    size = proof_doc["tree_size"]
    try:
        public_key.verify(
            bytes.fromhex(proof_doc["head_sig"]),
            head_message(size, proof_doc["head_ts_us"], root, log_id),
        )
    except InvalidSignature as exc:
        raise ValueError("the tree head signature is not valid") from exc
    try:
        verify_inclusion(digest, root, InclusionProof.deserialize(proof_doc["proof"]))
    except InvalidProof as exc:
        raise ValueError(f"the inclusion proof does not hold: {exc}") from exc


@dataclass(slots=True)
class VerifyReport:
    """What `verify_log` found (over every node's log; `log_id` names the failing one)."""

    ok: bool
    entries: int
    heads: int
    problem: str | None = None
    first_bad_seq: int | None = None
    log_id: str | None = None
    logs: list[str] = field(default_factory=list)


async def verify_log(store: RecordStore, public_key: Ed25519PublicKey) -> VerifyReport:
    """Check every log: each entry's hash, signature and place, and each signed tree head."""
    logs = await log_ids(store) or [DEFAULT_LOG]
    entries = heads = 0
    for log_id in logs:
        report = await verify_one_log(store, public_key, log_id)
        if not report.ok:
            if len(logs) > 1 or log_id != DEFAULT_LOG:
                report.problem = f"log {log_id}: {report.problem}"
            report.entries += entries
            report.heads += heads
            report.logs = logs
            return report
        entries += report.entries
        heads += report.heads
    return VerifyReport(True, entries, heads, logs=logs)


async def verify_one_log(
    store: RecordStore, public_key: Ed25519PublicKey, log_id: str = DEFAULT_LOG
) -> VerifyReport:
    """Check one node's log."""
    tree = LeafTree()
    expected = 0
    entries_t, heads_t = t.audit_entries, t.audit_tree_heads
    async with store.engine.connect() as conn:
        result = await conn.stream(
            select(entries_t).where(entries_t.c.log_id == log_id).order_by(entries_t.c.seq)
        )
        async for row in result:
            if row.seq != expected:
                bad = expected if row.seq > expected else row.seq
                return VerifyReport(False, expected, 0, f"entry {bad} was removed", bad, log_id)
            entry = _row_entry(row)
            digest = leaf_hash(entry)
            try:
                if digest != row.leaf_hash:
                    raise InvalidSignature
                public_key.verify(row.sig, ENTRY_CONTEXT + digest)
            except InvalidSignature:
                return VerifyReport(
                    False,
                    expected,
                    0,
                    f"entry {row.seq} was altered or moved (content does not match its signature)",
                    row.seq,
                    log_id,
                )
            tree.add_leaf_hash(digest)
            expected += 1
        heads = list(
            await conn.execute(
                select(heads_t).where(heads_t.c.log_id == log_id).order_by(heads_t.c.tree_size)
            )
        )
    for head in heads:
        try:
            public_key.verify(
                head.sig, head_message(head.tree_size, head.ts_us, head.root_hash, log_id)
            )
        except InvalidSignature:
            return VerifyReport(
                False,
                expected,
                len(heads),
                f"tree head at size {head.tree_size} is not signed",
                log_id=log_id,
            )
        if head.tree_size > expected:
            return VerifyReport(
                False,
                expected,
                len(heads),
                f"entries {expected} to {head.tree_size - 1} were removed "
                f"(a signed tree head covers {head.tree_size} entries)",
                expected,
                log_id,
            )
        if tree.get_root(head.tree_size) != head.root_hash:
            return VerifyReport(
                False,
                expected,
                len(heads),
                f"the log does not match the signed tree head at size {head.tree_size}",
                log_id=log_id,
            )
    return VerifyReport(True, expected, len(heads), log_id=log_id)


# witness: signed tree heads kept outside, and the log checked to still extend them ----------


def head_dict(row: Any) -> dict[str, Any]:
    """A stored tree head as printed by `teleconsult audit head` (a witness keeps these)."""
    return {
        "log_id": row.log_id,
        "tree_size": row.tree_size,
        "ts_us": row.ts_us,
        "root": row.root_hash.hex(),
        "sig": row.sig.hex(),
    }


def check_head(head: dict[str, Any], public_key: Ed25519PublicKey) -> None:
    """Raise ValueError unless `head` is a tree head signed by the audit key."""
    try:
        message = head_message(
            int(head["tree_size"]),
            int(head["ts_us"]),
            bytes.fromhex(head["root"]),
            str(head.get("log_id", DEFAULT_LOG)),
        )
        public_key.verify(bytes.fromhex(head["sig"]), message)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not a tree head: {exc}") from exc
    except InvalidSignature as exc:
        raise ValueError("the witnessed tree head is not signed by this audit key") from exc


async def newest_heads(store: RecordStore, public_key: Ed25519PublicKey) -> list[dict[str, Any]]:
    """The newest signed tree head of every log, each checked against the public key."""
    heads_t = t.audit_tree_heads
    out = []
    async with store.engine.connect() as conn:
        for log_id in await log_ids(store):
            row = (
                await conn.execute(
                    select(heads_t)
                    .where(heads_t.c.log_id == log_id)
                    .order_by(heads_t.c.tree_size.desc())
                    .limit(1)
                )
            ).first()
            if row is not None:
                head = head_dict(row)
                check_head(head, public_key)
                out.append(head)
    return out


async def check_witness(
    store: RecordStore, public_key: Ed25519PublicKey, witnessed: list[dict[str, Any]]
) -> str | None:
    """None if the stored log still extends every witnessed head (an RFC 6962/9162
    consistency proof from the witnessed size to the log's size, checked against the
    witnessed root), else what is wrong. A log cut back together with its tree heads, or
    wiped, no longer extends a head taken before the cut."""
    entries_t = t.audit_entries
    for head in witnessed:
        check_head(head, public_key)
        log_id = str(head.get("log_id", DEFAULT_LOG))
        size, root = int(head["tree_size"]), bytes.fromhex(head["root"])
        async with store.engine.connect() as conn:
            rows = await conn.execute(
                select(entries_t.c.leaf_hash)
                .where(entries_t.c.log_id == log_id)
                .order_by(entries_t.c.seq)
            )
            tree = LeafTree(r.leaf_hash for r in rows)
        current = tree.get_size()
        if current < size:
            return (
                f"log {log_id} holds {current} entries but a witnessed signed head covers "
                f"{size}: entries were cut or the log was wiped"
            )
        try:
            proof = tree.prove_consistency(size, current)
            verify_consistency(root, tree.get_root(current), proof)
        except InvalidProof as exc:
            return f"log {log_id} does not extend the witnessed head at size {size}: {exc}"
        if tree.get_root(size) != root:
            return f"log {log_id} does not extend the witnessed head at size {size}"
    return None
