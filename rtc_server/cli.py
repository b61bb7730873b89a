"""The `teleconsult` command: serve, token (and the sub-commands feature packages add)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from kernel.grants import Role
from kernel.tokens import mint_token
from rtc_server import __version__
from rtc_server.config import ConfigError, Settings, load_settings, prepare_data_dir, signing_secret
from rtc_server.security import tls_context
from rtc_server.turn import TurnError

if TYPE_CHECKING:
    from kernel.records.store import RecordStore


def _settings(args: argparse.Namespace, **flags: object) -> Settings:
    overrides = {"data_dir": args.data_dir, **flags}
    return load_settings(getattr(args, "config", None), overrides)


def _turn_flags(args: argparse.Namespace) -> dict[str, object] | None:
    """`--turn`, `--turn-port`, `--turn-tls-port`, `--turn-host` as a nested `turn` override."""
    given = {
        "enabled": True if args.turn else None,
        "port": args.turn_port,
        "tls_port": args.turn_tls_port,
        "host": args.turn_host,
    }
    turn = {k: v for k, v in given.items() if v is not None}
    return turn or None


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the server until interrupted (or supervise `--workers N` worker processes)."""
    from rtc_server.turn import TurnServer, prepare_turn

    settings = prepare_data_dir(
        _settings(
            args,
            turn=_turn_flags(args),
            host=args.host,
            port=args.port,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            public_url=args.public_url,
            node_id=args.node_id,
            redis_url=args.redis_url,
            workers=args.workers,
            worker_index=args.worker_index,
            log_format=args.log_format,
        )
    )
    # a managed coturn: its secret and its entry in the ICE servers of browsers (and workers)
    settings = prepare_turn(settings)
    from rtc_server.logs import configure as configure_logs

    configure_logs(settings.log_level, settings.log_format)
    if settings.workers > 1 and settings.worker_index is None:
        return _supervise(args, settings)
    if settings.worker_index is not None:
        from rtc_server.workers import worker_settings

        settings = worker_settings(
            settings.model_copy(update={"worker_index": None}), settings.worker_index
        )
    from rtc_server.app import create_app
    from rtc_server.heap import settle_heap
    from rtc_server.shutdown_watch import watch_shutdown

    app = create_app(settings)

    async def _settle(_app: web.Application) -> None:
        # after every start-up hook: what exists now lives as long as the process
        settle_heap()

    app.on_startup.append(_settle)
    if settings.turn.enabled and settings.worker_index is None:
        # before the listening sockets open (cleanup contexts run first), stopped after them
        app.cleanup_ctx.insert(0, TurnServer(settings).ctx)
    # a stop that takes longer than the open-request grace plus a margin says what it waits on
    watch_shutdown(app, settings.shutdown_grace_s + 8.0)
    link_token = mint_token(
        signing_secret(settings),
        room=args.room,
        identity="host",
        name="Host",
        role=Role.HOST,
        ttl_s=settings.token_ttl_s,
    )

    def announce(_aiohttp_banner: str) -> None:
        # run_app calls this once every listening socket is open
        if settings.worker_index is not None:
            print(f"worker {settings.node_id} serving on {settings.base_url}", flush=True)
            return
        print(f"teleconsult {__version__} serving on {settings.base_url}", flush=True)
        print(f"data dir: {settings.data_dir.resolve()}", flush=True)
        print(f"host join link (room {args.room}): {settings.join_url(link_token)}", flush=True)

    web.run_app(
        app,
        host=settings.host,
        port=settings.port,
        ssl_context=tls_context(settings),
        print=announce,
        shutdown_timeout=settings.shutdown_grace_s,
        **_access_log(settings),
    )
    return 0


def _access_log(settings: Settings) -> dict[str, Any]:
    """run_app's access-log arguments: our logger (no query strings), or none."""
    if not settings.access_log:
        return {"access_log": None}
    from rtc_server.logs import ACCESS_LOGGER, AccessLogger

    return {"access_log": logging.getLogger(ACCESS_LOGGER), "access_log_class": AccessLogger}


def _supervise(args: argparse.Namespace, settings: Settings) -> int:
    """`serve --workers N`: start N worker processes and keep them running."""
    from rtc_server.turn import run_in_thread
    from rtc_server.workers import Supervisor, init_schema

    init_schema(settings)
    # one coturn for every worker, run by the supervisor
    stop_turn = run_in_thread(settings) if settings.turn.enabled else None
    supervisor = Supervisor(settings, args.argv)
    first = supervisor.workers[0].settings
    link_token = mint_token(
        signing_secret(settings),
        room=args.room,
        identity="host",
        name="Host",
        role=Role.HOST,
        ttl_s=settings.token_ttl_s,
    )

    def announce() -> None:
        urls = ", ".join(w.settings.base_url for w in supervisor.workers)
        print(f"teleconsult {__version__} serving on {first.base_url}", flush=True)
        print(f"workers: {settings.workers} ({urls})", flush=True)
        print(f"data dir: {settings.data_dir.resolve()}", flush=True)
        print(f"host join link (room {args.room}): {first.join_url(link_token)}", flush=True)

    try:
        return supervisor.run(announce)
    finally:
        if stop_turn is not None:
            stop_turn()


def cmd_token(args: argparse.Namespace) -> int:
    """Print a join token (the JWT, `--link` the join URL, `--json` both with jti and expiry)."""
    from rtc_server.token_cli import check_names, print_token

    check_names(args)
    settings = prepare_data_dir(_settings(args))
    token = mint_token(
        signing_secret(settings),
        room=args.room,
        identity=args.identity,
        role=args.role,
        name=args.name,
        ttl_s=args.ttl or settings.token_ttl_s,
        mrn=args.mrn,
        mrn_system=args.mrn_system,
    )
    return print_token(args, settings, signing_secret(settings), token)


def _public_key(args: argparse.Namespace, settings: Settings) -> Any:
    from cryptography.hazmat.primitives import serialization

    from kernel.records.audit import KEY_FILE, PUBLIC_KEY_FILE

    path = args.public_key or (settings.audit_key_file or settings.data_dir / KEY_FILE).with_name(
        PUBLIC_KEY_FILE
    )
    try:
        return serialization.load_pem_public_key(Path(path).read_bytes())
    except FileNotFoundError:
        raise ConfigError(
            f"no audit public key at {path} (has the server ever run here?)"
        ) from None


def cmd_audit(args: argparse.Namespace) -> int:
    """Verify the audit log (against a witness), print an inclusion proof, the newest signed
    tree heads (`head`, for a witness to keep) or the counts."""
    from kernel.records.audit import (
        check_inclusion,
        check_witness,
        newest_heads,
        prove_inclusion,
        verify_log,
    )
    from rtc_server.migrations import open_store

    settings = _settings(args)
    if not (settings.data_dir / "teleconsult.db").exists() and settings.database_url is None:
        raise ConfigError(f"no records database in {settings.data_dir}")
    public_key = _public_key(args, settings)

    async def run() -> int:
        store = open_store(settings.db_url)
        try:
            if args.action == "head":
                heads = await newest_heads(store, public_key)
                if not heads:
                    print("teleconsult: no signed tree head yet", file=sys.stderr)
                    return 2
                print(json.dumps(heads))
                return 0
            if args.action == "verify":
                report = await verify_log(store, public_key)
                if report.ok and args.witness is not None:
                    problem = await check_witness(store, public_key, _witnessed(args.witness))
                    if problem is not None:
                        print(f"audit log TAMPERED: {problem}", file=sys.stderr)
                        return 1
                if report.ok:
                    logs = f" in {len(report.logs)} logs" if len(report.logs) > 1 else ""
                    print(
                        f"audit log intact: {report.entries} entries, "
                        f"{report.heads} signed heads{logs}"
                    )
                    return 0
                print(f"audit log TAMPERED: {report.problem}", file=sys.stderr)
                return 1
            if args.action == "prove":
                doc = await prove_inclusion(store, args.seq, log_id=args.log)
                check_inclusion(doc, public_key)
                print(json.dumps(doc, indent=2))
                return 0
            report = await verify_log(store, public_key)
            print(
                json.dumps(
                    {
                        "entries": report.entries,
                        "heads": report.heads,
                        "ok": report.ok,
                        "logs": report.logs,
                    }
                )
            )
            return 0 if report.ok else 1
        except LookupError as exc:
            print(f"teleconsult: {exc}", file=sys.stderr)
            return 2
        finally:
            await store.engine.dispose()

    return asyncio.run(run())


def _witnessed(path: Path) -> list[dict[str, Any]]:
    """The tree heads a witness kept: the JSON `audit head` printed (a list, or one head),
    or a file of such lines (the newest copies appended over time)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read witness file {path}: {exc.strerror}") from exc
    heads: list[dict[str, Any]] = []
    try:
        for line in text.splitlines():
            if line.strip():
                doc = json.loads(line)
                heads.extend(doc if isinstance(doc, list) else [doc])
    except json.JSONDecodeError as exc:
        raise ConfigError(f"witness file {path} is not the JSON `audit head` printed") from exc
    if not heads or not all(isinstance(h, dict) for h in heads):
        raise ConfigError(f"witness file {path} holds no tree head")
    return heads


def cmd_revoke(args: argparse.Namespace) -> int:
    """Revoke a join token by its jti: new connections are refused at once, and a running
    server on the same records drops its live connections within `token_watch_interval_s`
    (rtc_server/token_watch.py), as POST /api/tokens/revoke does at once."""
    from rtc_server.migrations import open_store

    settings = prepare_data_dir(_settings(args))

    async def run() -> int:
        store = open_store(settings.db_url)
        await store.start()
        try:
            fresh = await store.revoke_token(args.jti, "cli", args.reason)
        finally:
            await store.close()
        print("revoked" if fresh else "already revoked")
        return 0

    return asyncio.run(run())


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    parser = argparse.ArgumentParser(prog="teleconsult", description=__doc__)
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the server")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8080)")
    serve.add_argument("--data-dir", type=Path, help="where records and secrets live")
    serve.add_argument("--config", type=Path, help="TOML settings file")
    serve.add_argument("--room", default="demo", help="room of the printed host join link")
    serve.add_argument("--tls-cert", type=Path, help="PEM certificate chain: serve HTTPS")
    serve.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")
    serve.add_argument("--public-url", help="URL clients use to reach this node")
    serve.add_argument("--node-id", help="this node's name in a cluster (unique per node)")
    serve.add_argument("--redis-url", help="Redis for placement and cross-node events")
    serve.add_argument("--workers", type=int, help="worker processes (one per core)")
    serve.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    serve.add_argument(
        "--turn",
        action="store_true",
        default=None,
        help="run coturn for clients whose network blocks UDP (TURN over UDP/TCP/TLS)",
    )
    serve.add_argument("--turn-port", type=int, help="TURN port, UDP and TCP (default 3478)")
    serve.add_argument("--turn-tls-port", type=int, help="TURN over TLS port (default 5349)")
    serve.add_argument("--turn-host", help="host name clients use for TURN (default: the server's)")
    serve.add_argument(
        "--log-format",
        choices=["text", "json"],
        help="log lines as text (default) or one JSON object per line",
    )
    serve.set_defaults(func=cmd_serve)

    from rtc_server.token_cli import add_output_flags, ttl

    token = sub.add_parser("token", help="print a join token or link")
    token.add_argument("--room", required=True, help="room (consult) name, e.g. consult-42")
    token.add_argument(
        "--identity", required=True, help="the participant's stable id in the room, e.g. pat-17"
    )
    token.add_argument(
        "--role",
        required=True,
        choices=[r.value for r in Role],
        help="role, which sets the default grants",
    )
    token.add_argument("--name", help="display name shown to others (any script, e.g. 李娜)")
    token.add_argument(
        "--ttl", type=ttl, help="lifetime in seconds, 60 to 2592000 (default: token_ttl_s, 4 h)"
    )
    token.add_argument("--mrn", help="the hospital's ID of the person (MRN, staff number)")
    token.add_argument("--mrn-system", help="its identifier system URI (urn:oid:...)")
    token.add_argument("--data-dir", type=Path, help="data dir holding the signing secret")
    token.add_argument("--config", type=Path, help="TOML settings file (public_url, ...)")
    add_output_flags(token)
    token.set_defaults(func=cmd_token)

    revoke = sub.add_parser("revoke", help="revoke a join token by its jti")
    revoke.add_argument("jti")
    revoke.add_argument("--reason")
    revoke.add_argument("--data-dir", type=Path)
    revoke.add_argument("--config", type=Path)
    revoke.set_defaults(func=cmd_revoke)

    audit = sub.add_parser("audit", help="check the tamper-evident audit log")
    audit_sub = audit.add_subparsers(dest="action", required=True)
    for name, helptext in (
        ("verify", "exit 0 if intact, 1 naming the first altered/removed/reordered entry"),
        ("prove", "print a verified inclusion proof of one entry"),
        ("status", "print entry and signed-head counts as JSON"),
        ("head", "print the newest signed tree head of each log as JSON (keep it elsewhere)"),
    ):
        p = audit_sub.add_parser(name, help=helptext)
        if name == "verify":
            p.add_argument(
                "--witness",
                type=Path,
                help="tree heads kept from `audit head`: the log must still extend them",
            )
        if name == "prove":
            p.add_argument("seq", type=int, help="entry sequence number (from 0)")
            p.add_argument("--log", help="node id of the log (when there are several)")
        p.add_argument("--data-dir", type=Path)
        p.add_argument("--config", type=Path)
        p.add_argument("--public-key", type=Path, help="PEM kept apart from the data dir")
        p.set_defaults(func=cmd_audit)
    from rtc_server.admin_cli import add_parsers as add_admin_commands

    add_admin_commands(sub)
    from rehab_vision.cli import add_parser as add_score_video

    add_score_video(sub)
    from clinic.cli import add_parser as add_device

    add_device(sub, _open_records)
    return parser


def _open_records(config: Path | None, data_dir: Path | None) -> RecordStore:
    """The records store of the settings from ``config`` and ``data_dir`` (feature commands)."""
    from rtc_server.migrations import open_store

    settings = prepare_data_dir(load_settings(config, {"data_dir": data_dir}))
    return open_store(settings.db_url)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `teleconsult` console script."""
    args = build_parser().parse_args(argv)
    # `serve --workers N` re-runs the same arguments in each worker process
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"teleconsult: {exc}", file=sys.stderr)
        return 2
    except TurnError as exc:
        print(f"teleconsult: TURN: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"teleconsult: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
