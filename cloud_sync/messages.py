"""Typed bodies of the messages of DESIGN.md, validated before anything is sealed or stored.

Each event type has one model; ``EVENT_CLASSES`` says which outbox class it belongs to (see
``cloud_sync.outbox``: protected events are never evicted, low-value ones may be).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cloud_sync.errors import EnvelopeError

Token = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="HMAC-SHA256 identity token, hex")]
ShortText = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]*$")]


class EventClass(StrEnum):
    """How the outbox treats an event type when its bound is reached."""

    PROTECTED = "protected"  # refused when full, never evicted: sales, sign-ups, reservations, taps, …
    LOW_VALUE = "low_value"  # evicted oldest-first to make room: status heartbeats, telemetry


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class IdentityBody(_Body):
    """A card tap or a member barcode scan, pseudonymised on the node (never the raw UID or code)."""

    source: Literal["nfc", "barcode"]
    token: Token
    device: ShortText


class AssistBody(_Body):
    """A customer asked for help (the assistance button or the kiosk)."""

    source: Literal["button", "kiosk"]
    device: ShortText


class OutboxSummary(_Body):
    """The backlog as the node saw it when it sent a status message."""

    depth: int = Field(ge=0)
    bytes: int = Field(ge=0)
    oldest_age_s: int = Field(ge=0)


class StatusBody(_Body):
    """Periodic node heartbeat (``event/status``): low value, may be evicted when the outbox is full."""

    state: Literal["online", "degraded"]
    version: ShortText
    uptime_s: int = Field(ge=0)
    outbox: OutboxSummary
    alarms: list[ShortText] = Field(max_length=32)
    devices: dict[ShortText, Literal["present", "absent", "simulated", "error"]]


class PresenceBody(_Body):
    """The retained message on ``{root}/{store}/{node}/status``; the broker's LWT sets it offline."""

    state: Literal["online", "offline"]
    reason: Literal["connected", "shutdown", "connection-lost", "alarm"]
    version: ShortText
    alarms: list[ShortText] = Field(max_length=32)
    outbox: OutboxSummary | None = None


BODY_MODELS: dict[str, type[_Body]] = {
    "identity": IdentityBody,
    "assist": AssistBody,
    "status": StatusBody,
    "presence": PresenceBody,
}

EVENT_CLASSES: dict[str, EventClass] = {
    "identity": EventClass.PROTECTED,
    "assist": EventClass.PROTECTED,
    "sale": EventClass.PROTECTED,
    "signup": EventClass.PROTECTED,
    "reservation": EventClass.PROTECTED,
    "survey": EventClass.PROTECTED,
    "warranty": EventClass.PROTECTED,
    "status": EventClass.LOW_VALUE,
    "telemetry": EventClass.LOW_VALUE,
}


def event_class(event_type: str) -> EventClass:
    """The outbox class of ``event_type``; unknown types are protected, the safe default."""
    return EVENT_CLASSES.get(event_type, EventClass.PROTECTED)


def validate_body(event_type: str, body: dict[str, Any]) -> dict[str, Any]:
    """Check ``body`` against its model and return it in canonical (model-dumped) form."""
    model = BODY_MODELS.get(event_type)
    if model is None:
        raise EnvelopeError(f"unknown event type {event_type!r}")
    try:
        return model.model_validate(body).model_dump(mode="json", exclude_none=True)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise EnvelopeError(f"{event_type} body: {where}: {first['msg']}") from exc
