"""The signed JSON envelope every node message travels in (DESIGN.md, "Envelope").

Signing scheme: Ed25519 over the *canonical* form of the envelope without its ``sig`` member, where
canonical means UTF-8 JSON with keys sorted, no insignificant whitespace and no floats. For documents
without floating-point numbers this is byte-identical to RFC 8785 (JCS), so any JCS implementation can
verify our messages; we forbid floats so that never stops being true. The signature travels inside the
payload (not in an MQTT v5 user property) so it survives bridges and is kept with dead-lettered bytes.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from nacl.bindings import crypto_sign, crypto_sign_seed_keypair
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey
from uuid_utils import uuid7

from cloud_sync.errors import EnvelopeError, SignatureError

SCHEMA_PREFIX = "retail.v1."
#: Largest payload a node sends or the central receiver accepts; bigger is malformed by definition.
MAX_PAYLOAD_BYTES = 64 * 1024
#: Store and node ids appear in MQTT topics: no wildcards, no separators, no control characters.
IDENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_UUID7_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
_TS_RE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?Z$")
_FIELDS = ("schema", "id", "store", "node", "seq", "ts", "body")


def canonical_json(obj: Any) -> bytes:
    """Serialise ``obj`` canonically (sorted keys, compact, UTF-8); floats are refused."""
    _reject_floats(obj)
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def _reject_floats(obj: Any) -> None:
    if isinstance(obj, float):
        raise EnvelopeError(
            "floating-point numbers are not allowed in messages (use integers, e.g. minor units)"
        )
    if isinstance(obj, dict):
        for value in obj.values():
            _reject_floats(value)
    elif isinstance(obj, list):
        for value in obj:
            _reject_floats(value)


def utc_timestamp(now: datetime | None = None) -> str:
    """RFC 3339 UTC with millisecond precision and a ``Z`` suffix, as the envelope's ``ts`` requires."""
    moment = now or datetime.now(UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_event_id() -> str:
    """A UUIDv7: time-ordered, so ids sort roughly by creation and index well centrally."""
    return str(uuid7())


def encode_public_key(key: VerifyKey) -> str:
    """The one-line text form of a node's public key used by ``keys show`` and the central registry."""
    return "ed25519:" + base64.b64encode(bytes(key)).decode()


def decode_public_key(text: str) -> VerifyKey:
    """Parse the ``ed25519:<base64>`` form; raises EnvelopeError with the reason on anything else."""
    prefix, _, b64 = text.strip().partition(":")
    if prefix != "ed25519" or not b64:
        raise EnvelopeError("public key must look like 'ed25519:<base64 of 32 bytes>'")
    try:
        raw = base64.b64decode(b64, validate=True)
    except ValueError as exc:
        raise EnvelopeError(f"public key is not valid base64: {exc}") from exc
    if len(raw) != 32:
        raise EnvelopeError(f"public key must be 32 bytes, got {len(raw)}")
    return VerifyKey(raw)


@dataclass(frozen=True, slots=True)
class SignedMessage:
    """A sealed envelope ready to publish: its identity and the exact bytes that go on the wire."""

    id: str
    seq: int
    ts: str
    schema: str
    payload: bytes


class Signer:
    """Builds and signs envelopes for one node; holds no mutable state, so any thread may use it."""

    def __init__(self, key: SigningKey, store: str, node: str) -> None:
        for name, value in (("store", store), ("node", node)):
            if not IDENT_RE.fullmatch(value):
                raise EnvelopeError(f"{name} id {value!r} is not a valid identifier")
        # Signing goes through libsodium (PyNaCl): cffi releases the GIL during the call, so producers
        # sign in parallel with the writer and the relay (cryptography's binding holds the GIL for the
        # ~35 us a signature costs here), and the node does not map cryptography's 7.5 MB Rust library.
        self._secret = crypto_sign_seed_keypair(key.encode())[1]
        self.store = store
        self.node = node

    def seal(
        self, event_type: str, seq: int, body: dict[str, Any], *, ts: str | None = None
    ) -> SignedMessage:
        """Wrap ``body`` in an envelope with a fresh UUIDv7 and sign it."""
        schema = SCHEMA_PREFIX + event_type
        event_id = new_event_id()
        stamp = ts or utc_timestamp()
        envelope = {
            "schema": schema,
            "id": event_id,
            "store": self.store,
            "node": self.node,
            "seq": seq,
            "ts": stamp,
            "body": body,
        }
        canonical = canonical_json(envelope)
        signature = base64.urlsafe_b64encode(crypto_sign(canonical, self._secret)[:64]).rstrip(b"=")
        # Append "sig" to the canonical bytes instead of serialising twice; verifiers drop it and
        # re-canonicalise, so its position does not matter.
        payload = canonical[:-1] + b',"sig":"' + signature + b'"}'
        return SignedMessage(event_id, seq, stamp, schema, payload)


def parse(payload: bytes) -> dict[str, Any]:
    """Decode and structurally check an envelope (not its signature); EnvelopeError names the problem."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise EnvelopeError(f"payload is {len(payload)} bytes, more than the {MAX_PAYLOAD_BYTES} allowed")
    try:
        doc = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EnvelopeError(f"payload is not UTF-8 JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise EnvelopeError("payload is not a JSON object")
    missing = [f for f in (*_FIELDS, "sig") if f not in doc]
    if missing:
        raise EnvelopeError(f"envelope lacks {', '.join(missing)}")
    extra = sorted(set(doc) - {*_FIELDS, "sig"})
    if extra:
        raise EnvelopeError(f"envelope has unknown members {', '.join(extra)}")
    checks = (
        (isinstance(doc["schema"], str) and doc["schema"].startswith(SCHEMA_PREFIX), "schema"),
        (isinstance(doc["id"], str) and _UUID7_RE.fullmatch(doc["id"]) is not None, "id (UUIDv7)"),
        (isinstance(doc["store"], str) and IDENT_RE.fullmatch(doc["store"]) is not None, "store"),
        (isinstance(doc["node"], str) and IDENT_RE.fullmatch(doc["node"]) is not None, "node"),
        (type(doc["seq"]) is int and doc["seq"] >= 0, "seq"),
        (isinstance(doc["ts"], str) and _TS_RE.fullmatch(doc["ts"]) is not None, "ts (RFC 3339 UTC)"),
        (isinstance(doc["body"], dict), "body"),
        (isinstance(doc["sig"], str), "sig"),
    )
    for ok, name in checks:
        if not ok:
            raise EnvelopeError(f"envelope member {name} is invalid")
    return doc


def verify(payload: bytes, public_key: VerifyKey) -> dict[str, Any]:
    """Parse ``payload`` and check its signature; returns the envelope without ``sig``."""
    doc = parse(payload)
    sig_text = doc.pop("sig")
    try:
        signature = base64.urlsafe_b64decode(sig_text + "=" * (-len(sig_text) % 4))
    except ValueError as exc:
        raise SignatureError("signature is not base64url") from exc
    try:
        public_key.verify(canonical_json(doc), signature)
    except (BadSignatureError, ValueError) as exc:
        raise SignatureError("signature does not verify for this node's key") from exc
    return doc
