"""TOML configuration with ``<PREFIX><SECTION>__<KEY>`` environment overrides, for the node and central.

Both programs follow DESIGN.md's rule: one TOML file, every key overridable by the environment, and a bad
value stops start-up with one line that names the key and the problem. The node (``edge.config``) and the
central receiver (``cloud_sync.central.config``) describe their sections as msgspec structs and share this
loader, so the two report mistakes the same way. Checks that need code raise ``ValueError("key:
problem")`` from a section's ``__post_init__``; the loader turns that into ``section.key (from VAR):
problem``.
"""

from __future__ import annotations

import os
import ssl
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import msgspec

from cloud_sync.errors import CloudSyncError


class ConfigError(CloudSyncError, ValueError):
    """A configuration value is unusable; the message is one line naming the key and the problem."""


class Section(msgspec.Struct, forbid_unknown_fields=True):
    """Base of every configuration section: unknown keys are errors, not silently ignored."""


S = TypeVar("S", bound=Section)


def check_readable(name: str, value: Path | None) -> None:
    """Fail now, naming the key, if a configured file cannot be read (rather than at first use)."""
    if value is not None:
        try:
            with value.open("rb") as handle:
                handle.read(1)
        except OSError as exc:
            raise ValueError(f"{name}: cannot read {value}: {exc.strerror or exc}") from exc


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """The parts of an ``mqtt://`` / ``mqtts://`` URL a client needs."""

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


def check_broker(url: str, ca_file: Path | None, cert_file: Path | None, key_file: Path | None) -> None:
    """The checks every MQTT section shares: a valid URL and TLS files that exist, match and fit it."""
    try:
        address = parse_broker_url(url)
    except ValueError as exc:
        raise ValueError(f"url: {exc}") from None
    for name, value in (("ca_file", ca_file), ("cert_file", cert_file), ("key_file", key_file)):
        check_readable(name, value)
    if (cert_file is None) != (key_file is None):
        raise ValueError("cert_file: cert_file and key_file must be given together (mTLS needs both)")
    if not address.tls and (ca_file or cert_file):
        raise ValueError("url: TLS files are set but the URL is mqtt://; use mqtts:// for TLS")
    if address.tls:
        tls_context(ca_file, cert_file, key_file)  # fail now, with the reason, rather than at first connect


def tls_context(ca_file: Path | None, cert_file: Path | None, key_file: Path | None) -> ssl.SSLContext:
    """A verifying TLS client context from a CA file (or the system's) and an optional client certificate."""
    try:
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    except (ssl.SSLError, OSError) as exc:
        raise ValueError(f"ca_file: {ca_file} is not a usable CA certificate: {exc}") from exc
    if cert_file and key_file:
        try:
            context.load_cert_chain(str(cert_file), str(key_file))
        except (ssl.SSLError, OSError) as exc:
            raise ValueError(
                f"cert_file: {cert_file} / {key_file} are not a matching PEM certificate and key: {exc}"
            ) from exc
    return context


def _decode_path(kind: type, value: Any) -> Any:
    """Decode hook for ``Path`` fields; NotImplementedError is msgspec's protocol for "not mine"."""
    if kind is Path and isinstance(value, str):
        return Path(value)
    raise NotImplementedError


@dataclass(frozen=True, slots=True)
class Schema:
    """What one program's configuration looks like: its root struct, sections and environment prefix."""

    root: type[Section]
    sections: Mapping[str, type[Section]]
    env_prefix: str
    default_file: Path

    def env_overrides(
        self, environ: Mapping[str, str]
    ) -> tuple[dict[str, dict[str, str]], dict[tuple[str, str], str]]:
        """The environment's settings by section, and which variable set each (for error messages)."""
        overrides: dict[str, dict[str, str]] = {}
        names: dict[tuple[str, str], str] = {}
        prefix = self.env_prefix
        for name, value in environ.items():
            if not name.startswith(prefix):
                continue
            section, sep, key = name[len(prefix) :].partition("__")
            section, key = section.lower(), key.lower()
            if not sep or section not in self.sections or "__" in key:
                raise ConfigError(f"{name}: unknown setting (expected {prefix}<SECTION>__<KEY>)")
            if key not in self.sections[section].__struct_fields__:
                raise ConfigError(f"{name}: unknown setting {section}.{key}")
            overrides.setdefault(section, {})[key] = value
            names[(section, key)] = name
        return overrides, names

    def describe(self, message: str, env_names: dict[tuple[str, str], str], source: Path | None) -> str:
        """Turn msgspec's "problem - at `$.section.key`" into "section.key (from VAR): problem"."""
        problem, _, where = message.rpartition(" - at `")
        if not problem:
            problem, where = message, "$`"
        loc = [part for part in where.rstrip("`").removeprefix("$").split(".") if part]
        if problem.startswith("Object contains unknown field `"):
            loc.append(problem.split("`")[1])
            problem = "unknown setting"
        elif len(loc) == 1:  # a check in __post_init__: "key: problem"
            key, sep, rest = problem.partition(": ")
            if sep and key in self.sections.get(loc[0], Section).__struct_fields__:
                loc.append(key)
                problem = rest
        key = ".".join(loc) or "config"
        origin = ""
        if len(loc) >= 2 and (loc[0], loc[1]) in env_names:
            origin = f" (from {env_names[(loc[0], loc[1])]})"
        elif source is not None:
            origin = f" (in {source})"
        return f"{key}{origin}: {problem}"

    def load(self, path: Path | None = None, environ: Mapping[str, str] | None = None) -> Any:
        """Read the TOML file (if any), apply environment overrides, validate; ConfigError on any problem.

        Without ``path`` the program's default file is read if it exists (a packaged install), else
        built-in defaults apply (a developer's checkout).
        """
        env = os.environ if environ is None else environ
        source = path if path is not None else (self.default_file if self.default_file.exists() else None)
        data: dict[str, Any] = {}
        if source is not None:
            try:
                with source.open("rb") as handle:
                    data = tomllib.load(handle)
            except OSError as exc:
                raise ConfigError(f"config file {source}: cannot read ({exc.strerror or exc})") from exc
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"config file {source}: not valid TOML ({exc})") from exc
        overrides, env_names = self.env_overrides(env)
        for section, values in overrides.items():
            current = data.setdefault(section, {})
            if not isinstance(current, dict):
                raise ConfigError(f"config file {source}: [{section}] must be a table")
            current.update(values)
        try:
            # strict=False lets "8080" from the environment be an int; types are still checked.
            return msgspec.convert(data, self.root, strict=False, dec_hook=_decode_path)
        except msgspec.ValidationError as exc:
            raise ConfigError(self.describe(str(exc), env_names, source)) from None
