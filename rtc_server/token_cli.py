"""`teleconsult token` flags and output: the join link (`--link`), a JSON document (`--json`),
`--ttl` with the API's bounds, and one plain sentence for a bad room or identity."""

from __future__ import annotations

import argparse
import json
import re

from kernel.tokens import NAME_PATTERN, verify_token
from rtc_server.config import Settings

# the same bounds as POST /api/tokens (rtc_server/http_api.py, TokenRequest.ttl_s)
TTL_MIN_S = 60
TTL_MAX_S = 30 * 24 * 3600
NAME_RULE = "1-128 letters, digits and _ . @ : - , starting with a letter or digit"


def ttl(value: str) -> int:
    """argparse type of --ttl: whole seconds within the API's bounds."""
    try:
        seconds = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number of seconds") from None
    if not TTL_MIN_S <= seconds <= TTL_MAX_S:
        raise argparse.ArgumentTypeError(
            f"{seconds} s is outside {TTL_MIN_S}-{TTL_MAX_S} s (1 minute to 30 days)"
        )
    return seconds


def check_names(args: argparse.Namespace) -> None:
    """Raise ValueError with one plain sentence when the room or identity is not allowed."""
    for what, value in (("room name", args.room), ("identity", args.identity)):
        if not re.fullmatch(NAME_PATTERN.strip("^$"), value):
            raise ValueError(f"the {what} {value!r} is not allowed: use {NAME_RULE}.")
    if args.name is not None and not 1 <= len(args.name) <= 128:
        raise ValueError("the display name must be 1-128 characters.")


def add_output_flags(parser: argparse.ArgumentParser) -> None:
    """--link and --json (one of them; the bare token by default)."""
    out = parser.add_mutually_exclusive_group()
    out.add_argument(
        "--link",
        action="store_true",
        help="print the join URL (public_url/join?token=...) instead of the token",
    )
    out.add_argument(
        "--json",
        action="store_true",
        help="print JSON: token, jti (for `teleconsult revoke`), expires_at, url",
    )


def print_token(args: argparse.Namespace, settings: Settings, secret: str, token: str) -> int:
    """Print what the flags ask for."""
    if getattr(args, "json", False):
        claims = verify_token(secret, token)
        print(
            json.dumps(
                {
                    "token": token,
                    "jti": claims.jti,
                    "expires_at": claims.exp,
                    "url": settings.join_url(token),
                    "room": claims.room,
                    "identity": claims.identity,
                    "role": claims.role.value,
                }
            )
        )
    elif getattr(args, "link", False):
        print(settings.join_url(token))
    else:
        print(token)
    return 0
