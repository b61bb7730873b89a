"""One typed Settings object: defaults < config file (TOML) < environment < command-line flags.

The environment is read by pydantic-settings (every field, nested tables and lists included).

Validated once at start; every bad field is reported by name with the reason.
"""

from __future__ import annotations

import logging
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
from pydantic_settings import EnvSettingsSource, SettingsError

from annotation.settings import PacsSettings, UploadSettings
from clinic.settings import MqttSettings
from media.settings import MediaSettings
from rehab_vision.settings import RehabSettings

ENV_PREFIX = "TELECONSULT_"
log = logging.getLogger(__name__)


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
    # Engine.IO heartbeat: a peer that answers no ping for interval + timeout is gone
    ping_interval_s: float = Field(25.0, ge=0.2, le=300)
    ping_timeout_s: float = Field(20.0, ge=0.2, le=300)


class TurnSettings(BaseModel):
    """A coturn (``turnserver``) run by ``teleconsult serve`` for clients whose UDP is blocked.

    See docs/operations.md, "Restrictive networks / TURN".
    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    binary: str = "turnserver"
    # name or address clients put in their TURN URLs (default: public_url's host, else host)
    host: str | None = None
    # addresses coturn listens on (empty: every interface)
    listen_addresses: list[str] = Field(default_factory=list)
    port: int = Field(3478, ge=1, le=65535)  # TURN over UDP and TCP
    tls_port: int = Field(5349, ge=1, le=65535)  # TURN over TLS (only with a certificate)
    # PEM files for TURN over TLS (default: the server's tls_cert / tls_key)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    udp: bool = True  # also offer turn:...?transport=udp (UDP to one port may pass a firewall)
    relay_port_min: int = Field(49152, ge=1024, le=65535)
    relay_port_max: int = Field(49407, ge=1024, le=65535)
    relay_address: str | None = None  # coturn relay-ip
    external_address: str | None = None  # coturn external-ip (behind 1:1 NAT)
    realm: str = Field("teleconsult", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
    # where coturn may relay to (default: the SFU's addresses); everything else is refused
    peer_addresses: list[str] | None = None
    # the SFU's own peer connections also gather a relay candidate on it (rarely needed)
    server_relay: bool = False
    health_interval_s: float = Field(5.0, ge=0.5, le=300)

    @field_validator("listen_addresses", "peer_addresses", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @model_validator(mode="after")
    def _check(self) -> TurnSettings:
        if self.relay_port_min > self.relay_port_max:
            raise ValueError("relay_port_min > relay_port_max")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("turn tls_cert and tls_key go together: give both or neither")
        if self.port == self.tls_port:
            raise ValueError("turn port and tls_port must differ")
        return self


class WebhookSettings(BaseModel):
    """Webhooks to the hospital's own systems (rtc_server/webhooks.py)."""

    model_config = ConfigDict(extra="forbid")

    urls: list[str] = Field(default_factory=list)
    timeout_s: float = Field(5.0, gt=0, le=60)
    # retries back off from retry_min_s, doubling to retry_max_s; given up after max_age_s
    retry_min_s: float = Field(1.0, gt=0, le=3600)
    retry_max_s: float = Field(300.0, gt=0, le=86400)
    max_age_s: float = Field(24 * 3600.0, gt=0, le=30 * 86400)

    @field_validator("urls", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str) and not value.lstrip().startswith("["):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @field_validator("urls")
    @classmethod
    def _http(cls, value: list[str]) -> list[str]:
        for url in value:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"{url!r} must start with http:// or https://")
        return value


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
    # how often open connections' tokens are checked: revocations written by `teleconsult
    # revoke` (another process) and expiry (rtc_server/token_watch.py)
    token_watch_interval_s: float = Field(2.0, gt=0, le=300)
    record_retention_years: float = Field(15.0, ge=1, le=200)
    retention_check_interval_h: float = Field(24.0, gt=0)
    limits: Limits = Field(default_factory=Limits)
    # --- /metrics (docs/operations.md, "Security"): a bearer token scrapers send, and/or a
    # listener of its own (then the main port has no /metrics); without either, only direct
    # loopback requests (no proxy headers) are answered. Per-participant media series carry
    # room names and identities: off unless asked for.
    metrics_token: SecretStr | None = None
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = Field(None, ge=0, le=65535)
    metrics_participant_labels: bool = False
    # --- scale-out (see docs/operations.md, "Scale-out"): this node's name (its audit log id;
    # unique per node), Redis for placement and cross-node events, worker processes per machine
    node_id: str = Field("main", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    redis_url: str | None = None
    workers: int = Field(1, ge=1, le=64)
    worker_index: int | None = Field(None, ge=0, le=63)
    node_heartbeat_s: float = Field(1.0, gt=0, le=60)
    node_ttl_s: float = Field(5.0, gt=0, le=600)
    # public URL of each local worker behind one proxy port, e.g. "https://w{index}.consult.org"
    # (the proxy routes on the host name: deploy/nginx); unset: the public URL with port + index
    worker_url_template: str | None = None
    # --- media (SFU): UDP port range, announced address, STUN/TURN (docs/operations.md, Media)
    media: MediaSettings = Field(default_factory=MediaSettings)
    # --- DICOM C-STORE destination for document exports (docs/annotation.md, "Exports")
    pacs: PacsSettings | None = None
    # --- TURN for restrictive networks: a managed coturn (docs/operations.md)
    turn: TurnSettings = Field(default_factory=TurnSettings)
    # --- integration (docs/operations.md, "Integration"): webhooks, signed with webhook_key
    # (generated into <data_dir>/webhook.key), and the portals that may frame the join page
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)
    webhook_key: SecretStr | None = None
    frame_ancestors: list[str] = Field(default_factory=list)
    # --- feature limits that were constants: rehab sessions and guide timers, uploads
    rehab: RehabSettings = Field(default_factory=RehabSettings)
    uploads: UploadSettings = Field(default_factory=UploadSettings)
    # --- logs: `json` writes one JSON object per line; the access log has no query strings
    log_format: Literal["text", "json"] = "text"
    access_log: bool = True
    # --- device readings over MQTT (clinic/mqtt.py, docs/clinic.md)
    mqtt: MqttSettings | None = None

    @field_validator("public_url")
    @classmethod
    def _url_has_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/") if value else value

    @field_validator("cors_origins", "trusted_proxies", "frame_ancestors", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @field_validator("worker_url_template")
    @classmethod
    def _template_has_index(cls, value: str | None) -> str | None:
        if value is not None and (
            not value.startswith(("http://", "https://")) or "{index}" not in value
        ):
            raise ValueError("must start with http:// or https:// and contain {index}")
        if value is not None:
            try:
                value.format(index=0)
            except (KeyError, IndexError, ValueError):
                raise ValueError("may hold no braces but {index}") from None
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

    @field_validator("frame_ancestors")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if not origin.startswith(("http://", "https://")) or any(c in origin for c in " ;,'\""):
                raise ValueError(f"{origin!r} must be an origin such as https://portal.example")
        return [o.rstrip("/") for o in value]

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
        """The public URL of local worker `index` (`--workers N`): `worker_url_template` with
        the index filled in, else the base URL with port + index."""
        from urllib.parse import urlsplit, urlunsplit

        if self.worker_url_template:
            return self.worker_url_template.format(index=index).rstrip("/")

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


class _EnvSource(EnvSettingsSource):
    """pydantic-settings' environment source on an explicit mapping: TELECONSULT_PORT=9000,
    nested tables with `__` (TELECONSULT_LIMITS__RATE_PER_S=10), lists and tables as JSON
    (TELECONSULT_MEDIA__BIND_ADDRESSES='["10.0.0.1"]'); a list that is not JSON stays a string
    for the field's own parsing (comma lists)."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(
            Settings,  # type: ignore[arg-type]  (a BaseModel: only its fields are read)
            case_sensitive=False,
            env_prefix=ENV_PREFIX,
            env_nested_delimiter="__",
        )

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {k.lower(): v for k, v in self._environ.items()}

    def decode_complex_value(self, field_name: str, field: Any, value: Any) -> Any:
        try:
            return super().decode_complex_value(field_name, field, value)
        except ValueError:
            return value


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """The settings given in the environment. Variables with the prefix that name no setting
    (TELECONSULT_CONFIG aside) are ignored with a warning, not an error: other tools share
    the prefix. A misspelt field inside a table (TELECONSULT_LIMITS__RATE=1) is still refused."""
    unknown = sorted(
        key
        for key in environ
        if key.upper().startswith(ENV_PREFIX)
        and key[len(ENV_PREFIX) :].lower().split("__")[0] not in Settings.model_fields
        and key.upper() != f"{ENV_PREFIX}CONFIG"
    )
    if unknown:
        log.warning("ignoring environment variables that name no setting: %s", ", ".join(unknown))
    try:
        return dict(_EnvSource(environ)())
    except SettingsError as exc:
        raise ConfigError(f"invalid settings (environment): {exc}") from exc


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
    if settings.webhook_key is None:
        updates["webhook_key"] = SecretStr(_read_or_create_secret(data_dir / "webhook.key", 32))
    return settings.model_copy(update=updates)


def signing_secret(settings: Settings) -> str:
    """The token signing secret (prepare_data_dir must have run)."""
    if settings.secret_key is None:
        raise ConfigError("no signing secret: call prepare_data_dir first")
    return settings.secret_key.get_secret_value()
