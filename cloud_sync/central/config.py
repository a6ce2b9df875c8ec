"""Central receiver configuration: ``central.toml`` plus ``KIOSK_CENTRAL_<SECTION>__<KEY>`` overrides.

The same loader and error style as the node (``cloud_sync.settings``). The defaults run a demo on one
machine: SQLite files in the user's data directory and a broker on localhost. A chain sets
``KIOSK_CENTRAL_DB__URL`` to PostgreSQL and ``KIOSK_CENTRAL_MQTT__URL`` to its clustered broker.
"""

from __future__ import annotations

import os
import socket
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

import msgspec

from cloud_sync.central.program import LoyaltySection
from cloud_sync.settings import (
    BrokerAddress,
    Schema,
    Section,
    check_broker,
    check_readable,
    parse_broker_url,
    tls_context,
)

ENV_PREFIX = "KIOSK_CENTRAL_"
DEFAULT_CONFIG = Path("/etc/kiosk-central/central.toml")


def default_data_dir() -> Path:
    """Where the embedded SQLite databases live when no URL is configured."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "kiosk-central"


def _default_client_id() -> str:
    # Stable across restarts of this worker (its persistent session is found again by this id), distinct
    # between machines. A second worker on the same host sets its own id.
    host = "".join(c if c.isalnum() or c in "-_" else "-" for c in socket.gethostname())[:40]
    return f"central-{host or 'worker'}"


_DB_URL_HELP = "must be a SQLAlchemy URL such as postgresql+psycopg://user@host/db or sqlite:///path"


def _check_db_url(name: str, url: str) -> None:
    if url and not (url.startswith("postgresql") or url.startswith("sqlite:")):
        raise ValueError(f"{name}: {_DB_URL_HELP}")


class DbSection(Section):
    """The loyalty ledger and event store (no readable personal data: that lives in the vault)."""

    #: empty = SQLite in the data directory
    url: Annotated[str, msgspec.Meta(max_length=2048)] = ""

    def __post_init__(self) -> None:
        _check_db_url("url", self.url)


class VaultSection(Section):
    """The PII vault: a separate database with its own credentials (DESIGN.md, Privacy)."""

    #: empty = a second SQLite file in the data directory
    url: Annotated[str, msgspec.Meta(max_length=2048)] = ""
    #: the X25519 key that opens what the nodes sealed ('kiosk-central vault keygen'); default: vault.key
    #: in the data directory; without one, sign-ups wait sealed in the ledger until it is configured
    private_key_file: Path | None = None
    #: the AES-256-GCM data keys personal data is stored under (docs/privacy.md: rotation)
    data_key_file: Path | None = None

    def __post_init__(self) -> None:
        _check_db_url("url", self.url)
        check_readable("private_key_file", self.private_key_file)
        check_readable("data_key_file", self.data_key_file)


class DataSection(Section):
    """Where the embedded SQLite databases are kept when no database URL is given."""

    dir: Path = msgspec.field(default_factory=default_data_dir)


ClientId = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")]


class MqttSection(Section):
    """The broker the nodes publish to, and how this worker consumes from it."""

    url: str = "mqtt://127.0.0.1:1883"
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    topic_root: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*\Z")] = "retail/v1"
    #: the shared-subscription group every worker of the chain joins
    share_group: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,32}\Z")] = "central"
    #: stable per worker: the broker keeps its session (and its unacknowledged messages) under this id
    client_id: ClientId = msgspec.field(default_factory=_default_client_id)
    #: how long the broker keeps this worker's session while it is away (seconds)
    session_expiry: Annotated[int, msgspec.Meta(ge=60, le=7 * 86400)] = 86400
    keepalive: Annotated[int, msgspec.Meta(ge=5, le=3600)] = 30
    #: events committed in one database transaction, at most
    batch_max: Annotated[int, msgspec.Meta(ge=1, le=5000)] = 200
    #: how long a batch waits for more events once it has one (milliseconds)
    batch_wait_ms: Annotated[int, msgspec.Meta(ge=0, le=1000)] = 10
    #: unacknowledged messages the broker may send this worker at once (MQTT v5 Receive Maximum)
    receive_maximum: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 1000

    def __post_init__(self) -> None:
        check_broker(self.url, self.ca_file, self.cert_file, self.key_file)

    @property
    def broker(self) -> BrokerAddress:
        """The parsed URL."""
        return parse_broker_url(self.url)

    def ssl_context(self) -> ssl.SSLContext:
        """A verifying TLS context from the configured CA and client certificate."""
        return tls_context(self.ca_file, self.cert_file, self.key_file)


class MetricsSection(Section):
    """Prometheus metrics over HTTP (loopback by default: put a scraper or a proxy next to it)."""

    host: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9:.\-\[\]]{1,255}\Z")] = "127.0.0.1"
    #: 0 = no metrics endpoint
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 9110


class LogSection(Section):
    """Log verbosity; logs go to stderr (journald under systemd)."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class CentralSettings(Section):
    """The whole central receiver configuration."""

    db: DbSection = msgspec.field(default_factory=DbSection)
    vault: VaultSection = msgspec.field(default_factory=VaultSection)
    data: DataSection = msgspec.field(default_factory=DataSection)
    mqtt: MqttSection = msgspec.field(default_factory=MqttSection)
    metrics: MetricsSection = msgspec.field(default_factory=MetricsSection)
    log: LogSection = msgspec.field(default_factory=LogSection)
    loyalty: LoyaltySection = msgspec.field(default_factory=LoyaltySection)

    @property
    def db_url(self) -> str:
        """The ledger database URL, defaulting to SQLite in the data directory."""
        return self.db.url or f"sqlite:///{self.data.dir / 'central.db'}"

    @property
    def vault_url(self) -> str:
        """The vault database URL, defaulting to a separate SQLite file in the data directory."""
        return self.vault.url or f"sqlite:///{self.data.dir / 'vault.db'}"


SECTIONS: dict[str, type[Section]] = {
    "db": DbSection,
    "vault": VaultSection,
    "data": DataSection,
    "mqtt": MqttSection,
    "metrics": MetricsSection,
    "log": LogSection,
    "loyalty": LoyaltySection,
}

_SCHEMA = Schema(root=CentralSettings, sections=SECTIONS, env_prefix=ENV_PREFIX, default_file=DEFAULT_CONFIG)


def load_central_settings(
    path: Path | None = None, environ: Mapping[str, str] | None = None
) -> CentralSettings:
    """Read ``central.toml`` (if any) and the environment; ``ConfigError`` names the key and the problem."""
    loaded: CentralSettings = _SCHEMA.load(path, environ)
    return loaded
