"""Settings of one hub node: a flag beats an environment variable beats the default.

Every setting is validated once, at start; a bad one raises :class:`SettingsError` with a one-line
message naming it. Handlers never read the environment: they get a :class:`Settings`.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from hub.errors import SettingsError

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Limits:
    """Input limits of SPEC §6; each one is a setting."""

    session_info_bytes: int = 16 * 1024
    metadata_keys: int = 64
    metadata_key_chars: int = 64
    metadata_value_bytes: int = 1024
    event_bytes: int = 1024 * 1024
    session_data_bytes: int = 4 * 1024 * 1024
    events_per_second: float = 100.0
    event_burst: int = 200
    request_body_bytes: int = 1024 * 1024


@dataclass(frozen=True)
class Settings:
    """Everything a node needs to know about its environment, validated."""

    host: str = "127.0.0.1"
    port: int = 8080
    redis_url: str | None = None
    database_url: str = "sqlite:///./livehub.db"
    socket_path: str = "/ws-assist/socket"
    session_grace: float = 30.0
    ping_interval: float = 25.0
    ping_timeout: float = 20.0
    geoip_db: str | None = None
    trusted_proxies: tuple[IPNetwork, ...] = ()
    jwt_secret: str | None = None
    log_level: str = "info"
    log_format: str = "text"
    socket_serializer: str = "json"
    cors_origins: tuple[str, ...] = ()
    node_id: str = field(default_factory=lambda: secrets.token_hex(6))
    node_timeout: float = 15.0
    listen_backlog: int = 1024
    ws_compression: bool = False
    search_timeout: float = 1.0
    limits: Limits = field(default_factory=Limits)

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, flags: Mapping[str, Any] | None = None
    ) -> Settings:
        """Build settings from the environment and command-line flags (flags win)."""
        env = os.environ if env is None else env
        flags = flags or {}
        values: dict[str, Any] = {}
        limit_values: dict[str, Any] = {}
        for spec in SETTINGS:
            raw: Any = flags.get(spec.attr)
            if raw is None:
                raw = env.get(spec.env)
            if raw is None or raw == "":
                continue
            try:
                value = spec.parse(raw)
            except (ValueError, TypeError) as e:
                raise SettingsError(f"{spec.env}: {e}") from e
            if spec.attr.startswith("limits."):
                limit_values[spec.attr.removeprefix("limits.")] = value
            else:
                values[spec.attr] = value
        settings = cls(**values, limits=Limits(**limit_values))
        settings.validate()
        return settings

    def validate(self) -> None:
        """Check cross-field rules; raise SettingsError naming the setting."""
        if not self.socket_path.startswith("/"):
            raise SettingsError("HUB_SOCKET_PATH: must start with /")
        if self.ping_timeout <= 0 or self.ping_interval <= 0:
            raise SettingsError("HUB_PING_INTERVAL / HUB_PING_TIMEOUT: must be positive")
        if self.geoip_db is not None and not os.path.isfile(self.geoip_db):
            raise SettingsError(f"HUB_GEOIP_DB: no such file: {self.geoip_db}")
        scheme = self.database_url.split(":", 1)[0]
        if scheme not in ("sqlite", "postgresql", "postgres"):
            raise SettingsError("HUB_DATABASE_URL: must be sqlite:///PATH or postgresql://…")
        if self.redis_url is not None and not self.redis_url.startswith(
            ("redis://", "rediss://", "unix://")
        ):
            raise SettingsError("HUB_REDIS_URL: must be redis://, rediss:// or unix://")


@dataclass(frozen=True)
class SettingSpec:
    """One setting: its environment name, its attribute and how its text is parsed."""

    env: str
    attr: str
    parse: Callable[[Any], Any]
    flag: str | None = None
    help: str = ""


def _int(low: int, high: int | None = None) -> Callable[[Any], int]:
    def parse(raw: Any) -> int:
        try:
            value = int(raw)
        except (ValueError, TypeError):
            raise ValueError(f"must be an integer, got {raw!r}") from None
        if value < low or (high is not None and value > high):
            bound = f"{low}-{high}" if high is not None else f"≥ {low}"
            raise ValueError(f"must be {bound}, got {value}")
        return value

    return parse


def _float(
    low: float, high: float | None = None, *, strict_low: bool = False
) -> Callable[[Any], float]:
    def parse(raw: Any) -> float:
        try:
            value = float(raw)
        except (ValueError, TypeError):
            raise ValueError(f"must be a number, got {raw!r}") from None
        if value != value or value < low or (strict_low and value == low):
            raise ValueError(f"must be {'>' if strict_low else '≥'} {low}, got {raw!r}")
        if high is not None and value > high:
            raise ValueError(f"must be ≤ {high}, got {raw!r}")
        return value

    return parse


def _choice(*options: str) -> Callable[[Any], str]:
    def parse(raw: Any) -> str:
        value = str(raw).strip().lower()
        if value not in options:
            raise ValueError(f"must be one of {', '.join(options)}, got {raw!r}")
        return value

    return parse


def _text(raw: Any) -> str:
    value = str(raw).strip()
    if not value:
        raise ValueError("must not be empty")
    return value


def _bool(raw: Any) -> bool:
    value = str(raw).strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"must be true or false, got {raw!r}")


def _networks(raw: Any) -> tuple[IPNetwork, ...]:
    nets = []
    for part in str(raw).split(","):
        part = part.strip()
        if part:
            try:
                nets.append(ipaddress.ip_network(part, strict=False))
            except ValueError:
                raise ValueError(f"not a CIDR: {part!r}") from None
    return tuple(nets)


def _origins(raw: Any) -> tuple[str, ...]:
    return tuple(o.strip() for o in str(raw).split(",") if o.strip())


def _secret(raw: Any) -> str:
    value = str(raw)
    if len(value) < 32:
        raise ValueError("must be at least 32 characters")
    return value


SETTINGS: tuple[SettingSpec, ...] = (
    SettingSpec("HUB_HOST", "host", _text, "--host", "listen address"),
    SettingSpec("HUB_PORT", "port", _int(0, 65535), "--port", "listen port"),
    SettingSpec("HUB_REDIS_URL", "redis_url", _text, "--redis-url", "Redis for presence"),
    SettingSpec("HUB_DATABASE_URL", "database_url", _text, "--database-url", "the store"),
    SettingSpec("HUB_SOCKET_PATH", "socket_path", _text, "--socket-path", "Socket.IO path"),
    SettingSpec(
        "HUB_SESSION_GRACE",
        "session_grace",
        _float(0),
        "--session-grace",
        "seconds a session with no connected tab stays live",
    ),
    SettingSpec("HUB_PING_INTERVAL", "ping_interval", _float(0, strict_low=True)),
    SettingSpec("HUB_PING_TIMEOUT", "ping_timeout", _float(0, strict_low=True)),
    SettingSpec("HUB_GEOIP_DB", "geoip_db", _text),
    SettingSpec("HUB_TRUSTED_PROXIES", "trusted_proxies", _networks),
    SettingSpec("HUB_JWT_SECRET", "jwt_secret", _secret),
    SettingSpec("HUB_LOG_LEVEL", "log_level", _choice("debug", "info", "warning", "error")),
    SettingSpec("HUB_LOG_FORMAT", "log_format", _choice("text", "json")),
    SettingSpec("HUB_SOCKET_SERIALIZER", "socket_serializer", _choice("json", "msgpack")),
    SettingSpec("HUB_CORS_ORIGINS", "cors_origins", _origins),
    SettingSpec("HUB_NODE_ID", "node_id", _text),
    SettingSpec("HUB_NODE_TIMEOUT", "node_timeout", _float(1)),
    SettingSpec("HUB_LISTEN_BACKLOG", "listen_backlog", _int(1)),
    SettingSpec("HUB_WS_COMPRESSION", "ws_compression", _bool),
    SettingSpec("HUB_SEARCH_TIMEOUT", "search_timeout", _float(0, strict_low=True)),
    SettingSpec("HUB_MAX_SESSION_INFO", "limits.session_info_bytes", _int(1)),
    SettingSpec("HUB_MAX_METADATA_KEYS", "limits.metadata_keys", _int(0)),
    SettingSpec("HUB_MAX_METADATA_KEY_LENGTH", "limits.metadata_key_chars", _int(1)),
    SettingSpec("HUB_MAX_METADATA_VALUE", "limits.metadata_value_bytes", _int(1)),
    SettingSpec("HUB_MAX_EVENT_SIZE", "limits.event_bytes", _int(1)),
    SettingSpec("HUB_MAX_SESSION_DATA", "limits.session_data_bytes", _int(1)),
    SettingSpec("HUB_EVENT_RATE", "limits.events_per_second", _float(0, strict_low=True)),
    SettingSpec("HUB_EVENT_BURST", "limits.event_burst", _int(1)),
    SettingSpec("HUB_MAX_REQUEST_BODY", "limits.request_body_bytes", _int(1)),
)

assert {s.attr for s in SETTINGS if not s.attr.startswith("limits.")} <= {
    f.name for f in fields(Settings)
}
