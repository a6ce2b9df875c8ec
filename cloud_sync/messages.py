"""Typed bodies of the messages of DESIGN.md, validated before anything is sealed or stored.

Each event type has one model; ``EVENT_CLASSES`` says which outbox class it belongs to (see
``cloud_sync.outbox``: protected events are never evicted, low-value ones may be).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

import msgspec

from cloud_sync.errors import EnvelopeError

# Patterns end in \Z, not $: Python's $ also matches before a trailing newline.
# msgspec rather than pydantic: it validates a body in about 1 us instead of about 14 us, and costs the
# node ~4 MB of memory instead of ~15 MB — both count on a Pi relaying thousands of events a second.
Token = Annotated[
    str, msgspec.Meta(pattern=r"^[0-9a-f]{64}\Z", description="HMAC-SHA256 identity token, hex")
]
ShortText = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]*\Z")]
Count = Annotated[int, msgspec.Meta(ge=0)]
Alarms = Annotated[list[ShortText], msgspec.Meta(max_length=32)]


class EventClass(StrEnum):
    """How the outbox treats an event type when its bound is reached."""

    PROTECTED = "protected"  # refused when full, never evicted: sales, sign-ups, reservations, taps, …
    LOW_VALUE = "low_value"  # evicted oldest-first to make room: status heartbeats, telemetry


class _Body(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    pass


class IdentityBody(_Body):
    """A card tap or a member barcode scan, pseudonymised on the node (never the raw UID or code)."""

    source: Literal["nfc", "barcode"]
    token: Token
    device: ShortText
    #: the card family from the reader's ATR (nfc only), e.g. "ntag-ultralight", "mifare-classic-1k"
    card_type: Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9-]{1,32}\Z")] | None = None
    #: a printed card's NDEF member code, pseudonymised like a scanned member barcode (nfc only)
    code_token: Token | None = None


class AssistBody(_Body):
    """A customer asked for help (the assistance button or the kiosk)."""

    source: Literal["button", "kiosk"]
    device: ShortText


class Consent(_Body):
    """What the customer agreed to, ticked by themselves (marketing boxes start unticked)."""

    privacy_notice: Literal[True]
    marketing_email: bool
    marketing_sms: bool
    notice_version: ShortText


class SignupBody(_Body):
    """A new member joined at the kiosk. Readable personal data travels only inside ``sealed``.

    ``sealed`` is a libsodium sealed box (X25519) of a JSON object (first name, e-mail and/or phone, member
    code) that only the central PII vault can open; ``vault_key`` names the key it was sealed to.
    """

    member_token: Token
    consent: Consent
    language: Literal["en", "tr", "zh", "nl"]
    sealed: Annotated[str, msgspec.Meta(min_length=40, max_length=4096, pattern=r"^[A-Za-z0-9_-]+\Z")]
    vault_key: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{16}\Z")]
    heard_via: Literal["friend", "in_store", "social", "search", "advert", "other", "not_said"] = "not_said"
    card_token: Token | None = None


class ReservedItem(_Body):
    """What was reserved: a GTIN (14 digits, GS1 check digit) or the store's SKU."""

    gtin: Annotated[str, msgspec.Meta(pattern=r"^[0-9]{14}\Z")] | None = None
    sku: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}\Z")] | None = None
    quantity: Annotated[int, msgspec.Meta(ge=1, le=20)] = 1

    def __post_init__(self) -> None:
        if (self.gtin is None) == (self.sku is None):
            raise ValueError("an item has exactly one of gtin or sku")


class ReservationBody(_Body):
    """A customer reserved a product for pick-up at this store; name and contact travel sealed."""

    code: Annotated[str, msgspec.Meta(pattern=r"^R[0-9]{8}\Z")]
    item: ReservedItem
    pickup_date: Annotated[str, msgspec.Meta(pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")]
    language: Literal["en", "tr", "zh", "nl"]
    sealed: Annotated[str, msgspec.Meta(min_length=40, max_length=4096, pattern=r"^[A-Za-z0-9_-]+\Z")]
    vault_key: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{16}\Z")]
    member_token: Token | None = None


class SurveyBody(_Body):
    """A customer answered the post-sale survey: NPS 0-10, and optionally why (sealed: free text)."""

    score: Annotated[int, msgspec.Meta(ge=0, le=10)]
    language: Literal["en", "tr", "zh", "nl"]
    vault_key: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{16}\Z")]
    #: the "why?" answer, sealed to the PII vault (free text may name people); absent when not given
    sealed_comment: (
        Annotated[str, msgspec.Meta(min_length=40, max_length=8192, pattern=r"^[A-Za-z0-9_-]+\Z")] | None
    ) = None
    member_token: Token | None = None
    #: the POS receipt the survey follows, when the till asked for it
    receipt: Annotated[str, msgspec.Meta(pattern=r"^[0-9A-Za-z-]{4,48}\Z")] | None = None


class WarrantyBody(_Body):
    """A product registered for warranty: its serial, the purchase receipt, and who (token or sealed)."""

    serial: Annotated[str, msgspec.Meta(pattern=r"^[0-9A-Z][0-9A-Z./-]{2,39}\Z")]
    receipt: Annotated[str, msgspec.Meta(pattern=r"^[0-9A-Za-z-]{4,48}\Z")]
    language: Literal["en", "tr", "zh", "nl"]
    vault_key: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{16}\Z")]
    gtin: Annotated[str, msgspec.Meta(pattern=r"^[0-9]{14}\Z")] | None = None
    member_token: Token | None = None
    #: name and contact of a customer who is not an identified member, sealed to the vault
    sealed: (
        Annotated[str, msgspec.Meta(min_length=40, max_length=4096, pattern=r"^[A-Za-z0-9_-]+\Z")] | None
    ) = None

    def __post_init__(self) -> None:
        if self.member_token is None and self.sealed is None:
            raise ValueError("a warranty registration needs a member or a sealed contact")


Receipt = Annotated[str, msgspec.Meta(pattern=r"^[0-9A-Za-z-]{4,48}\Z")]
PosId = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")]
Minor = Annotated[int, msgspec.Meta(ge=-(10**12), le=10**12)]


class SaleLine(_Body):
    """One line of a sale; a returned item has a negative quantity."""

    name: Annotated[
        str, msgspec.Meta(min_length=1, max_length=120, pattern=r"^[^\x00-\x1f\x7f-\x9f\u2028\u2029]*\Z")
    ]
    quantity: Annotated[int, msgspec.Meta(ge=-9999, le=9999)]
    unit_price: Annotated[int, msgspec.Meta(ge=0, le=100_000_000)]
    category: Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}\Z")]
    gtin: Annotated[str, msgspec.Meta(pattern=r"^[0-9]{14}\Z")] | None = None
    sku: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}\Z")] | None = None

    def __post_init__(self) -> None:
        if (self.gtin is None) == (self.sku is None):
            raise ValueError("a sale line has exactly one of gtin or sku")
        if self.quantity == 0:
            raise ValueError("a sale line's quantity is not 0")


class SaleCustomer(_Body):
    """Who was present at the till: a pseudonymous token (tap, scan or a typed member code)."""

    source: Literal["nfc", "barcode", "typed"]
    token: Token
    #: the token of the member code printed on the tapped card, when it carried one
    code_token: Token | None = None


class SaleBody(_Body):
    """A sale (or return) from the paired POS, with the customer who was present, if any.

    ``receipt`` is the POS's Idempotency-Key; ``points`` the provisional points the till showed
    (``cloud_sync.loyalty``), which the central ledger recomputes with the same rules.
    """

    receipt: Receipt
    pos: PosId
    lines: Annotated[list[SaleLine], msgspec.Meta(min_length=1, max_length=500)]
    total: Minor
    currency: Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{3}\Z")]
    payment: Literal["cash", "card", "mobile", "voucher", "mixed", "other"]
    discount: Annotated[int, msgspec.Meta(ge=0, le=1_000_000_000)] = 0
    sold_at: Annotated[str, msgspec.Meta(pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]{8,12}Z\Z")] | None = (
        None
    )
    customer: SaleCustomer | None = None
    points: Minor = 0
    survey: bool = False


RewardId = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}\Z")]
#: points a member chooses to spend on a variable reward (a partial redemption, e.g. a discount)
SpendPoints = Annotated[int, msgspec.Meta(ge=1, le=10_000_000)]
RequestId = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{32}\Z")]


class RedemptionRequestBody(_Body):
    """A till asks the central receiver to approve a reward for the member present (MQTT v5 request).

    Sent on ``{root}/{store}/{node}/request/redemption`` with a response topic and correlation data; it is
    not an event (never queued: a till that cannot ask now declines or uses the offline allowance).
    """

    request_id: RequestId
    reward: RewardId
    pos: PosId
    customer: SaleCustomer
    receipt: Receipt | None = None
    #: for a variable reward: how many points to spend
    points: SpendPoints | None = None


class RedemptionBody(_Body):
    """A reward was handed over: approved by the central receiver, or under the node's offline allowance.

    ``approval`` says which; an ``offline`` redemption is settled centrally when it arrives (the
    allowance is capped per member per day on the node).
    """

    request_id: RequestId
    reward: RewardId
    pos: PosId
    customer: SaleCustomer
    approval: Literal["central", "offline"]
    receipt: Receipt | None = None
    #: for a variable reward: the points spent
    points: SpendPoints | None = None


class RedemptionReply(_Body):
    """The central receiver's answer, on the node's reply topic (correlated by the MQTT v5 property)."""

    request_id: RequestId
    approved: bool
    #: why not (or a note when approved), e.g. "insufficient-points", "unknown-reward", "card-blocked"
    reason: Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9_-]{0,47}\Z")] | None = None
    #: the member's balance after the redemption, when the central receiver says
    points_balance: Minor | None = None


def decode_reply(payload: bytes) -> RedemptionReply:
    """Strictly decode a redemption reply; ``EnvelopeError`` names the problem."""
    try:
        return msgspec.json.decode(payload, type=RedemptionReply)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise EnvelopeError(f"redemption reply: {exc}") from exc


class PickupBody(_Body):
    """A reserved product was collected at this store's till (the cashier scanned the reservation code)."""

    code: Annotated[str, msgspec.Meta(pattern=r"^R[0-9]{8}\Z")]
    pos: PosId
    #: the sale's receipt, when the pick-up was paid at the till
    receipt: Receipt | None = None


class OutboxSummary(_Body):
    """The backlog as the node saw it when it sent a status message."""

    depth: Count
    bytes: Count
    oldest_age_s: Count


class StatusBody(_Body):
    """Periodic node heartbeat (``event/status``): low value, may be evicted when the outbox is full."""

    state: Literal["online", "degraded"]
    version: ShortText
    uptime_s: Count
    outbox: OutboxSummary
    alarms: Alarms
    devices: dict[ShortText, Literal["present", "absent", "simulated", "error"]]


class PresenceBody(_Body):
    """The retained message on ``{root}/{store}/{node}/status``; the broker's LWT sets it offline."""

    state: Literal["online", "offline"]
    reason: Literal["connected", "shutdown", "connection-lost", "alarm"]
    version: ShortText
    alarms: Alarms
    outbox: OutboxSummary | None = None


# -- central -> node: commands on {root}/{store}/{node}/cmd/{name} and replies on the node's reply topic --


class MemberInfo(_Body):
    """What a node may cache about the member behind ``token`` (memory only: a first name is personal).

    Pushed after each sale on ``cmd/member`` and returned by a member lookup. ``known`` false means the
    token is not a member (a card that has not joined): the kiosk invites to join.
    """

    token: Token
    known: bool
    member_code: Annotated[str, msgspec.Meta(pattern=r"^M[0-9]{10}\Z")] | None = None
    first_name: (
        Annotated[str, msgspec.Meta(min_length=1, max_length=40, pattern=r"^[^\x00-\x1f\x7f<>]*\Z")] | None
    ) = None
    tier: Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9_-]{1,32}\Z")] | None = None
    points: Minor = 0
    rewards: Annotated[list[RewardId], msgspec.Meta(max_length=32)] = msgspec.field(default_factory=list)
    #: the catalogue's display name of each reward offered
    reward_names: Annotated[
        dict[
            RewardId,
            Annotated[str, msgspec.Meta(min_length=1, max_length=60, pattern=r"^[^\x00-\x1f\x7f]*\Z")],
        ],
        msgspec.Meta(max_length=32),
    ] = msgspec.field(default_factory=dict)
    #: stamp cards in progress: card id -> (stamps, stamps needed)
    stamps: Annotated[
        dict[RewardId, Annotated[list[Count], msgspec.Meta(min_length=2, max_length=2)]],
        msgspec.Meta(max_length=16),
    ] = msgspec.field(default_factory=dict)
    blocked: bool = False


class MemberLookupRequest(_Body):
    """A node asks who is behind tokens it has no summary for (``request/member``, MQTT v5 request)."""

    request_id: RequestId
    tokens: Annotated[list[Token], msgspec.Meta(min_length=1, max_length=8)]


class MemberLookupReply(_Body):
    """The central receiver's answer to a ``MemberLookupRequest`` (one entry per token asked)."""

    request_id: RequestId
    members: Annotated[list[MemberInfo], msgspec.Meta(max_length=8)]


class EraseCommand(_Body):
    """``cmd/erase``: a member was erased centrally; the node forgets every token listed, at once."""

    member_token: Token
    tokens: Annotated[list[Token], msgspec.Meta(min_length=1, max_length=64)]


BODY_MODELS: dict[str, type[_Body]] = {
    "identity": IdentityBody,
    "assist": AssistBody,
    "signup": SignupBody,
    "reservation": ReservationBody,
    "survey": SurveyBody,
    "warranty": WarrantyBody,
    "sale": SaleBody,
    "redemption": RedemptionBody,
    "pickup": PickupBody,
    "redemption_request": RedemptionRequestBody,
    "member_lookup": MemberLookupRequest,
    "status": StatusBody,
    "presence": PresenceBody,
}

EVENT_CLASSES: dict[str, EventClass] = {
    "identity": EventClass.PROTECTED,
    "assist": EventClass.PROTECTED,
    "sale": EventClass.PROTECTED,
    "redemption": EventClass.PROTECTED,
    "pickup": EventClass.PROTECTED,
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
    """Check ``body`` strictly against its model and return it in canonical form (defaults omitted)."""
    model = BODY_MODELS.get(event_type)
    if model is None:
        raise EnvelopeError(f"unknown event type {event_type!r}")
    try:
        return msgspec.to_builtins(msgspec.convert(body, model, strict=True))  # type: ignore[no-any-return]
    except msgspec.ValidationError as exc:
        raise EnvelopeError(f"{event_type} body: {exc}") from exc
