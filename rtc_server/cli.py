"""The `teleconsult` command: serve, token (and the sub-commands feature packages add)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Any

from aiohttp import web

from rtc_server import __version__
from rtc_server.config import ConfigError, Settings, load_settings, prepare_data_dir, signing_secret
from rtc_server.security import tls_context
from signaling.grants import Role
from signaling.tokens import mint_token


def _settings(args: argparse.Namespace, **flags: object) -> Settings:
    overrides = {"data_dir": args.data_dir, **flags}
    return load_settings(getattr(args, "config", None), overrides)


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the server until interrupted (or supervise `--workers N` worker processes)."""
    settings = prepare_data_dir(
        _settings(
            args,
            host=args.host,
            port=args.port,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            public_url=args.public_url,
            node_id=args.node_id,
            redis_url=args.redis_url,
            workers=args.workers,
            worker_index=args.worker_index,
        )
    )
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if settings.workers > 1 and settings.worker_index is None:
        return _supervise(args, settings)
    if settings.worker_index is not None:
        from rtc_server.routing import worker_settings

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
        access_log=None,
    )
    return 0


def _supervise(args: argparse.Namespace, settings: Settings) -> int:
    """`serve --workers N`: start N worker processes and keep them running."""
    from rtc_server.workers import Supervisor, init_schema

    init_schema(settings)
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

    return supervisor.run(announce)


def cmd_token(args: argparse.Namespace) -> int:
    """Print a join token (only the JWT) for a room, identity and role."""
    settings = prepare_data_dir(_settings(args))
    token = mint_token(
        signing_secret(settings),
        room=args.room,
        identity=args.identity,
        role=args.role,
        name=args.name,
        ttl_s=args.ttl or settings.token_ttl_s,
    )
    print(token)
    return 0


def _public_key(args: argparse.Namespace, settings: Settings) -> Any:
    from cryptography.hazmat.primitives import serialization

    from rtc_server.records.audit import KEY_FILE, PUBLIC_KEY_FILE

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
    """Verify the audit log, print an inclusion proof, or print the newest signed tree head."""
    from rtc_server.records.audit import check_inclusion, prove_inclusion, verify_log
    from rtc_server.records.store import RecordStore

    settings = _settings(args)
    if not (settings.data_dir / "teleconsult.db").exists() and settings.database_url is None:
        raise ConfigError(f"no records database in {settings.data_dir}")
    public_key = _public_key(args, settings)

    async def run() -> int:
        store = RecordStore(settings.db_url)
        try:
            if args.action == "verify":
                report = await verify_log(store, public_key)
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


def cmd_revoke(args: argparse.Namespace) -> int:
    """Revoke a join token by its jti (a running server also drops its live connections
    when revoked through POST /api/tokens/revoke; this command affects new connections)."""
    from rtc_server.records.store import RecordStore

    settings = prepare_data_dir(_settings(args))

    async def run() -> int:
        store = RecordStore(settings.db_url)
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
    serve.set_defaults(func=cmd_serve)

    token = sub.add_parser("token", help="print a join token")
    token.add_argument("--room", required=True)
    token.add_argument("--identity", required=True)
    token.add_argument("--role", required=True, choices=[r.value for r in Role])
    token.add_argument("--name")
    token.add_argument("--ttl", type=int, help="lifetime in seconds")
    token.add_argument("--data-dir", type=Path)
    token.add_argument("--config", type=Path)
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
    ):
        p = audit_sub.add_parser(name, help=helptext)
        if name == "prove":
            p.add_argument("seq", type=int, help="entry sequence number (from 0)")
            p.add_argument("--log", help="node id of the log (when there are several)")
        p.add_argument("--data-dir", type=Path)
        p.add_argument("--config", type=Path)
        p.add_argument("--public-key", type=Path, help="PEM kept apart from the data dir")
        p.set_defaults(func=cmd_audit)
    from rehab_vision.cli import add_parser as add_score_video

    add_score_video(sub)
    return parser


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
    except ValueError as exc:
        print(f"teleconsult: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
