"""Exception root for cloud_sync; each subclass is also the builtin it behaves like."""

from __future__ import annotations


class CloudSyncError(Exception):
    """Root of every error raised on purpose by cloud_sync."""


class EnvelopeError(CloudSyncError, ValueError):
    """A message is malformed, violates the schema or carries a bad signature."""


class SignatureError(EnvelopeError):
    """The signature does not verify against the node's public key."""


class OutboxFull(CloudSyncError, OSError):  # noqa: N818 - reads as the condition operators see
    """The outbox bound is reached and this event class may not evict anything: the caller must refuse."""

    def __init__(self, event_type: str, rows: int, bytes_: int) -> None:
        super().__init__(
            f"outbox full ({rows} events, {bytes_} bytes): {event_type!r} event refused; "
            "it is kept nowhere, retry once the broker drains the backlog"
        )
        self.event_type = event_type


class OutboxClosed(CloudSyncError, RuntimeError):  # noqa: N818
    """The outbox is shutting down and takes no new events."""
