"""Node configuration: one TOML file, every key overridable by ``KIOSK_EDGE_<SECTION>__<KEY>``.

Validation is strict on purpose: an operator's typo must stop start-up with one line that names the key
and the problem (``ConfigError``), not surface hours later as a node that silently ignores a setting.
The schema is msgspec structs (the same library as the message bodies, ~4 MB instead of pydantic's ~15 MB
in a process that must stay under 60 MB); checks that need code raise ``ValueError("key: problem")``.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

import msgspec

from cloud_sync import settings as _settings
from cloud_sync.envelope import IDENT_RE
from cloud_sync.settings import BrokerAddress, parse_broker_url
from edge.errors import ConfigError

__all__ = ["BrokerAddress", "ConfigError", "Settings", "load_settings", "parse_broker_url"]

ENV_PREFIX = "KIOSK_EDGE_"
DEFAULT_CONFIG = Path("/etc/kiosk-edge/edge.toml")


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/kiosk-edge`` for a developer; provisioning sets /var/lib/kiosk-edge on a Pi."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "kiosk-edge"


Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
_IDENT_HELP = "must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"


_Section = _settings.Section
_check_readable = _settings.check_readable


class NodeSection(_Section):
    """Who this node is; both ids appear in MQTT topics and every envelope."""

    store: str = "store-1"
    id: str = "node-1"
    #: this node's block of member codes (assigned at enrollment, unique in the chain; 0 = standalone)
    member_prefix: Annotated[int, msgspec.Meta(ge=0, le=9999)] = 0

    def __post_init__(self) -> None:
        for name in ("store", "id"):
            if not IDENT_RE.fullmatch(getattr(self, name)):
                raise ValueError(f"{name}: {_IDENT_HELP}")


class MqttSection(_Section):
    """Broker connection and relay tuning."""

    url: str = "mqtt://127.0.0.1:1883"
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    topic_root: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*\Z")] = "retail/v1"
    keepalive: Annotated[int, msgspec.Meta(ge=5, le=3600)] = 30
    window: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 100
    connect_timeout: Annotated[float, msgspec.Meta(gt=0, le=120)] = 5.0
    reconnect_min: Annotated[float, msgspec.Meta(gt=0, le=60)] = 0.5
    reconnect_max: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 30.0

    def __post_init__(self) -> None:
        _settings.check_broker(self.url, self.ca_file, self.cert_file, self.key_file)

    @property
    def broker(self) -> BrokerAddress:
        """The parsed URL."""
        return parse_broker_url(self.url)

    def ssl_context(self) -> ssl.SSLContext:
        """A verifying TLS context from the configured CA and client certificate."""
        return _settings.tls_context(self.ca_file, self.cert_file, self.key_file)


class DataSection(_Section):
    """Where the node keeps its SQLite database, keys and secrets (mode 0700)."""

    dir: Path = msgspec.field(default_factory=default_data_dir)


Colour = Annotated[str, msgspec.Meta(pattern=r"^#[0-9a-fA-F]{6}\Z")]


class KioskSection(_Section):
    """The customer screen; always bound to 127.0.0.1 — the browser runs on the same Pi."""

    port: Port = 8080
    #: the store's name as customers see it on the attract screen
    display_name: Annotated[
        str, msgspec.Meta(min_length=1, max_length=60, pattern=r"^[^\x00-\x1f\x7f<>]*\Z")
    ] = "Welcome"
    #: back to the attract screen, form and session wiped, after this many seconds without a touch
    idle_timeout: Annotated[float, msgspec.Meta(ge=2.0, le=3600.0)] = 60.0
    default_language: Literal["en", "tr", "zh", "nl"] = "en"
    brand_color: Colour = "#0b3d5c"
    accent_color: Colour = "#ffb400"
    #: a PNG or SVG logo shown on the attract screen
    logo_file: Path | None = None
    #: how local phone numbers typed at the kiosk are read (ISO 3166 country code)
    phone_region: Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{2}\Z")] = "NL"
    #: sign-ups accepted per minute at this kiosk (a flood is refused with a friendly message)
    signups_per_minute: Annotated[int, msgspec.Meta(ge=1, le=600)] = 6

    def __post_init__(self) -> None:
        _check_readable("logo_file", self.logo_file)
        if self.logo_file is not None and self.logo_file.suffix.lower() not in (".png", ".svg"):
            raise ValueError("logo_file: must be a .png or .svg file")


class PosSection(_Section):
    """The POS API on the shop LAN: pairing, the till session, sales."""

    host: Annotated[str, msgspec.Meta(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9:.\-\[\]]+\Z")] = (
        "0.0.0.0"  # noqa: S104 - the POS API is meant for the shop LAN
    )
    port: Port = 8081
    #: how long a tapped or scanned customer stays attached to this till (or until a sale consumes them)
    session_window: Annotated[float, msgspec.Meta(ge=10, le=3600)] = 120.0
    #: how long a pairing code from ``kiosk-edge pair`` is valid
    pair_code_ttl: Annotated[float, msgspec.Meta(ge=30, le=3600)] = 300.0
    #: wrong pairing codes in a row before pairing locks (and every outstanding code is void)
    pair_max_failures: Annotated[int, msgspec.Meta(ge=1, le=100)] = 5
    #: how long pairing stays locked after that
    pair_lockout: Annotated[float, msgspec.Meta(ge=10, le=86400)] = 300.0
    #: how long a redemption waits for the central receiver's answer
    redemption_timeout: Annotated[float, msgspec.Meta(ge=0.5, le=30)] = 3.0
    #: rewards per member per day handed over without the central receiver's answer (0 = never)
    offline_redemptions_per_day: Annotated[int, msgspec.Meta(ge=0, le=10)] = 1
    #: serve the POS API over TLS with this certificate (PEM, with its chain) and key; both or neither
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None

    def __post_init__(self) -> None:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file: set both tls_cert_file and tls_key_file, or neither")
        _check_readable("tls_cert_file", self.tls_cert_file)
        _check_readable("tls_key_file", self.tls_key_file)


class AdminSection(_Section):
    """Loopback endpoint for status, Prometheus metrics and (with --simulate) device injection."""

    port: Port = 9108


class OutboxSection(_Section):
    """The durable queue's bound (see docs/architecture.md for the eviction policy)."""

    max_rows: Annotated[int, msgspec.Meta(ge=10)] = 1_000_000
    max_bytes: Annotated[int, msgspec.Meta(ge=64 * 1024)] = 512 * 1024 * 1024


class IdentitySection(_Section):
    """The chain's pseudonymisation key file; unset means a standalone node with its own random key."""

    pseudonym_key_file: Path | None = None
    #: the central PII vault's X25519 public key, "x25519:<base64>"; personal data is sealed to it
    vault_public_key: Annotated[str, msgspec.Meta(pattern=r"^(x25519:[A-Za-z0-9+/]{43}=)?\Z")] = ""

    def __post_init__(self) -> None:
        _check_readable("pseudonym_key_file", self.pseudonym_key_file)


class StatusSection(_Section):
    """How often a status heartbeat is queued (low-value, evictable)."""

    interval: Annotated[float, msgspec.Meta(ge=1.0, le=86400.0)] = 300.0


GpioPin = Annotated[int, msgspec.Meta(ge=-1, le=53, description="BCM pin number; -1 = not fitted")]


class NfcSection(_Section):
    """The PC/SC card readers (through pcscd)."""

    enabled: bool = True
    #: comma-separated reader names or name prefixes to watch; empty = every PC/SC reader present
    readers: Annotated[str, msgspec.Meta(max_length=1024)] = ""
    #: the same card back within this many seconds of being lifted is the same tap
    min_interval: Annotated[float, msgspec.Meta(ge=0.0, le=60.0)] = 1.0

    @property
    def reader_names(self) -> list[str]:
        """``readers`` as a list."""
        return [name.strip() for name in self.readers.split(",") if name.strip()]


class ScannerSection(_Section):
    """The USB barcode scanner (a keyboard-wedge HID device, grabbed exclusively through evdev)."""

    enabled: bool = True
    #: the udev symlink firmware_config/ creates; tried first
    device: Path | None = Path("/dev/kiosk-scanner")
    #: USB vendor:product in hex, e.g. "0c2e:0b61" (Honeywell); empty = any
    usb_id: Annotated[str, msgspec.Meta(pattern=r"^([0-9A-Fa-f]{4}:[0-9A-Fa-f]{4})?\Z")] = ""
    #: shell-style pattern on the input device's name, used when usb_id is empty
    name_pattern: Annotated[str, msgspec.Meta(max_length=128)] = "*[Bb]arcode*"
    #: the keyboard layout the scanner is set to send
    layout: Literal["us", "de", "tr"] = "us"
    #: a gap longer than this between two keys ends a scan (milliseconds)
    inter_key_ms: Annotated[int, msgspec.Meta(ge=5, le=2000)] = 50
    #: receipts printed by the POS start with this
    receipt_prefix: Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{1,8}\Z")] = "RC"

    def __post_init__(self) -> None:
        if self.device is not None and str(self.device) in ("", "."):
            self.device = None  # "device = ''" switches the symlink lookup off
        if self.enabled and self.device is None and not self.usb_id and not self.name_pattern:
            # matching "any input device" would grab the keyboard
            raise ValueError("name_pattern: give device, usb_id or name_pattern (or set enabled = false)")


class GpioSection(_Section):
    """Status LEDs, buzzer and the assistance button on the GPIO header (BCM numbers, -1 = not fitted)."""

    enabled: bool = True
    led_green: GpioPin = 17
    led_amber: GpioPin = 27
    led_red: GpioPin = 22
    buzzer: GpioPin = 23
    button: GpioPin = 24
    buzzer_active_high: bool = True
    button_pull_up: bool = True
    #: presses closer together than this are one request (a customer hammering the button)
    button_min_interval: Annotated[float, msgspec.Meta(ge=0.0, le=600.0)] = 2.0

    def __post_init__(self) -> None:
        pins = {
            name: getattr(self, name)
            for name in ("led_green", "led_amber", "led_red", "buzzer", "button")
            if getattr(self, name) >= 0
        }
        seen: dict[int, str] = {}
        for name, pin in pins.items():
            if pin in seen:
                raise ValueError(f"{name}: pin {pin} is already used by {seen[pin]}")
            seen[pin] = name


class LogSection(_Section):
    """Log verbosity; logs go to stderr (journald on a Pi)."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class Settings(_Section):
    """The whole node configuration."""

    node: NodeSection = msgspec.field(default_factory=NodeSection)
    mqtt: MqttSection = msgspec.field(default_factory=MqttSection)
    data: DataSection = msgspec.field(default_factory=DataSection)
    kiosk: KioskSection = msgspec.field(default_factory=KioskSection)
    pos: PosSection = msgspec.field(default_factory=PosSection)
    admin: AdminSection = msgspec.field(default_factory=AdminSection)
    outbox: OutboxSection = msgspec.field(default_factory=OutboxSection)
    identity: IdentitySection = msgspec.field(default_factory=IdentitySection)
    status: StatusSection = msgspec.field(default_factory=StatusSection)
    nfc: NfcSection = msgspec.field(default_factory=NfcSection)
    scanner: ScannerSection = msgspec.field(default_factory=ScannerSection)
    gpio: GpioSection = msgspec.field(default_factory=GpioSection)
    log: LogSection = msgspec.field(default_factory=LogSection)


SECTIONS: dict[str, type[_Section]] = {
    "node": NodeSection,
    "mqtt": MqttSection,
    "data": DataSection,
    "kiosk": KioskSection,
    "pos": PosSection,
    "admin": AdminSection,
    "outbox": OutboxSection,
    "identity": IdentitySection,
    "status": StatusSection,
    "nfc": NfcSection,
    "scanner": ScannerSection,
    "gpio": GpioSection,
    "log": LogSection,
}


_SCHEMA = _settings.Schema(
    root=Settings, sections=SECTIONS, env_prefix=ENV_PREFIX, default_file=DEFAULT_CONFIG
)


def load_settings(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read the TOML file (if any), apply environment overrides, validate; ConfigError on any problem."""
    try:
        loaded: Settings = _SCHEMA.load(path, environ)
    except _settings.ConfigError as exc:
        raise ConfigError(str(exc)) from None
    return loaded
