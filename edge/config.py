"""Node configuration: one TOML file, every key overridable by ``KIOSK_EDGE_<SECTION>__<KEY>``.

Validation is strict on purpose: an operator's typo must stop start-up with one line that names the key
and the problem (``ConfigError``), not surface hours later as a node that silently ignores a setting.
"""

from __future__ import annotations

import os
import ssl
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cloud_sync.envelope import IDENT_RE
from edge.errors import ConfigError

ENV_PREFIX = "KIOSK_EDGE_"
DEFAULT_CONFIG = Path("/etc/kiosk-edge/edge.toml")


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/kiosk-edge`` for a developer; provisioning sets /var/lib/kiosk-edge on a Pi."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "kiosk-edge"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NodeSection(_Section):
    """Who this node is; both ids appear in MQTT topics and every envelope."""

    store: str = "store-1"
    id: str = "node-1"

    @field_validator("store", "id")
    @classmethod
    def _ident(cls, value: str) -> str:
        if not IDENT_RE.fullmatch(value):
            raise ValueError("must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
        return value


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """The parts of an ``mqtt://`` / ``mqtts://`` URL the relay needs."""

    tls: bool
    host: str
    port: int
    username: str | None
    password: str | None

    def display(self) -> str:
        """The URL without its password, safe for logs and status output."""
        user = f"{self.username}@" if self.username else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{self.host}:{self.port}"


def parse_broker_url(url: str) -> BrokerAddress:
    """Parse and check a broker URL; ValueError says what is wrong with it."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"malformed URL ({exc})") from exc
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ValueError("must start with mqtt:// or mqtts://")
    if not parts.hostname:
        raise ValueError("has no host name")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("must be scheme://host[:port] with no path, query or fragment")
    tls = parts.scheme == "mqtts"
    return BrokerAddress(
        tls=tls,
        host=parts.hostname,
        port=port or (8883 if tls else 1883),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


class MqttSection(_Section):
    """Broker connection and relay tuning."""

    url: str = "mqtt://127.0.0.1:1883"
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    topic_root: str = Field(default="retail/v1", pattern=r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")
    keepalive: int = Field(default=30, ge=5, le=3600)
    window: int = Field(default=100, ge=1, le=1000)
    connect_timeout: float = Field(default=5.0, gt=0, le=120)
    reconnect_min: float = Field(default=0.5, gt=0, le=60)
    reconnect_max: float = Field(default=30.0, gt=0, le=3600)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parse_broker_url(value)
        return value

    @field_validator("ca_file", "cert_file", "key_file")
    @classmethod
    def _readable(cls, value: Path | None) -> Path | None:
        if value is not None:
            try:
                with value.open("rb") as handle:
                    handle.read(1)
            except OSError as exc:
                raise ValueError(f"cannot read {value}: {exc.strerror or exc}") from exc
        return value

    @model_validator(mode="after")
    def _tls_files(self) -> MqttSection:
        address = parse_broker_url(self.url)
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file must be given together (mTLS needs both)")
        if not address.tls and (self.ca_file or self.cert_file):
            raise ValueError("TLS files are set but the URL is mqtt://; use mqtts:// for TLS")
        if address.tls:
            self.ssl_context()  # fail now, with the reason, rather than at the first connect
        return self

    @property
    def broker(self) -> BrokerAddress:
        """The parsed URL."""
        return parse_broker_url(self.url)

    def ssl_context(self) -> ssl.SSLContext:
        """A verifying TLS context from the configured CA and client certificate."""
        try:
            context = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        except (ssl.SSLError, OSError) as exc:
            raise ValueError(f"ca_file {self.ca_file} is not a usable CA certificate: {exc}") from exc
        if self.cert_file and self.key_file:
            try:
                context.load_cert_chain(str(self.cert_file), str(self.key_file))
            except (ssl.SSLError, OSError) as exc:
                raise ValueError(
                    f"cert_file/key_file {self.cert_file} / {self.key_file} are not a matching PEM "
                    f"certificate and key: {exc}"
                ) from exc
        return context


class DataSection(_Section):
    """Where the node keeps its SQLite database, keys and secrets (mode 0700)."""

    dir: Path = Field(default_factory=default_data_dir)


class KioskSection(_Section):
    """The customer screen; always bound to 127.0.0.1 — the browser runs on the same Pi."""

    port: int = Field(default=8080, ge=1, le=65535)


class PosSection(_Section):
    """The POS API on the shop LAN (served from the POS issue on)."""

    host: str = Field(default="0.0.0.0", min_length=1, max_length=255, pattern=r"^[A-Za-z0-9:.\-\[\]]+$")  # noqa: S104
    port: int = Field(default=8081, ge=1, le=65535)


class AdminSection(_Section):
    """Loopback endpoint for status, Prometheus metrics and (with --simulate) device injection."""

    port: int = Field(default=9108, ge=1, le=65535)


class OutboxSection(_Section):
    """The durable queue's bound (see docs/architecture.md for the eviction policy)."""

    max_rows: int = Field(default=1_000_000, ge=10)
    max_bytes: int = Field(default=512 * 1024 * 1024, ge=64 * 1024)


class IdentitySection(_Section):
    """The chain's pseudonymisation key file; unset means a standalone node with its own random key."""

    pseudonym_key_file: Path | None = None

    @field_validator("pseudonym_key_file")
    @classmethod
    def _readable(cls, value: Path | None) -> Path | None:
        if value is not None and not os.access(value, os.R_OK):
            raise ValueError(f"cannot read {value}")
        return value


class StatusSection(_Section):
    """How often a status heartbeat is queued (low-value, evictable)."""

    interval: float = Field(default=300.0, ge=1.0, le=86400.0)


class LogSection(_Section):
    """Log verbosity; logs go to stderr (journald on a Pi)."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class Settings(_Section):
    """The whole node configuration."""

    node: NodeSection = NodeSection()
    mqtt: MqttSection = MqttSection()
    data: DataSection = DataSection()
    kiosk: KioskSection = KioskSection()
    pos: PosSection = PosSection()
    admin: AdminSection = AdminSection()
    outbox: OutboxSection = OutboxSection()
    identity: IdentitySection = IdentitySection()
    status: StatusSection = StatusSection()
    log: LogSection = LogSection()


def _env_overrides(
    environ: Mapping[str, str],
) -> tuple[dict[str, dict[str, str]], dict[tuple[str, str], str]]:
    overrides: dict[str, dict[str, str]] = {}
    names: dict[tuple[str, str], str] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        section, sep, key = name[len(ENV_PREFIX) :].partition("__")
        section, key = section.lower(), key.lower()
        fields = Settings.model_fields
        if not sep or section not in fields or "__" in key:
            raise ConfigError(f"{name}: unknown setting (expected {ENV_PREFIX}<SECTION>__<KEY>)")
        model = fields[section].annotation
        assert isinstance(model, type) and issubclass(model, BaseModel)
        if key not in model.model_fields:
            raise ConfigError(f"{name}: unknown setting {section}.{key}")
        overrides.setdefault(section, {})[key] = value
        names[(section, key)] = name
    return overrides, names


def load_settings(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read the TOML file (if any), apply environment overrides, validate; ConfigError on any problem."""
    env = os.environ if environ is None else environ
    source = path if path is not None else (DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None)
    data: dict[str, Any] = {}
    if source is not None:
        try:
            with source.open("rb") as handle:
                data = tomllib.load(handle)
        except OSError as exc:
            raise ConfigError(f"config file {source}: cannot read ({exc.strerror or exc})") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {source}: not valid TOML ({exc})") from exc
    overrides, env_names = _env_overrides(env)
    for section, values in overrides.items():
        current = data.setdefault(section, {})
        if not isinstance(current, dict):
            raise ConfigError(f"config file {source}: [{section}] must be a table")
        current.update(values)
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, env_names, source)) from None


def _describe(exc: ValidationError, env_names: dict[tuple[str, str], str], source: Path | None) -> str:
    error = exc.errors()[0]
    loc = [str(part) for part in error["loc"]]
    key = ".".join(loc) if loc else "config"
    origin = ""
    if len(loc) >= 2 and (loc[0], loc[1]) in env_names:
        origin = f" (from {env_names[(loc[0], loc[1])]})"
    elif source is not None:
        origin = f" (in {source})"
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown setting"
    return f"{key}{origin}: {message}"
