"""One typed Settings object: defaults < config file (TOML) < environment < command-line flags.

Validated once at start; every bad field is reported by name with the reason.
"""

from __future__ import annotations

import os
import secrets
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from rtc_server.media.settings import MediaSettings

ENV_PREFIX = "TELECONSULT_"


class ConfigError(Exception):
    """Settings could not be loaded; the message lists each bad field."""


class Limits(BaseModel):
    """Bounds that protect the server from clients, hostile or buggy."""

    model_config = ConfigDict(extra="forbid")

    max_message_bytes: int = Field(65536, ge=1024, le=16 * 1024 * 1024)
    rate_per_s: float = Field(20.0, gt=0)
    rate_burst: float = Field(60.0, ge=1)
    max_participants_per_room: int = Field(50, ge=2, le=10000)
    max_rooms: int = Field(500, ge=1)
    max_connections_per_ip: int = Field(1000, ge=1)
    chat_max_chars: int = Field(4000, ge=1, le=100000)
    chat_history_on_join: int = Field(200, ge=0, le=5000)


class Settings(BaseModel):
    """Everything the server process needs to start."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    data_dir: Path = Path("data")
    public_url: str | None = None
    secret_key: SecretStr | None = None
    admin_api_key: SecretStr | None = None
    database_url: str | None = None
    token_ttl_s: int = Field(4 * 3600, ge=60, le=30 * 24 * 3600)
    lobby_policy: Literal["clinicians_direct", "everyone_waits"] = "clinicians_direct"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    shutdown_grace_s: float = Field(2.0, ge=0, le=60)
    audit_key_file: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    cors_origins: list[str] = Field(default_factory=list)
    # reverse proxies whose X-Forwarded-For is believed (per-address limits, audit)
    trusted_proxies: list[str] = Field(default_factory=list)
    audit_head_interval_s: float = Field(5.0, gt=0, le=3600)
    record_retention_years: float = Field(15.0, ge=1, le=200)
    retention_check_interval_h: float = Field(24.0, gt=0)
    limits: Limits = Field(default_factory=Limits)
    # --- scale-out (see docs/operations.md, "Scale-out"): this node's name (its audit log id;
    # unique per node), Redis for placement and cross-node events, worker processes per machine
    node_id: str = Field("main", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    redis_url: str | None = None
    workers: int = Field(1, ge=1, le=64)
    worker_index: int | None = Field(None, ge=0, le=63)
    node_heartbeat_s: float = Field(1.0, gt=0, le=60)
    node_ttl_s: float = Field(5.0, gt=0, le=600)
    # --- media (SFU): UDP port range, announced address, STUN/TURN (docs/operations.md, Media)
    media: MediaSettings = Field(default_factory=MediaSettings)

    @field_validator("public_url")
    @classmethod
    def _url_has_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/") if value else value

    @field_validator("cors_origins", "trusted_proxies", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    @model_validator(mode="after")
    def _cluster_timing(self) -> Settings:
        if self.node_ttl_s <= 2 * self.node_heartbeat_s:
            raise ValueError("node_ttl_s must be more than twice node_heartbeat_s")
        if self.worker_index is not None and self.worker_index >= self.workers:
            raise ValueError("worker_index must be below workers")
        return self

    @model_validator(mode="after")
    def _tls_pair(self) -> Settings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: give both or neither")
        for path in (self.tls_cert, self.tls_key):
            if path is not None and not path.is_file():
                raise ValueError(f"TLS file {path} does not exist")
        return self

    @property
    def base_url(self) -> str:
        """The URL participants use to reach this server."""
        if self.public_url:
            return self.public_url
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        scheme = "https" if self.tls_cert else "http"
        return f"{scheme}://{host}:{self.port}"

    def worker_base_url(self, index: int) -> str:
        """The public URL of local worker `index` (`--workers N`): the base URL, port + index."""
        from urllib.parse import urlsplit, urlunsplit

        parts = urlsplit(self.base_url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        base_index = self.worker_index or 0
        host = parts.hostname or "127.0.0.1"
        host = f"[{host}]" if ":" in host else host
        return urlunsplit(parts._replace(netloc=f"{host}:{port - base_index + index}"))

    @property
    def db_url(self) -> str:
        """The SQLAlchemy URL of the records database (SQLite in the data dir by default)."""
        return self.database_url or f"sqlite+aiosqlite:///{self.data_dir / 'teleconsult.db'}"

    def join_url(self, token: str) -> str:
        """The link a participant opens to join with `token`."""
        return f"{self.base_url}/join?token={token}"


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """TELECONSULT_PORT=9000 -> {"port": "9000"}; TELECONSULT_LIMITS__RATE_PER_S -> nested."""
    out: dict[str, Any] = {}
    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX):
            continue
        path = key[len(ENV_PREFIX) :].lower().split("__")
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return out


def _merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _describe(exc: ValidationError, sources: str) -> str:
    lines = [f"invalid settings ({sources}):"]
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "(root)"
        lines.append(f"  {field}: {err['msg']}")
    return "\n".join(lines)


def load_settings(
    config_file: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Build Settings from file, environment and flags (later wins); raise ConfigError."""
    data: dict[str, Any] = {}
    env = os.environ if environ is None else environ
    config_file = config_file or (
        Path(env[f"{ENV_PREFIX}CONFIG"]) if f"{ENV_PREFIX}CONFIG" in env else None
    )
    if config_file is not None:
        try:
            data = tomllib.loads(Path(config_file).read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read config file {config_file}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {config_file} is not valid TOML: {exc}") from exc
    env_data = _env_overrides(env)
    env_data.pop("config", None)
    data = _merge(data, env_data)
    data = _merge(data, {k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, "file < environment < flags")) from exc


def _read_or_create_secret(path: Path, nbytes: int) -> str:
    """Read a secret file, or create it with mode 0600 (never logged)."""
    try:
        value = path.read_text().strip()
        if value:
            return value
    except FileNotFoundError:
        pass
    value = secrets.token_urlsafe(nbytes)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    return value


def prepare_data_dir(settings: Settings) -> Settings:
    """Create the data dir (mode 0700) and fill in generated secrets kept in it."""
    data_dir = settings.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)
    updates: dict[str, Any] = {}
    if settings.secret_key is None:
        updates["secret_key"] = SecretStr(_read_or_create_secret(data_dir / "secret.key", 48))
    if settings.admin_api_key is None:
        updates["admin_api_key"] = SecretStr(_read_or_create_secret(data_dir / "admin_api.key", 32))
    return settings.model_copy(update=updates)


def signing_secret(settings: Settings) -> str:
    """The token signing secret (prepare_data_dir must have run)."""
    if settings.secret_key is None:
        raise ConfigError("no signing secret: call prepare_data_dir first")
    return settings.secret_key.get_secret_value()
