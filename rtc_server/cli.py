"""The `teleconsult` command: serve, token (and the sub-commands feature packages add)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from aiohttp import web

from rtc_server import __version__
from rtc_server.config import ConfigError, Settings, load_settings, prepare_data_dir, signing_secret
from signaling.grants import Role
from signaling.tokens import mint_token


def _settings(args: argparse.Namespace, **flags: object) -> Settings:
    overrides = {"data_dir": args.data_dir, **flags}
    return load_settings(getattr(args, "config", None), overrides)


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the server until interrupted."""
    settings = prepare_data_dir(_settings(args, host=args.host, port=args.port))
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from rtc_server.app import create_app

    app = create_app(settings)
    link_token = mint_token(
        signing_secret(settings),
        room=args.room,
        identity="host",
        name="Host",
        role=Role.HOST,
        ttl_s=settings.token_ttl_s,
    )

    async def announce(_app: web.Application) -> None:
        print(f"teleconsult {__version__} serving on {settings.base_url}", flush=True)
        print(f"data dir: {settings.data_dir.resolve()}", flush=True)
        print(f"host join link (room {args.room}): {settings.join_url(link_token)}", flush=True)

    app.on_startup.append(announce)
    web.run_app(
        app,
        host=settings.host,
        port=settings.port,
        print=None,
        shutdown_timeout=settings.shutdown_grace_s,
        access_log=None,
    )
    return 0


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
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `teleconsult` console script."""
    args = build_parser().parse_args(argv)
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
