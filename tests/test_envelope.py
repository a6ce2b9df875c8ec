"""The signed envelope: structure, UUIDv7 ids, canonical signing and rejection of anything tampered."""

from __future__ import annotations

import json
import uuid

import pytest
from nacl.signing import SigningKey

from cloud_sync.envelope import (
    MAX_PAYLOAD_BYTES,
    Signer,
    canonical_json,
    decode_public_key,
    encode_public_key,
    parse,
    verify,
)
from cloud_sync.errors import EnvelopeError, SignatureError
from cloud_sync.messages import validate_body

BODY = {"source": "nfc", "token": "ab" * 32, "device": "sim-reader"}


@pytest.fixture
def key() -> SigningKey:
    return SigningKey.generate()


def test_seal_and_verify_round_trip(key: SigningKey) -> None:
    message = Signer(key, "store-1", "node-1").seal("identity", 42, BODY)
    doc = verify(message.payload, key.verify_key)
    assert doc["schema"] == "retail.v1.identity" and doc["seq"] == 42 and doc["body"] == BODY
    assert (doc["store"], doc["node"]) == ("store-1", "node-1")
    assert uuid.UUID(doc["id"]).version == 7 and doc["id"] == message.id
    assert doc["ts"].endswith("Z")


def test_ids_are_time_ordered_and_unique(key: SigningKey) -> None:
    signer = Signer(key, "s", "n")
    ids = [signer.seal("identity", i, BODY).id for i in range(2000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)


def test_payload_is_canonical_json_plus_signature(key: SigningKey) -> None:
    payload = Signer(key, "s", "n").seal("identity", 1, BODY).payload
    doc = json.loads(payload)
    doc.pop("sig")
    assert canonical_json(doc) == json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.__setitem__("seq", d["seq"] + 1),
        lambda d: d["body"].__setitem__("token", "cd" * 32),
        lambda d: d.__setitem__("store", "other-store"),
        lambda d: d.__setitem__("sig", d["sig"][:-2] + ("AA" if d["sig"][-2:] != "AA" else "BB")),
    ],
)
def test_any_tampering_breaks_the_signature(key: SigningKey, mutate) -> None:  # type: ignore[no-untyped-def]
    doc = json.loads(Signer(key, "s", "n").seal("identity", 7, BODY).payload)
    mutate(doc)
    with pytest.raises(SignatureError):
        verify(json.dumps(doc).encode(), key.verify_key)


def test_wrong_key_is_rejected(key: SigningKey) -> None:
    payload = Signer(key, "s", "n").seal("identity", 1, BODY).payload
    with pytest.raises(SignatureError):
        verify(payload, SigningKey.generate().verify_key)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xff\xfe", "not UTF-8 JSON"),
        (b"[1,2]", "not a JSON object"),
        (b'{"schema":"retail.v1.identity"}', "lacks"),
        (b"{" + b'"a":"' + b"x" * MAX_PAYLOAD_BYTES + b'"}', "more than"),
    ],
)
def test_malformed_payloads(payload: bytes, reason: str) -> None:
    with pytest.raises(EnvelopeError, match=reason):
        parse(payload)


def test_structural_checks(key: SigningKey) -> None:
    good = json.loads(Signer(key, "s", "n").seal("identity", 1, BODY).payload)
    for member, value in [
        ("id", "not-a-uuid"),
        ("id", str(uuid.uuid4())),
        ("seq", -1),
        ("seq", True),
        ("ts", "2026-01-01T00:00:00+01:00"),
        ("store", "a/b"),
        ("node", "#"),
        ("body", []),
    ]:
        doc = dict(good, **{member: value})
        with pytest.raises(EnvelopeError, match=member.split()[0]):
            parse(json.dumps(doc).encode())
    with pytest.raises(EnvelopeError, match="unknown members evil"):
        parse(json.dumps(dict(good, evil=1)).encode())


def test_floats_are_refused_so_signing_stays_canonical(key: SigningKey) -> None:
    with pytest.raises(EnvelopeError, match="floating-point"):
        Signer(key, "s", "n").seal("identity", 1, {**BODY, "amount": 1.5})


def test_hostile_store_or_node_ids_cannot_reach_topics(key: SigningKey) -> None:
    for bad in ("a/b", "+", "#", "x" * 65, "", "a b", "../x", "é"):
        with pytest.raises(EnvelopeError):
            Signer(key, bad, "n")


def test_public_key_text_round_trip(key: SigningKey) -> None:
    text = encode_public_key(key.verify_key)
    assert text.startswith("ed25519:") and "\n" not in text
    payload = Signer(key, "s", "n").seal("identity", 1, BODY).payload
    verify(payload, decode_public_key(text))
    for bad in ("rsa:AAAA", "ed25519:***", "ed25519:" + "A" * 8):
        with pytest.raises(EnvelopeError):
            decode_public_key(bad)


@pytest.mark.parametrize(
    ("event_type", "body", "reason"),
    [
        ("identity", {**BODY, "token": "AB" * 32}, "token"),
        ("identity", {**BODY, "token": "ab" * 33}, "token"),
        ("identity", {**BODY, "uid": "04a1b2c3"}, "uid"),
        ("identity", {**BODY, "device": "<script>\x00"}, "device"),
        ("identity", {**BODY, "source": "magstripe"}, "source"),
        ("nonsense", {}, "unknown event type"),
    ],
)
def test_body_validation(event_type: str, body: dict[str, object], reason: str) -> None:
    with pytest.raises(EnvelopeError, match=reason):
        validate_body(event_type, body)
