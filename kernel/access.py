"""The site's credentials and links: the composition root builds one ``Access`` from the
settings (``app[ACCESS]``); kernel routes and features use it instead of the settings."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from aiohttp import web


@dataclass(frozen=True, slots=True)
class Access:
    """The token signing secret, the admin API key and the public links of this server."""

    secret: str
    admin_api_key: str
    base_url: str  # what participants use to reach this server
    public_url: str | None  # the configured one, if any
    token_ttl_s: int
    lobby_policy: str

    def is_admin(self, bearer: str) -> bool:
        """Whether ``bearer`` is the admin API key."""
        expected = self.admin_api_key
        return bool(expected) and hmac.compare_digest(bearer.encode(), expected.encode())

    def join_url(self, token: str) -> str:
        """The link a participant opens to join with ``token``."""
        return f"{self.base_url}/join?token={token}"


def bearer_of(request: web.Request) -> str:
    """The bearer token of a request's Authorization header, or ""."""
    header = request.headers.get("Authorization", "")
    return header[7:] if header.startswith("Bearer ") else ""
