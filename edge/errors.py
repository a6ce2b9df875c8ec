"""Exception root for the node; each subclass is also the builtin it behaves like (gpiozero's habit)."""

from __future__ import annotations


class EdgeError(Exception):
    """Root of every error raised on purpose by the node."""


class ConfigError(EdgeError, ValueError):
    """A configuration value is unusable; the message is one line naming the key and the problem."""


class KeyFileError(EdgeError, OSError):
    """A key file is missing, unreadable, has unsafe permissions or holds the wrong kind of key."""


class DeviceError(EdgeError, OSError):
    """A device misbehaved; the node reports it and keeps running."""


class NotRunning(EdgeError, ConnectionError):  # noqa: N818
    """No node answers on the admin endpoint."""
