"""The AsyncAPI document (docs/asyncapi.yaml) is valid, matches the message models and real messages."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import msgspec
import pytest
from nacl.signing import SigningKey

from cloud_sync.envelope import Signer, decode_public_key, verify
from cloud_sync.errors import EnvelopeError
from cloud_sync.loyalty import DEFAULT_RULES, EarnRules, Promotion, decode_rules, earn_rules_topic
from cloud_sync.messages import (
    BODY_MODELS,
    EraseCommand,
    MemberInfo,
    MemberLookupReply,
    RedemptionReply,
    decode_reply,
    validate_body,
)
from cloud_sync.outbox import Outbox
from tests.support.asyncapi import (
    DOC_PATH,
    ValidationError,
    decode_payload,
    is_envelope,
    iter_examples,
    load_document,
    message_kinds,
    message_schema,
    message_schema_for_topic,
    message_schemas_for_topic,
    payload_kind,
    route_for_topic,
    validate_message,
    validate_payload,
)

ROOT = Path(__file__).resolve().parents[1]
ASYNCAPI_CLI = ROOT / ".cache" / "node" / "node_modules" / ".bin" / "asyncapi"
TOKEN = "5667b1b2f50c865490aeecaa848ee121e4fb63646ae7828f8d9586b6b69f9a31"
CODE_TOKEN = "70ecec7933093034451539e2a4ec32aeb117d0ef33ab544c1f559ba8135fa392"
REQUEST_ID = "babef7885ef3488ba48f77eb49b22cb5"

BODIES: dict[str, dict[str, Any]] = {
    "identity": {"source": "nfc", "token": TOKEN, "device": "nfc0"},
    "assist": {"source": "kiosk", "device": "kiosk"},
    "status": {
        "state": "online",
        "version": "0.1.0",
        "uptime_s": 12,
        "outbox": {"depth": 1, "bytes": 420, "oldest_age_s": 0},
        "alarms": [],
        "devices": {"nfc": "simulated", "scanner": "absent", "button": "present"},
    },
    "presence": {"state": "online", "reason": "connected", "version": "0.1.0", "alarms": []},
    "signup": {
        "member_token": TOKEN,
        "consent": {
            "privacy_notice": True,
            "marketing_email": False,
            "marketing_sms": False,
            "notice_version": "2026-11",
        },
        "language": "nl",
        "sealed": "A" * 80,
        "vault_key": "0123456789abcdef",
    },
    "survey": {"score": 7, "language": "tr", "vault_key": "0123456789abcdef"},
    "warranty": {
        "serial": "SN-1",
        "receipt": "RC-0001",
        "language": "en",
        "vault_key": "0123456789abcdef",
        "member_token": TOKEN,
    },
    "reservation": {
        "code": "R00000427",
        "item": {"gtin": "04006381333931", "quantity": 2},
        "pickup_date": "2026-12-01",
        "language": "en",
        "sealed": "B" * 60,
        "vault_key": "0123456789abcdef",
    },
    "sale": {
        "receipt": "RC-2025-0001",
        "pos": "pos-01",
        "lines": [
            {
                "gtin": "04000417021236",
                "name": "Espressobohnen 1 kg",
                "quantity": 2,
                "unit_price": 1899,
                "category": "coffee",
            },
            {
                "sku": "TB-350",
                "name": "Thermobecher",
                "quantity": -1,
                "unit_price": 1250,
                "category": "homeware",
            },
        ],
        "total": 2348,
        "currency": "EUR",
        "payment": "card",
        "discount": 200,
        "sold_at": "2025-11-21T09:31:17.950Z",
        "customer": {"source": "nfc", "token": TOKEN, "code_token": CODE_TOKEN},
        "points": 23,
        "survey": True,
    },
    "redemption_request": {
        "request_id": REQUEST_ID,
        "reward": "free-coffee",
        "pos": "pos-01",
        "customer": {"source": "barcode", "token": TOKEN},
        "receipt": "RC-2025-0002",
    },
    "redemption": {
        "request_id": REQUEST_ID,
        "reward": "free-coffee",
        "pos": "pos-01",
        "customer": {"source": "nfc", "token": TOKEN, "code_token": CODE_TOKEN},
        "approval": "central",
        "receipt": "RC-2025-0002",
    },
    "pickup": {"code": "R00000427", "pos": "pos-01", "receipt": "RC-2025-0003"},
    "member_lookup": {"request_id": REQUEST_ID, "tokens": [TOKEN]},
}


#: Message kinds not published on ``{root}/{store}/{node}/event/{kind}``.
_TOPIC_LEAVES = {
    "presence": "status",
    "redemption_request": "request/redemption",
    "member_lookup": "request/member",
    "redemption_reply": "reply",
    "member_lookup_reply": "reply",
    "member_info": "cmd/member",
    "erase_command": "cmd/erase",
}
#: Message kinds on a chain-wide topic ``{root}/...``, with no store or node level.
_CHAIN_LEAVES = {"earn_rules": "config/earn-rules"}


def _topic(kind: str, store: str = "s1", node: str = "n1", root: str = "retail/v1") -> str:
    if kind in _CHAIN_LEAVES:
        return f"{root}/{_CHAIN_LEAVES[kind]}"
    return f"{root}/{store}/{node}/{_TOPIC_LEAVES.get(kind, f'event/{kind}')}"


# -- (a) the AsyncAPI project's own validator -------------------------------------------------------


def _run_cli(spec: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    if not ASYNCAPI_CLI.exists():
        pytest.fail(f"the AsyncAPI CLI is not installed at {ASYNCAPI_CLI}; run 'scripts/setup.sh --test'")
    if shutil.which("node") is None:
        pytest.fail("'node' is not on PATH (the AsyncAPI CLI needs Node.js); run 'scripts/setup.sh --test'")
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    analytics = tmp_path / "asyncapi-analytics.json"
    analytics.write_text(
        json.dumps({"analyticsEnabled": "false", "infoMessageShown": "true", "userID": "test"})
    )
    env = {
        **os.environ,
        "HOME": str(home),  # nothing of the CLI's state lands in the real home directory
        "ASYNCAPI_METRICS_CONFIG_PATH": str(analytics),  # analytics off: no first-run notice, no network
        "ASYNCAPI_SKIP_NEW_VERSION_CHECK": "true",  # oclif's npm update check would go to the network
        "SUPPRESS_NO_CONFIG_WARNING": "1",  # node-config noise on stderr
        "SUPPRESS_STRICTNESS_CHECK": "1",
        "NO_COLOR": "1",
    }
    env.pop("FORCE_COLOR", None)
    return subprocess.run(
        [str(ASYNCAPI_CLI), "validate", str(spec), "--fail-severity", "warn"],
        cwd=tmp_path,  # node-config would read a ./config directory of the working directory
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_document_passes_the_asyncapi_cli(tmp_path: Path) -> None:
    result = _run_cli(DOC_PATH, tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"asyncapi validate failed ({result.returncode}):\n{output}"
    assert "is valid" in result.stdout, output


def test_the_cli_check_is_not_vacuous(tmp_path: Path) -> None:
    broken = tmp_path / "asyncapi.yaml"
    text = DOC_PATH.read_text(encoding="utf-8")
    assert "        retain: true\n" in text
    broken.write_text(
        text.replace("        retain: true\n", "        retain: sometimes\n", 1), encoding="utf-8"
    )
    result = _run_cli(broken, tmp_path)
    assert result.returncode != 0, result.stdout + result.stderr
    assert "retain" in result.stdout, result.stdout + result.stderr


# -- the document agrees with the code ------------------------------------------------------------


def _decode_lookup_reply(payload: bytes) -> MemberLookupReply:
    return msgspec.json.decode(payload, type=MemberLookupReply)  # as edge.memberlookup does


def _decode_member_info(payload: bytes) -> MemberInfo:
    return msgspec.json.decode(payload, type=MemberInfo)  # as edge.node does for cmd/member


def _decode_erase(payload: bytes) -> EraseCommand:
    return msgspec.json.decode(payload, type=EraseCommand)  # as edge.node does for cmd/erase


#: Messages that are not envelopes (the central receiver's replies, commands and retained configuration);
#: how the node decodes each.
PLAIN_MESSAGES: dict[str, Callable[[bytes], msgspec.Struct]] = {
    "redemption_reply": decode_reply,
    "member_lookup_reply": _decode_lookup_reply,
    "member_info": _decode_member_info,
    "erase_command": _decode_erase,
    "earn_rules": decode_rules,  # as edge.node does for config/earn-rules
}


def test_document_covers_exactly_the_body_models() -> None:
    assert sorted(k for k in message_kinds() if is_envelope(k)) == sorted(BODY_MODELS)
    assert sorted(k for k in message_kinds() if not is_envelope(k)) == sorted(PLAIN_MESSAGES)


@pytest.mark.parametrize("kind", sorted(BODY_MODELS))
def test_schema_const_and_bindings(kind: str) -> None:
    doc = load_document()
    schema = message_schema(kind)
    assert schema["properties"]["schema"]["const"] == f"retail.v1.{kind}"
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {"schema", "id", "store", "node", "seq", "ts", "body", "sig"}
    (operation,) = [
        op
        for op in doc["operations"].values()
        if op["channel"]["$ref"].rsplit("/", 1)[-1] in _channel_keys(doc, kind)
    ]
    assert operation["action"] == "send"
    bindings = _deref(doc, operation["bindings"])["mqtt"]
    assert bindings["qos"] == 1
    assert bindings["retain"] is (kind == "presence")


#: (operation, request channel, request message, topic leaf, reply message)
REQUESTS = [
    (
        "requestRedemption",
        "redemptionRequest",
        "redemption_request",
        "request/redemption",
        "redemption_reply",
    ),
    ("requestMemberLookup", "memberLookupRequest", "member_lookup", "request/member", "member_lookup_reply"),
]


@pytest.mark.parametrize(("name", "channel", "kind", "leaf", "reply_kind"), REQUESTS)
def test_request_and_reply(name: str, channel: str, kind: str, leaf: str, reply_kind: str) -> None:
    """Each request operation is an MQTT v5 request whose reply comes on the node's reply topic."""
    doc = load_document()
    operation = doc["operations"][name]
    assert operation["action"] == "send"
    assert operation["channel"] == {"$ref": f"#/channels/{channel}"}
    assert operation["messages"] == [{"$ref": f"#/channels/{channel}/messages/{kind}"}]
    bindings = _deref(doc, operation["bindings"])["mqtt"]
    assert (bindings["qos"], bindings["retain"], bindings["messageExpiryInterval"]) == (1, False, 3)
    reply = operation["reply"]
    assert reply["channel"] == {"$ref": "#/channels/reply"}
    assert "address" not in reply  # the reply topic is fixed per node: the channel's address says it
    reply_channel = doc["channels"]["reply"]
    # Exactly this request's answer, one of the reply channel's messages (the CLI does not check that).
    assert reply["messages"] == [{"$ref": f"#/channels/reply/messages/{reply_kind}"}]
    assert reply_kind in reply_channel["messages"]
    assert reply_channel["address"] == "{root}/{store}/{node}/reply"
    assert doc["channels"][channel]["address"] == "{root}/{store}/{node}/" + leaf
    request = _deref(doc, doc["components"]["messages"][kind]["bindings"])["mqtt"]
    assert request["responseTopic"] == reply_channel["address"]
    answer = _deref(doc, doc["components"]["messages"][reply_kind]["bindings"])["mqtt"]
    assert _deref(doc, request["correlationData"]) == _deref(doc, answer["correlationData"])
    assert _deref(doc, answer["correlationData"])["maxLength"] == len(uuid.uuid4().bytes)
    assert is_envelope(kind)
    assert not is_envelope(reply_kind)
    assert message_schema(reply_kind)["additionalProperties"] is False


def test_reply_channel_carries_the_answer_of_every_request() -> None:
    doc = load_document()
    assert sorted(doc["channels"]["reply"]["messages"]) == sorted(r[-1] for r in REQUESTS)
    # Nobody publishes a reply but the central receiver: no operation of the node is on that channel.
    assert not [op for op in doc["operations"].values() if op["channel"]["$ref"] == "#/channels/reply"]


def test_request_channels_are_the_central_receivers_request_kinds() -> None:
    """The central receiver answers request/{kind} with the envelope schema its REQUEST_KINDS names."""
    from cloud_sync.central.responder import REQUEST_KINDS

    documented = {leaf.removeprefix("request/"): kind for _, _, kind, leaf, _ in REQUESTS}
    assert documented == REQUEST_KINDS
    addresses = [c["address"] for c in load_document()["channels"].values()]
    assert sorted(a for a in addresses if "/request/" in a) == sorted(
        f"{{root}}/{{store}}/{{node}}/request/{leaf}" for leaf in REQUEST_KINDS
    )


#: (operation, channel, message, topic leaf, the node's model)
COMMANDS = [
    ("receiveMemberInfo", "memberCommand", "member_info", "cmd/member", MemberInfo),
    ("receiveErase", "eraseCommand", "erase_command", "cmd/erase", EraseCommand),
]


@pytest.mark.parametrize(("name", "channel", "kind", "leaf", "model"), COMMANDS)
def test_commands_are_received_by_the_node(
    name: str, channel: str, kind: str, leaf: str, model: type
) -> None:
    doc = load_document()
    operation = doc["operations"][name]
    assert operation["action"] == "receive"
    assert operation["channel"] == {"$ref": f"#/channels/{channel}"}
    assert operation["messages"] == [{"$ref": f"#/channels/{channel}/messages/{kind}"}]
    bindings = _deref(doc, operation["bindings"])["mqtt"]
    assert (bindings["qos"], bindings["retain"]) == (1, False)
    assert doc["channels"][channel]["address"] == "{root}/{store}/{node}/" + leaf
    assert list(doc["channels"][channel]["messages"]) == [kind]
    # Only the central receiver publishes commands: the node has no other operation on the channel.
    assert [op for op in doc["operations"].values() if op["channel"]["$ref"] == f"#/channels/{channel}"] == [
        operation
    ]
    assert not is_envelope(kind)
    assert PLAIN_MESSAGES[kind](json.dumps(_example(kind)).encode()).__class__ is model


#: The model of each message's payload (of its body, for an envelope).
_MODELS: dict[str, type[msgspec.Struct]] = {
    **BODY_MODELS,
    "redemption_reply": RedemptionReply,
    "member_lookup_reply": MemberLookupReply,
    "member_info": MemberInfo,
    "erase_command": EraseCommand,
    "earn_rules": EarnRules,
}


@pytest.mark.parametrize("kind", sorted(message_kinds()))
def test_schema_members_are_the_models_fields(kind: str) -> None:
    """Each payload (or body) schema has exactly the model's members, and requires just its required ones."""
    doc = load_document()
    schema = message_schema(kind)
    if is_envelope(kind):
        schema = _deref(doc, schema["properties"]["body"])
    fields = msgspec.structs.fields(_MODELS[kind])
    assert schema["additionalProperties"] is False
    assert sorted(schema["properties"]) == sorted(f.encode_name for f in fields)
    assert sorted(schema.get("required", [])) == sorted(f.encode_name for f in fields if f.required)


def test_every_command_the_node_handles_is_documented() -> None:
    """The command names ``edge.node`` dispatches on are exactly the document's ``cmd/`` channels."""
    source = (ROOT / "edge" / "node.py").read_text(encoding="utf-8")
    handler = source[source.index("def _on_command(") :]
    handler = handler[: handler.index("\n    def ")]
    handled = set(re.findall(r'name == "([a-z0-9_-]+)"', handler))
    addresses = [c["address"] for c in load_document()["channels"].values()]
    documented = {a.rsplit("/", 1)[1] for a in addresses if a.startswith("{root}/{store}/{node}/cmd/")}
    assert handled == documented == {leaf.removeprefix("cmd/") for _, _, _, leaf, _ in COMMANDS}


def _channel_keys(doc: dict[str, Any], kind: str) -> set[str]:
    return {key for key, channel in doc["channels"].items() if kind in channel["messages"]}


def _deref(doc: dict[str, Any], node: Any) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        target: Any = doc
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


@pytest.mark.parametrize("kind", sorted(message_kinds()))
def test_topic_maps_to_its_message(kind: str) -> None:
    schemas = message_schemas_for_topic(_topic(kind))
    assert schemas[kind] == message_schema(kind)
    assert (
        message_schemas_for_topic(_topic(kind, root="chain-a/retail/v2"), root="chain-a/retail/v2") == schemas
    )
    if _topic(kind).endswith("/reply"):  # the answers to every kind of request share the reply topic
        assert sorted(schemas) == ["member_lookup_reply", "redemption_reply"]
        with pytest.raises(ValueError, match="several messages"):
            message_schema_for_topic(_topic(kind))
    else:
        assert list(schemas) == [kind]
        assert message_schema_for_topic(_topic(kind)) == message_schema(kind)
        assert route_for_topic(_topic(kind)).kind == kind


@pytest.mark.parametrize(
    ("topic", "kind"),
    [
        ("retail/v1/de-ber-017/till-02/request/member", "member_lookup"),
        ("retail/v1/de-ber-017/till-02/request/redemption", "redemption_request"),
        ("retail/v1/de-ber-017/till-02/cmd/member", "member_info"),
        ("retail/v1/de-ber-017/till-02/cmd/erase", "erase_command"),
        ("retail/v1/de-ber-017/till-02/event/identity", "identity"),
        ("retail/v1/de-ber-017/till-02/status", "presence"),
    ],
)
def test_new_topics_map_to_their_message(topic: str, kind: str) -> None:
    route = route_for_topic(topic)
    assert (route.kinds, route.store, route.node) == ((kind,), "de-ber-017", "till-02")


@pytest.mark.parametrize(
    "topic",
    [
        "retail/v1/s1/n1/event/telemetry",  # an outbox class, but not (yet) in the document
        "retail/v1/+/n1/event/identity",
        "retail/v1/s1/#",
        "retail/v1/s1/n1/x/event/identity",
        "retail/v1/s1/n1/status/extra",
        "retail/v2/s1/n1/status",  # another root than the configured one
        "retail/v1/-s1/n1/status",
        "retail/v1/s1/n1/event/identity\n",
        "retail/v1/s1/n1/event/redemption_request",  # a request, not an event
        "retail/v1/s1/n1/request/sale",
        "retail/v1/s1/n1/request/redemption/x",
        "retail/v1/s1/n1/reply/redemption",
        "retail/v1/+/n1/reply",
        "retail/v1/s1/reply",
        "retail/v1/s1/n1/request/member/x",
        "retail/v1/s1/n1/request/members",
        "retail/v1/s1/n1/event/member_lookup",  # a request, not an event
        "retail/v1/s1/n1/request/member_lookup",
        "retail/v1/s1/n1/cmd",
        "retail/v1/s1/n1/cmd/",
        "retail/v1/s1/n1/cmd/+",
        "retail/v1/s1/n1/cmd/#",
        "retail/v1/s1/n1/cmd/reboot",  # a command the document (and the node) does not know
        "retail/v1/s1/n1/cmd/member/x",
        "retail/v1/s1/n1/cmd/erase\n",
        "retail/v1/s1/n1/cmd/member_info",
        "retail/v1/+/n1/cmd/member",
        "retail/v1/s1/+/cmd/erase",
        "retail/v1/s1/cmd/member",
        "retail/v1/s1/n1/event/member",
        "retail/v1/s1/n1/event/erase",
        "retail/v1/config/earn-rules/x",
        "retail/v1/config/earn_rules",
        "retail/v1/config/earn-rules\n",
        "retail/v1/config/+",
        "retail/v1/config/#",
        "retail/v1/config",
        "retail/v1/config/loyalty",  # configuration the document (and the node) does not know
        "retail/v2/config/earn-rules",  # another root
        "retail/config/earn-rules",
        "config/earn-rules",
        "retail/v1/s1/config/earn-rules",  # chain-wide: no store level
        "retail/v1/s1/n1/config/earn-rules",
        "retail/v1/s1/n1/cmd/earn-rules",
        "retail/v1/s1/n1/event/earn_rules",
    ],
)
def test_unknown_or_malformed_topics_are_refused(topic: str) -> None:
    with pytest.raises(ValidationError):
        route_for_topic(topic)


# -- (b) every example is valid, and really signed --------------------------------------------------


def _example(kind: str, name: str | None = None) -> dict[str, Any]:
    """A deep copy of the first example of ``kind`` (or the one called ``name``)."""
    found = next(e for e in iter_examples() if e.kind == kind and name in (None, e.name))
    return copy.deepcopy(found.payload)


def _sets_sorted(kind: str, doc: Any) -> Any:
    """``doc`` with the JSON arrays that hold a set sorted (msgspec encodes a frozenset in hash order)."""
    if kind != "earn_rules":
        return doc
    doc = copy.deepcopy(doc)
    if "excluded_categories" in doc:
        doc["excluded_categories"] = sorted(doc["excluded_categories"])
    for promotion in doc.get("promotions", []):
        if "categories" in promotion:
            promotion["categories"] = sorted(promotion["categories"])
    return doc


def _examples() -> list[Any]:
    return [pytest.param(e, id=f"{e.kind}-{e.name}") for e in iter_examples()]


def test_every_message_has_examples() -> None:
    assert {e.kind for e in iter_examples()} == set(message_kinds())


@pytest.mark.parametrize("example", _examples())
def test_example_validates(example: Any) -> None:
    payload = example.payload
    validate_message(example.kind, payload)
    if not is_envelope(example.kind):
        # A plain message: what the node's model makes of it, and gives back unchanged.
        raw = json.dumps(payload, ensure_ascii=False).encode()
        assert payload_kind(_topic(example.kind, "de-ber-017", "till-02"), raw) == example.kind
        decoded = PLAIN_MESSAGES[example.kind](raw)
        assert _sets_sorted(example.kind, json.loads(msgspec.json.encode(decoded))) == payload
        return
    topic = _topic(example.kind, payload["store"], payload["node"])
    assert payload_kind(topic, json.dumps(payload).encode()) == example.kind
    # The body is exactly what the message model produces, and the signature verifies with the
    # example key the document publishes.
    assert validate_body(example.kind, payload["body"]) == payload["body"]
    key = decode_public_key(load_document()["info"]["x-example-public-key"])
    assert verify(json.dumps(payload).encode(), key)["id"] == payload["id"]
    assert uuid.UUID(payload["id"]).version == 7


# -- (c) real envelopes -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def signing_key() -> SigningKey:
    return SigningKey.generate()


@pytest.mark.parametrize(
    ("store", "node"), [("s1", "n1"), ("de-ber-017", "till-02"), ("A" * 64, "x.y_z-9"), ("0", "0")]
)
@pytest.mark.parametrize("kind", sorted(BODY_MODELS))
def test_sealed_envelopes_validate(kind: str, store: str, node: str, signing_key: SigningKey) -> None:
    signer = Signer(signing_key, store, node)
    body = validate_body(kind, BODIES[kind])
    for seq in (0, 1, 2**53):
        message = signer.seal(kind, seq, body)
        doc = validate_payload(_topic(kind, store, node), message.payload)
        assert doc["seq"] == seq
        assert verify(message.payload, signing_key.verify_key)["body"] == body


def test_non_ascii_text_validates(signing_key: SigningKey) -> None:
    signer = Signer(signing_key, "s1", "n1")
    body = validate_body(
        "status", {**BODIES["status"], "devices": {"Kassenleser Süd": "present", "📷": "error"}}
    )
    message = signer.seal("status", 7, body)
    assert "Süd".encode() in message.payload  # raw UTF-8 on the wire, not \\u escapes
    validate_payload("retail/v1/s1/n1/event/status", message.payload)


def test_outbox_rows_and_presence_validate(tmp_path: Path, signing_key: SigningKey) -> None:
    """What the outbox stores (topic and payload bytes) is what the document describes."""
    kinds = ["identity", "assist", "status", "sale", "redemption", "pickup"]
    with Outbox(tmp_path / "outbox.sqlite3", Signer(signing_key, "s1", "n1"), "retail/v1") as outbox:
        for kind in kinds:
            outbox.accept(kind, BODIES[kind])
        presence = outbox.seal_presence(validate_body("presence", BODIES["presence"]))
        request = outbox.seal_request("redemption_request", BODIES["redemption_request"])
        lookup = outbox.seal_request("member_lookup", BODIES["member_lookup"])
        reader = outbox.reader()
        try:
            rows = reader.fetch_after(0, 10)
        finally:
            reader.close()
    assert [route_for_topic(row.topic).kind for row in rows] == kinds
    for row in rows:
        validate_payload(row.topic, row.payload)
    doc = validate_payload("retail/v1/s1/n1/status", presence.payload)
    assert doc["seq"] == rows[-1].seq  # presence carries the highest event seq allocated
    doc = validate_payload("retail/v1/s1/n1/request/redemption", request.payload)
    assert doc["seq"] == rows[-1].seq  # so does a request: it is not an event
    doc = validate_payload("retail/v1/s1/n1/request/member", lookup.payload)
    assert doc["seq"] == rows[-1].seq


# -- the body schemas mirror the message models ----------------------------------------------------

#: Marks a member to remove (in ``_both`` and ``HOSTILE``).
_DELETE = object()
_CTRL = "nfc0\n"
_SALE = BODIES["sale"]
_GTIN_LINE = _SALE["lines"][0]
_SKU_LINE = _SALE["lines"][1]


def _sale_line(**changes: Any) -> dict[str, Any]:
    """The sale with its first line changed (a value of None removes that member)."""
    line = {k: v for k, v in {**_GTIN_LINE, **changes}.items() if v is not None}
    return {**_SALE, "lines": [line, *_SALE["lines"][1:]]}


#: Sale bodies both the model and the schema refuse (``test_refused_sale_bodies`` checks the model side).
SALE_REFUSED: list[dict[str, Any]] = [
    _sale_line(sku="ART-1"),  # both gtin and sku
    _sale_line(gtin=None),  # neither
    _sale_line(quantity=0),
    _sale_line(quantity=10000),
    _sale_line(quantity=-10000),
    _sale_line(quantity=True),
    _sale_line(unit_price=18.99),  # a float price
    _sale_line(unit_price=1899.0),
    _sale_line(unit_price=-1),
    _sale_line(unit_price=100_000_001),
    _sale_line(unit_price="1899"),
    _sale_line(gtin="4000417021236"),  # 13 digits: the node pads to 14
    _sale_line(gtin="0400041702123\n"),
    _sale_line(gtin=None, sku="<script>"),
    _sale_line(gtin=None, sku="-ART"),
    _sale_line(category="Coffee"),
    _sale_line(category=""),
    _sale_line(name=""),
    _sale_line(name="n" * 121),
    _sale_line(name="Espresso\x07"),  # control characters: C0, DEL, C1, line/paragraph separators
    _sale_line(name="Espresso\n"),
    _sale_line(name="Espresso\t1 kg"),
    _sale_line(name="Espresso\x7f"),
    _sale_line(name="Espresso\x85"),
    _sale_line(name="Espresso\x9b31m"),
    _sale_line(name="Espresso\u2028"),
    _sale_line(name="Espresso\u2029"),
    _sale_line(name=5),
    _sale_line(price=1899),  # unknown member in a line
    {**_SALE, "lines": []},
    {**_SALE, "lines": [_SKU_LINE] * 501},
    {**_SALE, "lines": _SKU_LINE},
    {k: v for k, v in _SALE.items() if k != "lines"},
    {k: v for k, v in _SALE.items() if k != "receipt"},
    {k: v for k, v in _SALE.items() if k != "total"},
    {**_SALE, "receipt": "RC 0001"},
    {**_SALE, "receipt": "RC-0001\n"},
    {**_SALE, "receipt": "RC1"},
    {**_SALE, "receipt": "R" * 49},
    {**_SALE, "pos": "pos 1"},
    {**_SALE, "pos": "-pos"},
    {**_SALE, "pos": ""},
    {**_SALE, "currency": "eur"},
    {**_SALE, "currency": "EURO"},
    {**_SALE, "currency": "EU"},
    {**_SALE, "payment": "crypto"},
    {**_SALE, "total": 2348.0},
    {**_SALE, "total": "2348"},
    {**_SALE, "total": 10**12 + 1},
    {**_SALE, "total": -(10**12) - 1},
    {**_SALE, "discount": -1},
    {**_SALE, "discount": 1_000_000_001},
    {**_SALE, "points": 21.0},
    {**_SALE, "points": 10**12 + 1},
    {**_SALE, "survey": "yes"},
    {**_SALE, "survey": 1},
    {**_SALE, "sold_at": "2025-11-21T09:31:17.950+00:00"},
    {**_SALE, "sold_at": "2025-11-21 09:31:17.950Z"},
    {**_SALE, "sold_at": "2025-11-21T09:31:17.950Z\n"},
    {**_SALE, "sold_at": 1763717477},
    {**_SALE, "customer": {"source": "manual", "token": TOKEN}},
    {**_SALE, "customer": {"source": "typed", "token": TOKEN.upper()}},
    {**_SALE, "customer": {"source": "typed"}},
    {**_SALE, "customer": {"source": "nfc", "token": TOKEN, "uid": "04a224e2b55c80"}},  # raw UID: refused
    {**_SALE, "customer": {"source": "barcode", "token": TOKEN, "code_token": TOKEN[:-1]}},
    {**_SALE, "member_name": "Ayşe"},  # unknown member; and personal data has no place here
    {**_SALE, "note": "x"},
]

_ASK = BODIES["redemption_request"]
_GIVEN = BODIES["redemption"]


def _both(**changes: Any) -> list[tuple[str, dict[str, Any]]]:
    """The request and the redemption body with ``changes`` (a value of _DELETE removes that member)."""
    return [
        (kind, {k: v for k, v in {**body, **changes}.items() if v is not _DELETE})
        for kind, body in (("redemption_request", _ASK), ("redemption", _GIVEN))
    ]


#: Redemption bodies (request and event) both the models and the schemas refuse.
REDEMPTION_REFUSED: list[tuple[str, dict[str, Any]]] = [
    # bad request_id
    *_both(request_id=REQUEST_ID.upper()),
    *_both(request_id=REQUEST_ID[:-1]),
    *_both(request_id=REQUEST_ID + "0"),
    *_both(request_id=str(uuid.UUID(REQUEST_ID))),  # the dashed form
    *_both(request_id=REQUEST_ID[:-1] + "\n"),
    *_both(request_id=REQUEST_ID + "\n"),
    *_both(request_id="\uff10" * 32),  # fullwidth digits
    *_both(request_id=int(REQUEST_ID, 16)),
    *_both(request_id=""),
    *_both(request_id=_DELETE),
    # a reward id of an unknown shape
    *_both(reward="Free-Coffee"),
    *_both(reward="free coffee"),
    *_both(reward="-coffee"),
    *_both(reward="_coffee"),
    *_both(reward=""),
    *_both(reward="r" * 33),
    *_both(reward="café"),
    *_both(reward="free-coffee\n"),
    *_both(reward={"id": "free-coffee"}),
    *_both(reward=["free-coffee"]),
    *_both(reward=7),
    *_both(reward=_DELETE),
    # no customer, or not a proper one
    *_both(customer=_DELETE),
    *_both(customer={}),
    *_both(customer={"source": "typed"}),
    *_both(customer={"token": TOKEN}),
    *_both(customer={"source": "manual", "token": TOKEN}),
    *_both(customer={"source": "nfc", "token": TOKEN.upper()}),
    *_both(customer={"source": "nfc", "token": TOKEN, "uid": "04a224e2b55c80"}),  # raw UID: refused
    *_both(customer=TOKEN),
    # points (a partial redemption): an integer from 1 to 10,000,000
    *_both(points=0),
    *_both(points=-1),
    *_both(points=-50),
    *_both(points=10_000_001),
    *_both(points=10**30),
    *_both(points=1.5),
    *_both(points=500.0),
    *_both(points=True),
    *_both(points=False),
    *_both(points="5"),
    *_both(points="500"),
    *_both(points=[500]),
    *_both(points={"points": 500}),
    # unknown members
    *_both(member_name="Ayşe"),
    *_both(approved=True),
    ("redemption_request", {**_ASK, "approval": "central"}),  # the request does not know yet
    # the approval is one of the enum, and the event must say it
    ("redemption", {**_GIVEN, "approval": "manual"}),
    ("redemption", {**_GIVEN, "approval": "Central"}),
    ("redemption", {**_GIVEN, "approval": "central\n"}),
    ("redemption", {**_GIVEN, "approval": ""}),
    ("redemption", {**_GIVEN, "approval": True}),
    ("redemption", {**_GIVEN, "approval": None}),
    ("redemption", {k: v for k, v in _GIVEN.items() if k != "approval"}),
    # hostile strings in the POS id and the receipt
    *_both(pos="pos 1"),
    *_both(pos="pos-01\n"),
    *_both(pos="pos/01"),
    *_both(pos="pos+01"),
    *_both(pos="-pos"),
    *_both(pos="p" * 65),
    *_both(pos=""),
    *_both(pos=_DELETE),
    *_both(receipt="<script>alert(1)</script>"),
    *_both(receipt="RC-0001'; DROP TABLE ledger; --"),
    *_both(receipt="RC-0001\n"),
    *_both(receipt="RC-0001\x00"),
    *_both(receipt="RC-0001\u2028"),
    *_both(receipt="RC1"),
    *_both(receipt="R" * 49),
    *_both(receipt=1234),
]

_PICKUP = BODIES["pickup"]


def _pickup(**changes: Any) -> dict[str, Any]:
    """The pick-up body with ``changes`` (a value of _DELETE removes that member)."""
    return {k: v for k, v in {**_PICKUP, **changes}.items() if v is not _DELETE}


#: Pick-up bodies both the model and the schema refuse (``test_refused_pickup_bodies``: the model side).
PICKUP_REFUSED: list[dict[str, Any]] = [
    # a code of another shape: R + 8 ASCII digits (7 + the check digit), upper case, nothing around it
    _pickup(code="r00000427"),  # lower case: the node upper-cases what the till sends before recording
    _pickup(code="R000004270"),  # 9 digits
    _pickup(code="R0000042"),  # 7 digits: the check digit missing
    _pickup(code="00000427"),
    _pickup(code="RR0000427"),
    _pickup(code="M0000000427"),  # a member code
    _pickup(code="R 0000042 7"),
    _pickup(code="R-0000042-7"),
    _pickup(code="R0000042x"),
    _pickup(code=" R00000427"),
    _pickup(code="R00000427\n"),
    _pickup(code="R00000427\x00"),
    _pickup(code="R" + "\uff10" * 7 + "\uff17"),  # fullwidth digits
    _pickup(code="R" + "\u0660" * 7 + "\u0667"),  # Arabic-Indic digits
    _pickup(code=""),
    _pickup(code=427),
    _pickup(code=["R00000427"]),
    _pickup(code=None),
    _pickup(code=_DELETE),
    # the POS id: required, an identifier
    _pickup(pos=_DELETE),
    _pickup(pos=None),
    _pickup(pos=""),
    _pickup(pos="pos 1"),
    _pickup(pos="-pos"),
    _pickup(pos="p" * 65),
    _pickup(pos=1),
    # unknown members: the reservation's own members, personal data, a customer
    _pickup(item={"gtin": "04006381333931", "quantity": 2}),
    _pickup(pickup_date="2025-11-23"),
    _pickup(name="Jan"),
    _pickup(member_token=TOKEN),
    _pickup(customer={"source": "nfc", "token": TOKEN}),
    _pickup(picked_up_at="2025-11-21T09:36:47.118Z"),
    _pickup(Code="R00000427"),
    # a bad receipt
    _pickup(receipt="RC 0003"),
    _pickup(receipt="RC1"),
    _pickup(receipt="R" * 49),
    _pickup(receipt=""),
    _pickup(receipt="RC-0003\n"),
    _pickup(receipt="RC_0003"),
    _pickup(receipt="RC-0003ü"),
    _pickup(receipt=1234),
    _pickup(receipt=["RC-2025-0003"]),
    # hostile strings
    _pickup(code="R00000427'; DROP TABLE pickups; --"),
    _pickup(code="<script>alert(1)</script>"),
    _pickup(code="R00000427\u2028"),
    _pickup(pos="pos-01\n"),
    _pickup(pos="pos/01"),
    _pickup(pos="pos+01"),
    _pickup(pos="pos#01"),
    _pickup(pos="pos-01\u2028"),
    _pickup(pos="pos-01\x1b[2J"),
    _pickup(receipt="<script>alert(1)</script>"),
    _pickup(receipt="RC-0003'; DROP TABLE ledger; --"),
    _pickup(receipt="RC-0003\x00"),
    _pickup(receipt="RC-0003\u2029"),
    _pickup(receipt="../../etc/passwd"),
]

_LOOKUP = BODIES["member_lookup"]


def _lookup(**changes: Any) -> dict[str, Any]:
    """The member lookup body with ``changes`` (a value of _DELETE removes that member)."""
    return {k: v for k, v in {**_LOOKUP, **changes}.items() if v is not _DELETE}


#: Member lookup bodies both the model and the schema refuse (``test_refused_lookup_bodies``: the model).
LOOKUP_REFUSED: list[dict[str, Any]] = [
    # 1 to 8 tokens
    _lookup(tokens=[]),
    _lookup(tokens=[TOKEN] * 9),
    _lookup(tokens=[TOKEN] * 1000),
    _lookup(tokens=_DELETE),
    _lookup(tokens=None),
    _lookup(tokens=TOKEN),  # a token, not a list of them
    _lookup(tokens={"token": TOKEN}),
    # each a token: 64 lower-case hex digits, nothing else
    _lookup(tokens=[TOKEN.upper()]),
    _lookup(tokens=[TOKEN[:-1]]),
    _lookup(tokens=[TOKEN + "0"]),
    _lookup(tokens=[TOKEN + "\n"]),
    _lookup(tokens=[TOKEN[:-1] + "\n"]),
    _lookup(tokens=[TOKEN, ""]),
    _lookup(tokens=[TOKEN, None]),
    _lookup(tokens=[int(TOKEN, 16)]),
    _lookup(tokens=[1.5]),  # a float
    _lookup(tokens=["04a224e2b55c80"]),  # a raw card UID
    _lookup(tokens=["M1042000315"]),  # a raw member code
    _lookup(tokens=["<script>alert(1)</script>"]),
    _lookup(tokens=["\uff10" * 64]),  # fullwidth digits
    # the request id
    _lookup(request_id=_DELETE),
    _lookup(request_id=REQUEST_ID.upper()),
    _lookup(request_id=str(uuid.UUID(REQUEST_ID))),
    _lookup(request_id=REQUEST_ID + "\n"),
    # unknown members: another request's, the answer's, personal data
    _lookup(token=TOKEN),
    _lookup(members=[]),
    _lookup(customer={"source": "nfc", "token": TOKEN}),
    _lookup(first_name="Ayşe"),
    _lookup(uid="04a224e2b55c80"),
]

BODY_CASES: list[tuple[str, dict[str, Any]]] = [
    ("identity", {"source": "barcode", "token": TOKEN, "device": "scanner0"}),
    ("identity", {"source": "NFC", "token": TOKEN, "device": "nfc0"}),
    ("identity", {"source": "qr", "token": TOKEN, "device": "nfc0"}),
    ("identity", {"source": "nfc", "token": TOKEN.upper(), "device": "nfc0"}),
    ("identity", {"source": "nfc", "token": TOKEN[:-1], "device": "nfc0"}),
    ("identity", {"source": "nfc", "token": TOKEN + "0", "device": "nfc0"}),
    ("identity", {"source": "nfc", "token": TOKEN[:-1] + "\n", "device": "nfc0"}),
    ("identity", {"source": "nfc", "token": TOKEN + "\n", "device": "nfc0"}),
    ("identity", {"source": "nfc", "token": TOKEN, "device": ""}),
    ("identity", {"source": "nfc", "token": TOKEN, "device": "d" * 64}),
    ("identity", {"source": "nfc", "token": TOKEN, "device": "d" * 65}),
    ("identity", {"source": "nfc", "token": TOKEN, "device": _CTRL}),
    ("identity", {"source": "nfc", "token": TOKEN, "device": "nfc\x7f"}),
    ("identity", {"source": "nfc", "token": TOKEN, "device": "Leser Süd ✓"}),
    ("identity", {"source": "nfc", "token": TOKEN, "device": "🙂" * 64}),
    ("identity", {"source": "nfc", "token": TOKEN}),
    ("identity", {"source": "nfc", "token": TOKEN, "device": "nfc0", "uid": "04a224e2b55c80"}),
    ("identity", {"source": "nfc", "token": 5, "device": "nfc0"}),
    ("signup", {**BODIES["signup"], "card_token": TOKEN, "heard_via": "friend"}),
    ("signup", {**BODIES["signup"], "consent": {**BODIES["signup"]["consent"], "privacy_notice": False}}),
    ("signup", {**BODIES["signup"], "heard_via": "tv"}),
    ("signup", {**BODIES["signup"], "language": "fr"}),
    ("signup", {**BODIES["signup"], "sealed": "short"}),
    ("signup", {**BODIES["signup"], "sealed": "A" * 79 + "="}),
    ("signup", {**BODIES["signup"], "first_name": "Ayşe"}),  # personal data outside the box: refused
    ("signup", {**BODIES["signup"], "vault_key": "0123456789ABCDEF"}),
    ("reservation", {**BODIES["reservation"], "item": {"sku": "ART-1234"}}),
    ("reservation", {**BODIES["reservation"], "item": {"gtin": "04006381333931", "sku": "X"}}),
    ("reservation", {**BODIES["reservation"], "item": {"quantity": 1}}),
    ("reservation", {**BODIES["reservation"], "item": {"gtin": "4006381333931"}}),
    ("reservation", {**BODIES["reservation"], "item": {"sku": "<script>"}}),
    ("reservation", {**BODIES["reservation"], "item": {"gtin": "04006381333931", "quantity": 21}}),
    ("reservation", {**BODIES["reservation"], "code": "M0000000427"}),
    ("reservation", {**BODIES["reservation"], "name": "Jan"}),  # personal data outside the box
    ("survey", {**BODIES["survey"], "score": 11}),
    ("survey", {**BODIES["survey"], "score": -1}),
    ("survey", {**BODIES["survey"], "comment": "plain text outside the box"}),
    ("survey", {**BODIES["survey"], "receipt": "RC 1"}),
    ("warranty", {**{k: v for k, v in BODIES["warranty"].items() if k != "member_token"}}),
    ("warranty", {**BODIES["warranty"], "sealed": "C" * 50}),
    ("warranty", {**BODIES["warranty"], "serial": "sn-1"}),
    ("warranty", {**BODIES["warranty"], "serial": "<script>"}),
    ("assist", {"source": "button", "device": "btn"}),
    ("assist", {"source": "kiosk", "device": "kiosk"}),
    ("assist", {"source": "phone", "device": "btn"}),
    ("assist", {"source": "button"}),
    ("assist", {"source": "button", "device": None}),
    ("status", BODIES["status"]),
    ("status", {**BODIES["status"], "state": "degraded", "alarms": ["outbox_full"]}),
    ("status", {**BODIES["status"], "state": "offline"}),
    ("status", {**BODIES["status"], "uptime_s": -1}),
    ("status", {**BODIES["status"], "uptime_s": True}),
    ("status", {**BODIES["status"], "uptime_s": "12"}),
    ("status", {**BODIES["status"], "alarms": ["a"] * 32}),
    ("status", {**BODIES["status"], "alarms": ["a"] * 33}),
    ("status", {**BODIES["status"], "alarms": [""]}),
    ("status", {**BODIES["status"], "alarms": "outbox_full"}),
    ("status", {**BODIES["status"], "devices": {}}),
    ("status", {**BODIES["status"], "devices": {"": "present"}}),
    ("status", {**BODIES["status"], "devices": {"d" * 65: "present"}}),
    ("status", {**BODIES["status"], "devices": {"nfc\t": "present"}}),
    ("status", {**BODIES["status"], "devices": {"nfc": "broken"}}),
    ("status", {**BODIES["status"], "outbox": {"depth": 0, "bytes": 0}}),
    ("status", {**BODIES["status"], "outbox": {"depth": 0, "bytes": 0, "oldest_age_s": 0, "x": 1}}),
    ("status", {**BODIES["status"], "outbox": {"depth": -1, "bytes": 0, "oldest_age_s": 0}}),
    ("status", {k: v for k, v in BODIES["status"].items() if k != "devices"}),
    ("presence", BODIES["presence"]),
    ("presence", {**BODIES["presence"], "state": "offline", "reason": "connection-lost"}),
    ("presence", {**BODIES["presence"], "state": "offline", "reason": "shutdown"}),
    ("presence", {**BODIES["presence"], "reason": "alarm", "alarms": ["outbox_full"]}),
    ("presence", {**BODIES["presence"], "outbox": {"depth": 3, "bytes": 9, "oldest_age_s": 2}}),
    ("presence", {**BODIES["presence"], "outbox": None}),  # the model drops it: never on the wire
    ("presence", {**BODIES["presence"], "state": "degraded"}),
    ("presence", {**BODIES["presence"], "reason": "timeout"}),
    ("presence", {**BODIES["presence"], "version": ""}),
    ("presence", {k: v for k, v in BODIES["presence"].items() if k != "alarms"}),
    ("presence", {**BODIES["presence"], "seq": 1}),
    ("sale", _SALE),
    (
        "sale",
        {k: v for k, v in _SALE.items() if k not in ("customer", "points", "discount", "sold_at", "survey")},
    ),
    ("sale", {**_SALE, "customer": {"source": "typed", "token": TOKEN}, "points": -3}),
    ("sale", {**_SALE, "lines": [_SKU_LINE] * 500, "total": -624800}),
    ("sale", _sale_line(name="<script>alert(1)</script>")),  # the till's text, kept verbatim
    ("sale", _sale_line(name="'; DROP TABLE sales; --")),
    ("sale", _sale_line(name="Kaffee Süd ☕ 🙂" + "n" * 106)),  # 120 characters
    ("sale", _sale_line(quantity=-9999, unit_price=0)),
    ("sale", _sale_line(gtin=None, sku="ART.1_b-2")),
    ("sale", {**_SALE, "total": -(10**12), "discount": 1_000_000_000, "points": 10**12}),
    ("sale", {**_SALE, "customer": None}),  # the model drops it: never on the wire
    *[("sale", body) for body in SALE_REFUSED],
    ("redemption_request", _ASK),
    ("redemption", _GIVEN),
    ("redemption", {**_GIVEN, "approval": "offline"}),
    *_both(receipt=_DELETE),
    *_both(receipt=None),  # the model drops it: never on the wire
    *_both(receipt="R" * 48, pos="p" * 64, reward="r" * 32),
    *_both(reward="0", pos="0", receipt="0000"),
    *_both(customer={"source": "typed", "token": TOKEN}),
    *_both(customer={"source": "barcode", "token": TOKEN, "code_token": CODE_TOKEN}),
    *_both(points=1),
    *_both(points=500),
    *_both(points=10_000_000),
    *_both(points=None),  # the model drops it: never on the wire
    *_both(points=300, receipt=_DELETE),
    # the node never spends chosen points under the offline allowance; neither model nor schema can say so
    ("redemption", {**_GIVEN, "approval": "offline", "points": 500}),
    *REDEMPTION_REFUSED,
    ("pickup", _PICKUP),
    ("pickup", _pickup(receipt=_DELETE)),  # not paid at the till
    ("pickup", _pickup(receipt=None)),  # the model drops it: never on the wire
    ("pickup", _pickup(code="R00000000", pos="0", receipt="0000")),
    ("pickup", _pickup(code="R99999992", pos="p" * 64, receipt="R" * 48)),
    ("pickup", _pickup(pos="POS_2.b-9", receipt="rc-2025-0003")),
    # the check digit is the node's job (the POS API refuses a wrong one): the model and schema check shape
    ("pickup", _pickup(code="R00000428")),
    *[("pickup", body) for body in PICKUP_REFUSED],
    ("member_lookup", _LOOKUP),
    ("member_lookup", _lookup(tokens=[TOKEN, CODE_TOKEN])),  # a card and its printed code
    ("member_lookup", _lookup(tokens=[TOKEN] * 8)),  # the same token twice: both accept it
    ("member_lookup", _lookup(tokens=["0" * 64, "f" * 64])),
    *[("member_lookup", body) for body in LOOKUP_REFUSED],
]


@pytest.mark.parametrize(("kind", "body"), BODY_CASES)
def test_body_schema_agrees_with_the_model(kind: str, body: dict[str, Any]) -> None:
    """The schema accepts a body exactly when the model accepts it unchanged (what goes on the wire)."""
    try:
        model_ok = validate_body(kind, body) == body
    except EnvelopeError:
        model_ok = False
    envelope = copy.deepcopy(next(e.payload for e in iter_examples() if e.kind == kind))
    envelope["body"] = body
    try:
        validate_message(kind, envelope)
        schema_ok = True
    except ValidationError:
        schema_ok = False
    assert schema_ok == model_ok, f"schema says {schema_ok}, the model says {model_ok}"


@pytest.mark.parametrize("body", SALE_REFUSED)
def test_refused_sale_bodies(body: dict[str, Any]) -> None:
    """msgspec refuses each; ``test_body_schema_agrees_with_the_model`` then makes the schema refuse it."""
    with pytest.raises(EnvelopeError):
        validate_body("sale", body)


@pytest.mark.parametrize(("kind", "body"), REDEMPTION_REFUSED)
def test_refused_redemption_bodies(kind: str, body: dict[str, Any]) -> None:
    """As for sales: msgspec refuses each, and so (checked above) does the schema."""
    with pytest.raises(EnvelopeError):
        validate_body(kind, body)


@pytest.mark.parametrize("body", PICKUP_REFUSED)
def test_refused_pickup_bodies(body: dict[str, Any]) -> None:
    """As for sales: msgspec refuses each, and so (checked above) does the schema."""
    with pytest.raises(EnvelopeError):
        validate_body("pickup", body)


@pytest.mark.parametrize("body", LOOKUP_REFUSED)
def test_refused_lookup_bodies(body: dict[str, Any]) -> None:
    """As for sales: msgspec refuses each, and so (checked above) does the schema."""
    with pytest.raises(EnvelopeError):
        validate_body("member_lookup", body)


# -- (d) hostile and malformed payloads are refused ------------------------------------------------


@pytest.fixture
def sealed(signing_key: SigningKey) -> Callable[[str], dict[str, Any]]:
    signer = Signer(signing_key, "s1", "n1")

    def make(kind: str) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(signer.seal(kind, 41, validate_body(kind, BODIES[kind])).payload)
        return doc

    return make


def _mutated(base: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(base)
    target = doc
    for part in path[:-1]:
        target = target[part]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return doc


HOSTILE: list[tuple[str, tuple[str, ...], Any]] = [
    ("identity", ("sig",), _DELETE),
    ("identity", ("id",), _DELETE),
    ("identity", ("body",), _DELETE),
    ("identity", ("extra",), "x"),
    ("identity", ("schema",), "retail.v1.assist"),
    ("identity", ("schema",), "retail.v2.identity"),
    ("identity", ("store",), "s+"),
    ("identity", ("store",), "s#"),
    ("identity", ("store",), "s/1"),
    ("identity", ("store",), "s1\n"),
    ("identity", ("store",), ""),
    ("identity", ("store",), "s" * 65),
    ("identity", ("node",), "-n1"),
    ("identity", ("node",), "n 1"),
    ("identity", ("id",), str(uuid.uuid4())),
    ("identity", ("id",), "019AA5B1-3D2C-7A3E-8F77-586F31CF2726"),
    ("identity", ("id",), "019aa5b1-3d2c-7a3e-cf77-586f31cf2726"),  # wrong variant
    ("identity", ("id",), "019aa5b13d2c7a3e8f77586f31cf2726"),
    ("identity", ("id",), "019aa5b1-3d2c-7a3e-8f77-586f31cf2726\n"),
    ("identity", ("ts",), "2025-11-21T09:14:07.532+01:00"),
    ("identity", ("ts",), "2025-11-21T09:14:07.532+00:00"),
    ("identity", ("ts",), "2025-11-21T09:14:07.532"),
    ("identity", ("ts",), "2025-11-21T09:14:07.532z"),
    ("identity", ("ts",), "2025-11-21 09:14:07.532Z"),
    ("identity", ("ts",), "2025-11-21T09:14:07.1234567Z"),
    ("identity", ("ts",), "\uff12\uff10\uff12\uff15-11-21T09:14:07Z"),  # fullwidth digits
    ("identity", ("ts",), 1763716447),
    ("identity", ("seq",), -1),
    ("identity", ("seq",), "41"),
    ("identity", ("seq",), True),
    ("identity", ("seq",), None),
    ("identity", ("sig",), ""),
    ("identity", ("sig",), "A" * 85 + "B"),  # not a canonical 64-byte encoding
    ("identity", ("sig",), "A" * 86 + "=="),  # padding
    ("identity", ("sig",), "+" * 85 + "A"),  # standard, not url-safe, alphabet
    ("identity", ("body", "extra"), 1),
    ("identity", ("body", "uid"), "04a224e2b55c80"),
    ("identity", ("body", "token"), TOKEN + "a"),
    ("identity", ("body", "token"), TOKEN[:-1]),
    ("identity", ("body", "source"), "manual"),
    ("assist", ("body", "device"), _DELETE),
    ("status", ("body", "devices", "nfc"), "on fire"),
    ("status", ("body", "outbox", "depth"), -5),
    ("presence", ("body", "state"), "degraded"),
    ("presence", ("body", "reason"), "crash"),
    ("sale", ("body", "receipt"), "RC 0001"),
    ("sale", ("body", "currency"), "eur"),
    ("sale", ("body", "lines"), []),
    ("sale", ("body", "lines"), [_SKU_LINE] * 501),
    ("sale", ("body", "lines"), [{**_GTIN_LINE, "quantity": 0}]),
    ("sale", ("body", "lines"), [{**_GTIN_LINE, "sku": "ART-1"}]),
    ("sale", ("body", "lines"), [{**_GTIN_LINE, "name": "Espresso\x1b[2J"}]),
    ("sale", ("body", "customer", "token"), TOKEN + "\n"),
    ("sale", ("body", "customer", "name"), "Ayşe"),
    ("sale", ("body", "points"), "21"),
    ("redemption_request", ("sig",), _DELETE),
    ("redemption_request", ("schema",), "retail.v1.redemption"),
    ("redemption_request", ("body", "request_id"), REQUEST_ID.upper()),
    ("redemption_request", ("body", "request_id"), _DELETE),
    ("redemption_request", ("body", "reward"), "free coffee"),
    ("redemption_request", ("body", "customer"), _DELETE),
    ("redemption_request", ("body", "customer", "token"), TOKEN + "\n"),
    ("redemption_request", ("body", "approval"), "central"),
    ("redemption_request", ("body", "receipt"), "<script>"),
    ("redemption_request", ("body", "points"), 0),
    ("redemption_request", ("body", "points"), -1),
    ("redemption_request", ("body", "points"), 10_000_001),
    ("redemption_request", ("body", "points"), 1.5),
    ("redemption_request", ("body", "points"), True),
    ("redemption_request", ("body", "points"), "5"),
    ("redemption_request", ("body", "points"), None),
    ("redemption", ("schema",), "retail.v1.redemption_request"),
    ("redemption", ("body", "approval"), "pending"),
    ("redemption", ("body", "approval"), _DELETE),
    ("redemption", ("body", "request_id"), str(uuid.UUID(REQUEST_ID))),
    ("redemption", ("body", "reward"), {"id": "free-coffee"}),
    ("redemption", ("body", "customer", "uid"), "04a224e2b55c80"),
    ("redemption", ("body", "pos"), "pos-01\u2028"),
    ("redemption", ("body", "points"), -50),
    ("redemption", ("body", "points"), 0),
    ("redemption", ("body", "points"), 10_000_001),
    ("redemption", ("body", "points"), 1.5),
    ("redemption", ("body", "points"), True),
    ("redemption", ("body", "points"), "5"),
    ("pickup", ("schema",), "retail.v1.reservation"),
    ("pickup", ("schema",), "retail.v1.sale"),
    ("pickup", ("sig",), _DELETE),
    ("pickup", ("body", "code"), "r00000427"),
    ("pickup", ("body", "code"), "R000004270"),
    ("pickup", ("body", "code"), _DELETE),
    ("pickup", ("body", "pos"), _DELETE),
    ("pickup", ("body", "pos"), "pos-01\u2028"),
    ("pickup", ("body", "receipt"), "<script>"),
    ("pickup", ("body", "receipt"), None),
    ("pickup", ("body", "item"), {"sku": "ART-1234"}),
    ("pickup", ("body", "customer"), {"source": "nfc", "token": TOKEN}),
    ("member_lookup", ("sig",), _DELETE),
    ("member_lookup", ("sig",), "A" * 85 + "B"),
    ("member_lookup", ("schema",), "retail.v1.redemption_request"),
    ("member_lookup", ("schema",), "retail.v1.member"),
    ("member_lookup", ("seq",), 4812.0),
    ("member_lookup", ("seq",), -1),
    ("member_lookup", ("body",), {"tokens": [TOKEN]}),
    ("member_lookup", ("body", "tokens"), [TOKEN] * 9),
    ("member_lookup", ("body", "tokens"), []),
    ("member_lookup", ("body", "tokens"), [TOKEN.upper()]),
    ("member_lookup", ("body", "tokens"), ["04a224e2b55c80"]),
    ("member_lookup", ("body", "members"), []),
    ("member_lookup", ("body", "request_id"), _DELETE),
]


@pytest.mark.parametrize(("kind", "path", "value"), HOSTILE)
def test_hostile_payload_is_refused(
    kind: str, path: tuple[str, ...], value: Any, sealed: Callable[[str], dict[str, Any]]
) -> None:
    good = sealed(kind)
    validate_payload(_topic(kind), good)
    bad = _mutated(good, path, value)
    with pytest.raises(ValidationError):
        validate_message(kind, bad)
    with pytest.raises(ValidationError):
        validate_payload(_topic(kind), json.dumps(bad, ensure_ascii=False).encode())


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ('"seq":41', '"seq":41.0'),
        ('"seq":41', '"seq":4.1e1'),
        ('"uptime_s":12', '"uptime_s":12.5'),
        ('"uptime_s":12', '"uptime_s":12.0'),
        ('"depth":1', '"depth":1e0'),
        ('"seq":41', '"seq":NaN'),
        ('"seq":41', '"seq":Infinity'),
        ('"seq":41', '"seq":41,"seq":42'),  # duplicate member
        ('"state":"online"', '"state":"online","state":"degraded"'),
        ('{"body"', '[{"body"'),
    ],
)
def test_float_and_malformed_json_on_the_wire_is_refused(old: str, new: str, signing_key: SigningKey) -> None:
    signer = Signer(signing_key, "s1", "n1")
    payload = signer.seal("status", 41, validate_body("status", BODIES["status"])).payload
    assert old.encode() in payload
    with pytest.raises(ValidationError):
        validate_payload("retail/v1/s1/n1/event/status", payload.replace(old.encode(), new.encode(), 1))


@pytest.mark.parametrize("kind", ["redemption_request", "redemption"])
@pytest.mark.parametrize(
    "points", [b"500.0", b"5e2", b"5.0e2", b"true", b'"500"', b"null", b"0", b"10000001"]
)
def test_points_other_than_an_integer_on_the_wire_are_refused(
    kind: str, points: bytes, signing_key: SigningKey
) -> None:
    """A partial redemption's points, written as anything but an integer from 1 to 10,000,000, are refused."""
    signer = Signer(signing_key, "s1", "n1")
    payload = signer.seal(kind, 41, validate_body(kind, {**BODIES[kind], "points": 500})).payload
    validate_payload(_topic(kind), payload)
    assert payload.count(b'"points":500') == 1
    with pytest.raises(ValidationError):
        validate_payload(_topic(kind), payload.replace(b'"points":500', b'"points":' + points))


@pytest.mark.parametrize("value", [1.5, 41.0, float("nan")])
def test_float_in_a_dict_payload_is_refused(value: float, sealed: Callable[[str], dict[str, Any]]) -> None:
    with pytest.raises(ValidationError, match="floating-point"):
        validate_message("status", _mutated(sealed("status"), ("body", "uptime_s"), value))


def test_envelope_must_match_its_topic(sealed: Callable[[str], dict[str, Any]]) -> None:
    identity = sealed("identity")
    validate_payload("retail/v1/s1/n1/event/identity", identity)
    for topic in (
        "retail/v1/s2/n1/event/identity",  # another store's topic
        "retail/v1/s1/n2/event/identity",  # another node's topic
        "retail/v1/s1/n1/event/assist",  # schema is retail.v1.identity
        "retail/v1/s1/n1/status",
        "retail/v1/s1/n1/request/redemption",
        "retail/v1/s1/n1/reply",
    ):
        with pytest.raises(ValidationError):
            validate_payload(topic, identity)
    pickup = sealed("pickup")
    validate_payload("retail/v1/s1/n1/event/pickup", pickup)
    for topic in (
        "retail/v1/s2/n1/event/pickup",
        "retail/v1/s1/n2/event/pickup",
        "retail/v1/s1/n1/event/reservation",  # schema is retail.v1.pickup
        "retail/v1/s1/n1/event/sale",
    ):
        with pytest.raises(ValidationError):
            validate_payload(topic, pickup)
    request = sealed("redemption_request")
    validate_payload("retail/v1/s1/n1/request/redemption", request)
    for topic in (
        "retail/v1/s2/n1/request/redemption",
        "retail/v1/s1/n2/request/redemption",
        "retail/v1/s1/n1/event/redemption",
        "retail/v1/s1/n1/reply",  # a request is not a reply
        "retail/v1/s1/n1/request/member",  # schema is retail.v1.redemption_request
    ):
        with pytest.raises(ValidationError):
            validate_payload(topic, request)
    lookup = sealed("member_lookup")
    assert payload_kind("retail/v1/s1/n1/request/member", lookup) == "member_lookup"
    for topic in (
        "retail/v1/s2/n1/request/member",
        "retail/v1/s1/n2/request/member",
        "retail/v1/s1/n1/request/redemption",  # schema is retail.v1.member_lookup
        "retail/v1/s1/n1/event/identity",
        "retail/v1/s1/n1/reply",
        "retail/v1/s1/n1/cmd/member",
    ):
        with pytest.raises(ValidationError):
            validate_payload(topic, lookup)


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"null",
        b"[]",
        b'"x"',
        b"\xff\xfe{}",
        b"{",
        b'{"schema": "retail.v1.status"} trailing',
        b" " * 70000,
    ],
)
def test_undecodable_payloads_are_refused(payload: bytes) -> None:
    with pytest.raises(ValidationError):
        decode_payload(payload)


def test_oversized_payload_is_refused(sealed: Callable[[str], dict[str, Any]]) -> None:
    doc = sealed("identity")
    raw = json.dumps(doc).encode()
    padded = raw[:-1] + b" " * (64 * 1024 - len(raw)) + b"}"
    validate_message("identity", padded)  # exactly at the bound: fine
    with pytest.raises(ValidationError, match="bytes"):
        validate_message("identity", padded[:-1] + b" }")


# -- (e) the central receiver's reply: plain JSON, decoded by cloud_sync.messages.decode_reply -------

_REPLY = next(e.payload for e in iter_examples() if e.kind == "redemption_reply")
_REQUEST = next(e.payload for e in iter_examples() if e.kind == "redemption_request")


def _reply(**changes: Any) -> bytes:
    """The reply example with ``changes`` (a value of _DELETE removes that member), as wire bytes."""
    doc = {k: v for k, v in {**_REPLY, **changes}.items() if v is not _DELETE}
    return json.dumps(doc, ensure_ascii=False).encode()


#: Replies the node accepts (each decodes, and re-encodes unchanged).
REPLY_ACCEPTED: list[bytes] = [
    *[json.dumps(e.payload).encode() for e in iter_examples() if e.kind == "redemption_reply"],
    _reply(points_balance=_DELETE),
    _reply(approved=False, reason="card-blocked", points_balance=_DELETE),
    _reply(approved=False, reason="unknown_reward"),
    _reply(reason="last-offline-today"),  # a note with an approval
    _reply(reason="r" * 48),
    _reply(reason="0"),
    _reply(points_balance=0),
    _reply(points_balance=-(10**12)),
    _reply(points_balance=10**12),
    *[
        _reply(approved=False, reason=reason, points_balance=_DELETE)
        for reason in ("card-blocked", "not-a-member", "unknown-reward", "no-stamp-reward", "expired")
    ],
    _reply(approved=False, reason="a-reason-added-later"),  # not a closed list, in the model or the schema
    b' \n{"approved":false,"request_id":"' + REQUEST_ID.encode() + b'"}\n',
]

#: Replies the node refuses: decode_reply raises, and the document's schema refuses each, too.
REPLY_REFUSED: list[bytes] = [
    # not JSON, or not a JSON object
    b"",
    b"approved",
    b"{",
    _reply()[:-1],
    _reply() + b" trailing",
    b"\xef\xbb\xbf" + _reply(),  # a byte order mark
    b"\xff" + _reply(),
    b"null",
    b"true",
    b'"approved"',
    b"1130",
    b"[]",
    json.dumps([_REPLY]).encode(),  # an array
    # unknown members
    _reply(note="x"),
    _reply(correlation_data="3q2-7w"),
    _reply(Approved=True),
    json.dumps(_REQUEST).encode(),  # a signed request is not a reply
    # approved: a boolean, required
    _reply(approved="true"),
    _reply(approved="yes"),
    _reply(approved=1),
    _reply(approved=None),
    _reply(approved=_DELETE),
    # request_id: 32 lower-case hex digits, required
    _reply(request_id=_DELETE),
    _reply(request_id=REQUEST_ID.upper()),
    _reply(request_id=str(uuid.UUID(REQUEST_ID))),
    _reply(request_id=REQUEST_ID + "\n"),
    _reply(request_id=REQUEST_ID[:-1]),
    # reason: 1-48 of [a-z0-9_-], starting with a letter or digit
    _reply(reason="insufficient points"),  # a space
    _reply(reason="r" * 70),
    _reply(reason="r" * 49),
    _reply(reason=""),
    _reply(reason="Insufficient-points"),
    _reply(reason="-declined"),
    _reply(reason="declined\n"),
    _reply(reason="déclinée"),
    _reply(reason="<script>"),
    _reply(reason=["declined"]),
    _reply(reason=7),
    # points_balance: an integer within +/- 10**12
    _reply(points_balance="1130"),
    _reply(points_balance=True),
    _reply(points_balance=10**12 + 1),
    _reply(points_balance=-(10**12) - 1),
    _reply().replace(b"1130", b"1130.0"),
    _reply().replace(b"1130", b"1.13e3"),
    _reply().replace(b"1130", b"NaN"),
]


@pytest.mark.parametrize("payload", REPLY_ACCEPTED)
def test_reply_accepted_by_the_node_and_the_schema(payload: bytes) -> None:
    decoded = decode_reply(payload)
    assert msgspec.to_builtins(decoded) == json.loads(payload)  # nothing dropped or normalised
    validate_payload(_topic("redemption_reply"), payload)
    validate_message("redemption_reply", payload)


@pytest.mark.parametrize("payload", REPLY_REFUSED)
def test_malformed_reply_refused_by_the_node_and_the_schema(payload: bytes) -> None:
    with pytest.raises(EnvelopeError, match="redemption reply"):
        decode_reply(payload)
    with pytest.raises(ValidationError):
        validate_payload(_topic("redemption_reply"), payload)


@pytest.mark.parametrize("member", ["reason", "points_balance"])
def test_null_in_a_reply_is_tolerated_by_the_node_but_not_in_the_contract(member: str) -> None:
    """decode_reply reads a null as absent; the document says absent members are omitted."""
    assert decode_reply(_reply(**{member: None})) == decode_reply(_reply(**{member: _DELETE}))
    with pytest.raises(ValidationError):
        validate_payload(_topic("redemption_reply"), _reply(**{member: None}))


def _reasons_in(path: str) -> set[str]:
    return set(re.findall(r'reason\s*=\s*"([a-z0-9_-]+)"', (ROOT / path).read_text(encoding="utf-8")))


def _pricing_reasons() -> set[str]:
    """The reasons ``Reward.cost`` refuses a request with (a variable reward's points, or a fixed one's)."""
    from cloud_sync.central.program import Reward

    variable = Reward("points-off", "Points off", 100, variable=True, step=100)
    fixed = Reward("coffee", "Free coffee", 150)
    priced = [variable.cost(None), variable.cost(50), variable.cost(250), fixed.cost(100), fixed.cost(150)]
    return {reason for reason in priced if isinstance(reason, str)}


def test_every_reason_the_central_receiver_declines_with_is_documented() -> None:
    """The reasons in cloud_sync/central (members.py, responder.py, and the catalogue's pricing of a request)
    are in the reply schema's description."""
    reasons = _reasons_in("cloud_sync/central/members.py") | _reasons_in("cloud_sync/central/responder.py")
    assert _pricing_reasons() == {"points-required", "invalid-points"}
    reasons |= _pricing_reasons()
    assert reasons >= {"insufficient-points", "unknown-reward", "card-blocked", "expired"}, reasons
    doc = load_document()
    description = doc["components"]["schemas"]["RedemptionReply"]["properties"]["reason"]["description"]
    for reason in reasons:
        assert f"`{reason}`" in description, reason
        decode_reply(_reply(approved=False, reason=reason))
        validate_payload(_topic("redemption_reply"), _reply(approved=False, reason=reason))
    examples = {e.payload.get("reason") for e in iter_examples() if e.kind == "redemption_reply"}
    assert len(examples & reasons) >= 4  # most of them have an example, too


def test_the_partial_redemption_examples_agree_with_each_other_and_the_catalogue() -> None:
    """``partialRequest``, its reply and its ``partialRedemption`` event: one partial redemption, priced as
    the central receiver's default catalogue prices it; the declines say what the catalogue says."""
    from cloud_sync.central.program import LoyaltySection

    catalogue = LoyaltySection()
    request = _example("redemption_request", "partialRequest")["body"]
    event = _example("redemption", "partialRedemption")["body"]
    reply = _example("redemption_reply", "partialApproved")
    reward = catalogue.reward(request["reward"])
    assert reward is not None and reward.variable
    assert reward.cost(request["points"]) == request["points"]
    assert {k: v for k, v in event.items() if k != "approval"} == request
    assert event["approval"] == "central"  # chosen points are never spent under the offline allowance
    assert (reply["request_id"], reply["approved"]) == (request["request_id"], True)
    assert reward.cost(250) == _example("redemption_reply", "invalidPoints")["reason"]
    assert reward.cost(None) == _example("redemption_reply", "pointsRequired")["reason"]
    assert _example("redemption_reply", "invalidPoints")["points_balance"] == (
        reply["points_balance"] + request["points"]
    )
    for kind in ("redemption_request", "redemption"):
        schema = _deref(load_document(), message_schema(kind)["properties"]["body"])
        points = _deref(load_document(), schema["properties"]["points"])
        assert (points["type"], points["minimum"], points["maximum"]) == ("integer", 1, 10_000_000)


def test_reply_topic_is_any_nodes_but_only_its_shape() -> None:
    """A reply has no store or node of its own: any node's reply topic validates it, a malformed one not."""
    for topic in ("retail/v1/s1/n1/reply", "retail/v1/de-ber-017/till-02/reply", "chain-a/x/A/0/reply"):
        root = topic.rsplit("/", 3)[0]
        assert route_for_topic(topic, root=root).kinds == ("redemption_reply", "member_lookup_reply")
        assert payload_kind(topic, _reply(), root=root) == "redemption_reply"
        validate_payload(topic, _reply(), root=root)
    for topic in ("retail/v1/s1/n1/reply/x", "retail/v1/s 1/n1/reply", "retail/v1/s1/n1/replies"):
        with pytest.raises(ValidationError):
            validate_payload(topic, _reply())


# -- (f) the central receiver's lookup replies and commands: plain JSON, decoded with the msgspec models --

_INFO = _example("member_info", "afterSale")
_LOOKUP_REPLY = _example("member_lookup_reply", "member")
_ERASE = _example("erase_command")
_TOKENS_64 = [f"{i:064x}" for i in range(64)]


def _changed(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in {**base, **changes}.items() if v is not _DELETE}


def _info(**changes: Any) -> dict[str, Any]:
    """The member summary ``afterSale`` with ``changes`` (a value of _DELETE removes that member)."""
    return _changed(_INFO, changes)


def _found(**changes: Any) -> dict[str, Any]:
    """The lookup reply ``member`` with ``changes``."""
    return _changed(_LOOKUP_REPLY, changes)


def _erase(**changes: Any) -> dict[str, Any]:
    """The erase command ``memberErased`` with ``changes``."""
    return _changed(_ERASE, changes)


def _wire(payload: dict[str, Any] | bytes) -> bytes:
    return payload if isinstance(payload, bytes) else json.dumps(payload, ensure_ascii=False).encode()


#: Member summaries the node accepts (``cmd/member``, and inside a lookup reply).
INFO_ACCEPTED: list[dict[str, Any] | bytes] = [
    *[e.payload for e in iter_examples() if e.kind == "member_info"],
    {"token": TOKEN, "known": True},  # a member the central receiver knows nothing more about
    {"token": TOKEN, "known": False, "blocked": True},  # a blocked card bound to nobody
    # defaults spelled out: the central receiver omits them, but they mean the same
    _info(points=0, rewards=[], reward_names={}, stamps={}, blocked=False),
    _info(first_name="A" * 40),
    _info(first_name="Ayşe-Nur"),
    _info(first_name="李小龙"),
    _info(first_name="Zoë 🙂"),
    _info(first_name='O\'Brien & "Jo"'),  # quotes and ampersands: the screens escape what they show
    _info(first_name=" "),
    _info(member_code="M0000000000", tier="t" * 32),
    _info(tier="gold_2"),
    _info(points=-(10**12)),
    _info(points=10**12),
    _info(rewards=[f"r{i}" for i in range(32)]),
    _info(rewards=["coffee", "coffee"]),
    _info(reward_names={"coffee": "Gratis koffie ☕", "voucher-5": "n" * 60}),
    _info(reward_names={"coffee": "<b>Free</b> coffee"}),  # the catalogue's text, verbatim (see the report)
    _info(reward_names={"not-offered": "Listed without being in rewards"}),
    _info(stamps={"coffee-card": [0, 9], "tea-card": [4, 5]}),
    _info(stamps={"coffee-card": [0, 0]}),
    b' \n{"known":false,"token":"' + TOKEN.encode() + b'"}\n',
]

#: Member summaries both the node's model and the document's schema refuse.
INFO_REFUSED: list[dict[str, Any] | bytes] = [
    # the token: required, 64 lower-case hex digits
    _info(token=_DELETE),
    _info(token=TOKEN.upper()),
    _info(token=TOKEN[:-1]),
    _info(token=TOKEN + "\n"),
    _info(token="04a224e2b55c80"),  # a raw card UID
    _info(token=None),
    # known: a boolean, required
    _info(known=_DELETE),
    _info(known="true"),
    _info(known=1),
    _info(known=None),
    # first_name: 1 to 40 characters, no control characters, no < or >
    _info(first_name="<script>alert(1)</script>"),
    _info(first_name="Ayşe<"),
    _info(first_name="Jan>"),
    _info(first_name="<img src=x onerror=alert(1)>"),
    _info(first_name=""),
    _info(first_name="A" * 41),
    _info(first_name="Jan\n"),
    _info(first_name="Jan\x00"),
    _info(first_name="Jan\x1b[2J"),
    _info(first_name="Jan\x7f"),
    _info(first_name=5),
    _info(first_name=["Jan"]),
    # member_code: M + 10 digits
    _info(member_code="M104200031"),
    _info(member_code="m1042000315"),
    _info(member_code="M1042000315\n"),
    _info(member_code="1042000315"),
    _info(member_code="M" + "\uff11" * 10),  # fullwidth digits
    _info(member_code=1042000315),
    # tier: 1 to 32 of [a-z0-9_-]
    _info(tier="Gold"),
    _info(tier=""),
    _info(tier="t" * 33),
    _info(tier="gold tier"),
    _info(tier="gold\n"),
    # points: an integer within +/- 10**12
    _info(points=207.5),
    _info(points=207.0),
    _wire(_INFO).replace(b"207", b"207.0"),
    _wire(_INFO).replace(b"207", b"2.07e2"),
    _wire(_INFO).replace(b"207", b"NaN"),
    _info(points="207"),
    _info(points=True),
    _info(points=None),
    _info(points=10**12 + 1),
    _info(points=-(10**12) - 1),
    # rewards: at most 32 reward ids
    _info(rewards=[f"r{i}" for i in range(33)]),
    _info(rewards=["coffee"] * 1000),
    _info(rewards=["Free coffee"]),
    _info(rewards=["<script>"]),
    _info(rewards=["coffee\n"]),
    _info(rewards=[""]),
    _info(rewards="coffee"),
    _info(rewards=None),
    _info(rewards=[1]),
    # reward_names: reward id -> 1 to 60 characters, no control characters
    _info(reward_names={"Coffee": "Free coffee"}),
    _info(reward_names={"": "Free coffee"}),
    _info(reward_names={"coffee": ""}),
    _info(reward_names={"coffee": "n" * 61}),
    _info(reward_names={"coffee": "Free\ncoffee"}),
    _info(reward_names={"coffee": "Free coffee\x00"}),
    _info(reward_names={"coffee": 5}),
    _info(reward_names={"coffee": None}),
    _info(reward_names=[["coffee", "Free coffee"]]),
    _info(reward_names=None),
    # stamps: card id -> [collected, needed], two non-negative integers
    _info(stamps={"coffee-card": [2]}),
    _info(stamps={"coffee-card": [2, 9, 1]}),
    _info(stamps={"coffee-card": []}),
    _info(stamps={"coffee-card": [-1, 9]}),
    _info(stamps={"coffee-card": [2.0, 9]}),
    _info(stamps={"coffee-card": [True, 9]}),
    _info(stamps={"coffee-card": ["2", "9"]}),
    _info(stamps={"coffee-card": "2/9"}),
    _info(stamps={"coffee-card": {"stamps": 2, "needed": 9}}),
    _info(stamps={"Coffee Card": [2, 9]}),
    _info(stamps={"coffee-card": None}),
    _info(stamps=None),
    # blocked: a boolean
    _info(blocked="yes"),
    _info(blocked=1),
    _info(blocked=None),
    # unknown members: contact data has no place here, nor the reply's or another message's members
    _info(email="ayse@example.com"),
    _info(phone="+491701234567"),
    _info(last_name="Yilmaz"),
    _info(name="Ayşe"),
    _info(Token=TOKEN),
    _info(request_id=REQUEST_ID),
    _info(tokens=[TOKEN]),
    # not a JSON object
    b"",
    b"null",
    b"[]",
    json.dumps([_INFO]).encode(),
    _wire(_INFO)[:-1],
    _wire(_INFO) + b" trailing",
    b"\xef\xbb\xbf" + _wire(_INFO),
    b"\xff" + _wire(_INFO),
]

#: Lookup replies the node accepts.
LOOKUP_REPLY_ACCEPTED: list[dict[str, Any] | bytes] = [
    *[e.payload for e in iter_examples() if e.kind == "member_lookup_reply"],
    _found(members=[]),  # the central receiver had nothing to say
    _found(members=[_INFO] * 8),
    _found(members=[{"token": TOKEN, "known": False}, _INFO]),
]

#: Lookup replies both the node's model and the document's schema refuse.
LOOKUP_REPLY_REFUSED: list[dict[str, Any] | bytes] = [
    _found(members=[_INFO] * 9),
    _found(members=[_INFO] * 1000),
    _found(members=_DELETE),
    _found(members=None),
    _found(members=_INFO),  # a summary, not a list of them
    _found(members=[TOKEN]),
    _found(members=[{"token": TOKEN}]),  # known missing
    _found(members=[_info(first_name="<script>alert(1)</script>")]),
    _found(members=[_info(points=1.5)]),
    _found(members=[_info(rewards=[f"r{i}" for i in range(33)])]),
    _found(members=[_info(email="ayse@example.com")]),
    _found(request_id=_DELETE),
    _found(request_id=REQUEST_ID.upper()),
    _found(request_id=REQUEST_ID + "\n"),
    _found(request_id=str(uuid.UUID(REQUEST_ID))),
    _found(approved=True),  # a cross of the two replies is neither
    _found(points_balance=1130),
    _found(tokens=[TOKEN]),
    _wire(_LOOKUP_REPLY).replace(b"1130", b"1130.0"),
    _INFO,  # a summary on its own is not a reply
    _ERASE,
    {"request_id": REQUEST_ID, "approved": True, "members": []},
]

#: Erase commands the node accepts.
ERASE_ACCEPTED: list[dict[str, Any] | bytes] = [
    *[e.payload for e in iter_examples() if e.kind == "erase_command"],
    _erase(tokens=[TOKEN]),
    _erase(tokens=_TOKENS_64),
    _erase(tokens=[TOKEN] * 64),
    _erase(tokens=[CODE_TOKEN]),  # a later command of a member with more than 64 tokens
]

#: Erase commands both the node's model and the document's schema refuse.
ERASE_REFUSED: list[dict[str, Any] | bytes] = [
    _erase(tokens=[]),
    _erase(tokens=[*_TOKENS_64, TOKEN]),  # 65
    _erase(tokens=[TOKEN] * 10_000),
    _erase(tokens=_DELETE),
    _erase(tokens=None),
    _erase(tokens=TOKEN),
    _erase(tokens=[TOKEN.upper()]),
    _erase(tokens=[TOKEN, TOKEN[:-1]]),
    _erase(tokens=[TOKEN + "\n"]),
    _erase(tokens=[TOKEN, 5]),
    _erase(tokens=[1.5]),
    _erase(tokens=["M1042000315"]),  # a member code, not its token
    _erase(tokens=["<script>alert(1)</script>"]),
    _erase(member_token=_DELETE),
    _erase(member_token=None),
    _erase(member_token=TOKEN.upper()),
    _erase(member_token="M1042000315"),
    _erase(member_token=[TOKEN]),
    _erase(member_code="M1042000315"),  # personal data, and unknown
    _erase(first_name="Ayşe"),
    _erase(reason="gdpr"),
    _wire(_ERASE).replace(b"]", b",1.0]"),
    _INFO,
    _LOOKUP_REPLY,
    b"[]",
    b"null",
]

PLAIN_CASES: list[tuple[str, dict[str, Any] | bytes, bool]] = [
    *[("member_info", payload, True) for payload in INFO_ACCEPTED],
    *[("member_info", payload, False) for payload in INFO_REFUSED],
    *[("member_lookup_reply", payload, True) for payload in LOOKUP_REPLY_ACCEPTED],
    *[("member_lookup_reply", payload, False) for payload in LOOKUP_REPLY_REFUSED],
    *[("erase_command", payload, True) for payload in ERASE_ACCEPTED],
    *[("erase_command", payload, False) for payload in ERASE_REFUSED],
]


@pytest.mark.parametrize(("kind", "payload", "accepted"), PLAIN_CASES)
def test_command_or_lookup_reply_accepted_by_the_node_exactly_when_by_the_schema(
    kind: str, payload: dict[str, Any] | bytes, accepted: bool
) -> None:
    """The node's msgspec model and the document's schema say the same, and what they should."""
    raw = _wire(payload)
    try:
        PLAIN_MESSAGES[kind](raw)
        model_ok = True
    except (msgspec.ValidationError, msgspec.DecodeError):
        model_ok = False
    try:
        validate_payload(_topic(kind), raw)
        schema_ok = True
    except ValidationError:
        schema_ok = False
    assert (model_ok, schema_ok) == (accepted, accepted)


def test_the_schema_accepts_what_the_central_receiver_sends() -> None:
    """MemberInfo and the others as the central receiver encodes them (defaults omitted) validate."""
    full = MemberInfo(
        token=TOKEN,
        known=True,
        member_code="M1042000315",
        first_name="Ayşe",
        tier="silver",
        points=207,
        rewards=["coffee"],
        reward_names={"coffee": "Free coffee"},
        stamps={"coffee-card": [2, 9]},
    )
    for kind, message in [
        ("member_info", full),
        ("member_info", MemberInfo(token=TOKEN, known=False)),
        ("member_info", MemberInfo(token=TOKEN, known=True, blocked=True)),
        ("member_lookup_reply", MemberLookupReply(request_id=REQUEST_ID, members=[full])),
        ("erase_command", EraseCommand(member_token=TOKEN, tokens=[TOKEN, CODE_TOKEN])),
    ]:
        raw = msgspec.json.encode(message)
        assert payload_kind(_topic(kind), raw) == kind
        assert PLAIN_MESSAGES[kind](raw) == message
    assert msgspec.json.encode(MemberInfo(token=TOKEN, known=False)) == (
        b'{"token":"' + TOKEN.encode() + b'","known":false}'
    )


@pytest.mark.parametrize("member", ["member_code", "first_name", "tier"])
def test_null_in_a_member_summary_is_tolerated_by_the_node_but_not_in_the_contract(member: str) -> None:
    """msgspec reads a null optional member as absent; the document says absent members are omitted."""
    with_null = _wire(_info(**{member: None}))
    assert _decode_member_info(with_null) == _decode_member_info(_wire(_info(**{member: _DELETE})))
    with pytest.raises(ValidationError):
        validate_payload(_topic("member_info"), with_null)


def test_messages_of_the_reply_channel_exclude_each_other() -> None:
    """Every example on a channel with several messages is valid as its own message only."""
    for example in iter_examples():
        kinds = route_for_topic(_topic(example.kind)).kinds
        if len(kinds) < 2:
            continue
        valid = []
        for kind in kinds:
            try:
                validate_message(kind, example.payload)
                valid.append(kind)
            except ValidationError:
                pass
        assert valid == [example.kind], example.name


@pytest.mark.parametrize(
    ("kind", "topic"),
    [
        ("member_info", "retail/v1/s1/n1/reply"),
        ("member_info", "retail/v1/s1/n1/cmd/erase"),
        ("member_info", "retail/v1/s1/n1/request/member"),
        ("member_info", "retail/v1/s1/n1/event/identity"),
        ("erase_command", "retail/v1/s1/n1/cmd/member"),
        ("erase_command", "retail/v1/s1/n1/reply"),
        ("member_lookup_reply", "retail/v1/s1/n1/cmd/member"),
        ("member_lookup_reply", "retail/v1/s1/n1/request/member"),
        ("redemption_reply", "retail/v1/s1/n1/cmd/member"),
        ("redemption_reply", "retail/v1/s1/n1/cmd/erase"),
        ("earn_rules", "retail/v1/s1/n1/cmd/member"),
        ("earn_rules", "retail/v1/s1/n1/cmd/erase"),
        ("earn_rules", "retail/v1/s1/n1/reply"),
        ("earn_rules", "retail/v1/s1/n1/status"),
    ],
)
def test_a_plain_message_on_another_topic_is_refused(kind: str, topic: str) -> None:
    for example in iter_examples():
        if example.kind == kind:
            with pytest.raises(ValidationError):
                validate_payload(topic, example.payload)


def test_command_topics_are_any_nodes_but_only_their_shape() -> None:
    for topic in (
        "retail/v1/s1/n1/cmd/member",
        "chain-a/x/A/0/cmd/member",
        "retail/v1/de-ber-017/till-02/cmd/member",
    ):
        root = topic.rsplit("/", 4)[0]
        assert payload_kind(topic, _INFO, root=root) == "member_info"
        assert payload_kind(topic.replace("/member", "/erase"), _ERASE, root=root) == "erase_command"
    for topic in (
        "retail/v1/s1/n1/cmd/member/x",
        "retail/v1/s 1/n1/cmd/member",
        "retail/v1/s1/n1/cmd/members",
    ):
        with pytest.raises(ValidationError):
            validate_payload(topic, _INFO)


def test_oversized_command_is_refused() -> None:
    raw = _wire(_INFO)
    padded = raw[:-1] + b" " * (64 * 1024 - len(raw)) + b"}"
    validate_payload(_topic("member_info"), padded)  # exactly at the bound: fine
    with pytest.raises(ValidationError, match="bytes"):
        validate_payload(_topic("member_info"), padded[:-1] + b" }")


# -- (g) the earn rules: retained configuration for every node, decoded by cloud_sync.loyalty.decode_rules --

_RULES_TOPIC = _topic("earn_rules")
_RULES = _example("earn_rules", "organicAndPromotions")
_BLACK_FRIDAY = _RULES["promotions"][0]


def _rules(**changes: Any) -> dict[str, Any]:
    """The rules ``organicAndPromotions`` with ``changes`` (a value of _DELETE removes that member)."""
    return _changed(_RULES, changes)


def _promotion(**changes: Any) -> dict[str, Any]:
    """The rules ``organicAndPromotions`` with its first promotion (Black Friday) changed."""
    return _rules(promotions=[_changed(_BLACK_FRIDAY, changes), *_RULES["promotions"][1:]])


def _node_accepts_rules(payload: bytes) -> bool:
    try:
        decode_rules(payload)
    except ValueError:
        return False
    return True


def _schema_accepts_rules(payload: bytes) -> bool:
    try:
        validate_payload(_RULES_TOPIC, payload)
    except ValidationError:
        return False
    return True


def test_earn_rules_are_retained_configuration_the_node_receives() -> None:
    doc = load_document()
    channel = doc["channels"]["earnRules"]
    assert channel["address"] == "{root}/config/earn-rules"
    assert list(channel["parameters"]) == ["root"]  # chain-wide: no store or node level
    assert list(channel["messages"]) == ["earn_rules"]
    # Only the central receiver publishes them: the node's one operation on the channel receives.
    (operation,) = [
        op for op in doc["operations"].values() if op["channel"]["$ref"] == "#/channels/earnRules"
    ]
    assert operation == doc["operations"]["receiveEarnRules"]
    assert operation["action"] == "receive"
    assert operation["messages"] == [{"$ref": "#/channels/earnRules/messages/earn_rules"}]
    bindings = _deref(doc, operation["bindings"])["mqtt"]
    assert (bindings["qos"], bindings["retain"]) == (1, True)
    assert not is_envelope("earn_rules")
    assert message_schema("earn_rules")["additionalProperties"] is False
    for root in ("retail/v1", "chain-a/retail/v2", "x"):
        topic = earn_rules_topic(root)
        assert topic == channel["address"].replace("{root}", root)
        route = route_for_topic(topic, root=root)
        assert (route.kinds, route.store, route.node) == (("earn_rules",), None, None)
        assert message_schema_for_topic(topic, root=root) == message_schema("earn_rules")


def test_the_node_subscribes_to_the_documented_topic(tmp_path: Path) -> None:
    from edge.config import load_settings
    from edge.node import relay_options

    env = {
        "KIOSK_EDGE_NODE__STORE": "de-ber-017",
        "KIOSK_EDGE_NODE__ID": "till-02",
        "KIOSK_EDGE_MQTT__TOPIC_ROOT": "chain-a/retail/v2",
        "KIOSK_EDGE_DATA__DIR": str(tmp_path),
    }
    topic = relay_options(load_settings(None, env)).rules_topic
    assert topic == "chain-a/retail/v2/config/earn-rules"
    assert route_for_topic(topic, root="chain-a/retail/v2").kind == "earn_rules"


class _RecordingClient:
    """Stands in for the central worker's paho client: records what it would subscribe and publish."""

    def __init__(self) -> None:
        self.published: list[tuple[str, bytes, int, bool]] = []

    def subscribe(self, _topics: Any) -> None:
        pass

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        self.published.append((topic, payload, qos, retain))


def test_the_central_receiver_publishes_valid_rules_retained_at_qos_1() -> None:
    """What a worker publishes on every connect, from a ``[loyalty]`` with multipliers and a promotion."""
    from cloud_sync.central.config import MqttSection
    from cloud_sync.central.program import LoyaltySection
    from cloud_sync.central.responder import Outgoing
    from cloud_sync.central.worker import IngestWorker

    berlin = timezone(timedelta(hours=1))
    program = msgspec.convert(
        {
            "category_percent": {"organic": 200},
            "promotions": [
                {"start": datetime(2026, 11, 27, tzinfo=berlin), "end": datetime(2026, 11, 28, tzinfo=berlin)}
                | {"percent": 300},
                {
                    "start": datetime(2026, 12, 1, 6, 30, 0, 500_000, tzinfo=UTC),
                    "end": datetime(2027, 1, 1, tzinfo=UTC),
                    "percent": 200,
                    "categories": ["coffee"],
                },
            ],
        },
        LoyaltySection,
    )
    # as cloud_sync.central.service.run builds it
    rules = Outgoing(earn_rules_topic("retail/v1"), msgspec.json.encode(program.earn_rules))
    worker = IngestWorker(MqttSection(), cast(Any, None), retained=[rules])
    client = _RecordingClient()
    connected = SimpleNamespace(is_failure=False)
    for _ in range(2):  # every connect
        worker._on_connect(cast(Any, client), None, SimpleNamespace(session_present=False), connected, None)
    assert len(client.published) == 2
    for topic, payload, qos, retain in client.published:
        assert (topic, qos, retain) == (_RULES_TOPIC, 1, True)
        assert payload_kind(topic, payload) == "earn_rules"
        assert decode_rules(payload) == program.earn_rules
    assert json.loads(client.published[0][1])["promotions"][1]["start"] == "2026-12-01T06:30:00.500000Z"


def test_the_default_example_is_the_default_rules() -> None:
    example = _example("earn_rules", "defaultRules")
    assert decode_rules(json.dumps(example).encode()) == DEFAULT_RULES
    assert _sets_sorted("earn_rules", json.loads(msgspec.json.encode(DEFAULT_RULES))) == example
    # an absent member takes the schema's default, which is the model's
    assert decode_rules(b"{}") == DEFAULT_RULES
    schema = message_schema("earn_rules")
    defaults = {name: prop["default"] for name, prop in schema["properties"].items()}
    assert defaults == example
    promotion = load_document()["components"]["schemas"]["Promotion"]["properties"]
    assert promotion["categories"]["default"] == msgspec.to_builtins(
        msgspec.structs.fields(Promotion)[-1].default
    )


def test_the_promotions_example_is_what_msgspec_encodes_and_means_what_it_says() -> None:
    from cloud_sync.loyalty import points_for

    berlin = timezone(timedelta(hours=1))
    rules = EarnRules(
        category_percent={"organic": 200},
        promotions=(
            Promotion(datetime(2026, 11, 27, tzinfo=berlin), datetime(2026, 11, 28, tzinfo=berlin), 300),
            Promotion(
                datetime(2026, 12, 1, tzinfo=UTC),
                datetime(2027, 1, 1, tzinfo=UTC),
                200,
                frozenset({"coffee"}),
            ),
        ),
    )
    assert decode_rules(json.dumps(_RULES).encode()) == rules
    assert _sets_sorted("earn_rules", json.loads(msgspec.json.encode(rules))) == _RULES

    def points(category: str, at: datetime) -> int:
        line = SimpleNamespace(quantity=1, unit_price=1000, category=category)
        return points_for([line], 0, None, rules, at=at)

    black_friday = datetime(2026, 11, 27, 12, tzinfo=berlin)
    assert points("organic", black_friday) == 60  # 200 % x 300 %, as the example's summary says
    assert points("homeware", black_friday) == 30
    assert points("tobacco", black_friday) == 0
    # Black Friday starts at midnight in Berlin, 23:00 UTC the day before
    assert points("organic", datetime(2026, 11, 26, 23, tzinfo=UTC)) == 60
    assert points("organic", datetime(2026, 11, 26, 22, 59, 59, 999_999, tzinfo=UTC)) == 20
    assert points("coffee", datetime(2026, 12, 24, tzinfo=UTC)) == 20
    assert points("coffee", datetime(2027, 1, 1, tzinfo=UTC)) == 10


def test_promotion_schema_members_are_the_models_fields() -> None:
    schema = load_document()["components"]["schemas"]["Promotion"]
    fields = msgspec.structs.fields(Promotion)
    assert schema["additionalProperties"] is False
    assert sorted(schema["properties"]) == sorted(f.encode_name for f in fields)
    assert sorted(schema["required"]) == sorted(f.encode_name for f in fields if f.required)


_LONG_NAMES = [f"c{i}" for i in range(256)]  # the bound
_TOO_MANY_NAMES = [f"c{i}" for i in range(257)]

#: Earn rules both the node (decode_rules) and the document's schema accept.
RULES_ACCEPTED: list[dict[str, Any] | bytes] = [
    *[e.payload for e in iter_examples() if e.kind == "earn_rules"],
    {},  # every member has a default
    _rules(minor_per_point=1),
    _rules(minor_per_point=10**12),  # the central receiver's configuration allows at most 1,000,000
    _rules(excluded_categories=[]),
    _rules(excluded_categories=["tobacco", "tobacco"]),  # a set: twice is once
    _rules(excluded_categories=_LONG_NAMES),  # at most 256
    _rules(excluded_categories=["Tabak Süd", ""]),  # any names: a name no sale line has is harmless
    _rules(tier_percent={}),
    _rules(tier_percent={"platinum": 1000, "banned": 0}),
    _rules(category_percent={"organic": 0, "coffee": 1000}),
    _rules(category_percent={"Bio Süd": 150}),
    _rules(promotions=[]),
    _rules(promotions=[_BLACK_FRIDAY] * 50),  # overlapping promotions multiply
    _promotion(percent=0),
    _promotion(percent=1000),
    _promotion(categories=_DELETE),
    _promotion(categories=["coffee", "coffee"]),
    _promotion(categories=_LONG_NAMES),
    _promotion(start="2026-11-27T00:00:00.5+05:30", end="2026-11-27T00:00:00.500001+05:30"),
    _promotion(start="2026-11-26T23:59:59.999999Z"),
    _promotion(start="2026-11-27T00:00:00-00:00"),
    _promotion(start="2028-02-29T00:00:00Z", end="2028-03-01T00:00:00-23:59"),
    _promotion(start="1970-01-01T00:00:00Z", end="9999-12-31T23:59:59Z"),
    b" \n" + _wire(_RULES) + b"\n",
]

#: Earn rules both the node and the document's schema refuse.
RULES_REFUSED: list[dict[str, Any] | bytes] = [
    # more than the bounds
    _rules(excluded_categories=_TOO_MANY_NAMES),
    _rules(category_percent=dict.fromkeys(_TOO_MANY_NAMES, 100)),
    _rules(tier_percent={f"t{i}": 100 for i in range(65)}),
    _rules(promotions=[_BLACK_FRIDAY] * 65),
    _promotion(categories=_TOO_MANY_NAMES),
    # floats, anywhere
    _rules(minor_per_point=100.0),
    _wire(_RULES).replace(b'"minor_per_point": 100', b'"minor_per_point": 1e2'),
    _wire(_RULES).replace(b'"organic": 200', b'"organic": 200.0'),
    _wire(_RULES).replace(b'"gold": 150', b'"gold": 150.5'),
    _wire(_RULES).replace(b'"percent": 300', b'"percent": 3e2'),
    _wire(_RULES).replace(b'"percent": 300', b'"percent": NaN'),
    _wire(_RULES).replace(b'"minor_per_point": 100', b'"minor_per_point": Infinity'),
    _rules(category_percent={"organic": 199.5}),
    # minor_per_point: an integer >= 1
    _rules(minor_per_point=0),
    _rules(minor_per_point=-1),
    _rules(minor_per_point=-100),
    _rules(minor_per_point="100"),
    _rules(minor_per_point=True),
    _rules(minor_per_point=None),
    # percents: integers 0 to 1000
    _rules(tier_percent={"gold": 1001}),
    _rules(tier_percent={"gold": -1}),
    _rules(tier_percent={"gold": 10**12}),
    _rules(tier_percent={"gold": "150"}),
    _rules(tier_percent={"gold": True}),
    _rules(tier_percent={"gold": None}),
    _rules(category_percent={"organic": 1001}),
    _rules(category_percent={"organic": -200}),
    _rules(category_percent={"organic": [200]}),
    _promotion(percent=1001),
    _promotion(percent=-1),
    _promotion(percent="300"),
    _promotion(percent=False),
    _promotion(percent=None),
    _promotion(percent=_DELETE),
    # names: a tier or a category with a percent has a name
    _rules(tier_percent={"": 100}),
    _rules(category_percent={"": 200}),
    # a promotion's instants: RFC 3339 date-times with a zone
    _promotion(start="2026-11-27T00:00:00"),
    _promotion(end="2026-11-28T00:00:00"),
    _promotion(start="2026-11-27T00:00:00", end="2026-11-28T00:00:00"),
    _promotion(start="2026-11-27"),
    _promotion(start="2026-11-27T00:00+01:00"),
    _promotion(start="2026-11-27T24:00:00+01:00"),
    _promotion(start="2026-11-27T23:59:60Z"),
    _promotion(start="2026-13-01T00:00:00Z"),
    _promotion(start="2026-11-00T00:00:00Z"),
    _promotion(start="2026-11-27T00:00:00+24:00"),
    _promotion(start="2026-11-27T00:00:00+01:60"),
    _promotion(start="2026-11-27T00:00:00+01"),
    _promotion(start="2026-11-27T00:00:00.Z"),
    _promotion(start="2026-11-27T00:00:00,5Z"),
    _promotion(start=" 2026-11-27T00:00:00Z"),
    _promotion(start="2026-11-27T00:00:00Z\n"),
    _promotion(start="+2026-11-27T00:00:00Z"),
    _promotion(start="Black Friday"),
    _promotion(start=""),
    _promotion(start=1795734000),  # a Unix time
    _promotion(start=None),
    _promotion(start=_DELETE),
    _promotion(end=_DELETE),
    # unknown members
    _rules(version=2),
    _rules(sig="A" * 86),
    _rules(Minor_per_point=100),
    _rules(tiers=[{"name": "gold", "min_spend": 150_000, "percent": 150}]),
    _rules(rewards=[]),
    _rules(expire_after_days=730),
    _promotion(name="Black Friday"),
    _promotion(Percent=300),
    _promotion(category="coffee"),
    # sets and lists: arrays of names, of promotions
    _rules(excluded_categories=None),
    _rules(excluded_categories="tobacco"),
    _rules(excluded_categories={"tobacco": True}),
    _rules(excluded_categories=[1]),
    _rules(excluded_categories=[None]),
    _rules(excluded_categories=[["tobacco"]]),
    _rules(tier_percent=None),
    _rules(tier_percent=[["gold", 150]]),
    _rules(category_percent=None),
    _rules(category_percent="organic=200"),
    _rules(promotions=None),
    _rules(promotions=_BLACK_FRIDAY),  # a promotion, not a list of them
    _rules(promotions=["black-friday"]),
    _rules(promotions=[{}]),
    _rules(promotions=[None]),
    _promotion(categories=None),
    _promotion(categories="coffee"),
    _promotion(categories=[1]),
    _promotion(categories=[None]),
    # not a JSON object
    b"",
    b"null",
    b"[]",
    b'"rules"',
    b"100",
    json.dumps([_RULES]).encode(),
    _wire(_RULES)[:-1],
    _wire(_RULES) + b" trailing",
    b"\xef\xbb\xbf" + _wire(_RULES),
    b"\xff" + _wire(_RULES),
]

RULES_CASES: list[tuple[dict[str, Any] | bytes, bool]] = [
    *[(payload, True) for payload in RULES_ACCEPTED],
    *[(payload, False) for payload in RULES_REFUSED],
]


@pytest.mark.parametrize(("payload", "accepted"), RULES_CASES)
def test_earn_rules_accepted_by_the_node_exactly_when_by_the_schema(
    payload: dict[str, Any] | bytes, accepted: bool
) -> None:
    raw = _wire(payload)
    assert (_node_accepts_rules(raw), _schema_accepts_rules(raw)) == (accepted, accepted)


#: Spellings the node's decoder reads but the contract (what the central receiver sends) does not allow.
RULES_TOLERATED: list[bytes] = [
    _wire(_promotion(start="2026-11-27t00:00:00+01:00")),
    _wire(_promotion(start="2026-11-26T23:00:00z")),
    _wire(_promotion(start="2026-11-27 00:00:00+01:00")),
    _wire(_promotion(start="2026-11-27T00:00:00+0100")),
    _wire(_promotion(start="2026-11-27T00:00:00.0000001+01:00")),  # more than microseconds
    _wire(_RULES).replace(b'"minor_per_point": 100', b'"minor_per_point": 7, "minor_per_point": 100'),
]


@pytest.mark.parametrize("payload", RULES_TOLERATED)
def test_other_spellings_are_tolerated_by_the_node_but_not_in_the_contract(payload: bytes) -> None:
    assert decode_rules(payload) == decode_rules(_wire(_RULES))
    assert not _schema_accepts_rules(payload)


#: Rules the schema cannot refuse (its descriptions say so), and the node refuses.
RULES_BEYOND_THE_SCHEMA: list[dict[str, Any]] = [
    _promotion(end=_BLACK_FRIDAY["start"]),  # ends as it starts
    _promotion(start=_BLACK_FRIDAY["end"], end=_BLACK_FRIDAY["start"]),  # ends before it starts
    _promotion(end="2026-11-26T23:00:00Z"),  # the start, in UTC
    _promotion(start="2026-02-30T00:00:00Z"),  # no such day
    _promotion(start="2026-04-31T00:00:00Z"),
    _promotion(start="2027-02-29T00:00:00Z"),  # not a leap year
    _promotion(start="0000-11-27T00:00:00Z"),  # no year 0 in Python
]


@pytest.mark.parametrize("payload", RULES_BEYOND_THE_SCHEMA)
def test_what_the_schema_cannot_say_the_node_refuses(payload: dict[str, Any]) -> None:
    assert _schema_accepts_rules(_wire(payload))
    with pytest.raises(ValueError, match="earn rules"):
        decode_rules(_wire(payload))


_MANY = 10_000

#: Rules bigger than a message may be (65,536 bytes): lists no configuration needs.
RULES_OVERSIZED: list[dict[str, Any]] = [
    _rules(excluded_categories=[f"category-{i}" for i in range(_MANY)]),
    _rules(tier_percent={f"tier-{i}": 100 for i in range(_MANY)}),
    _rules(category_percent={f"category-{i}": 200 for i in range(_MANY)}),
    _rules(promotions=[_BLACK_FRIDAY] * 1000),
    _promotion(categories=[f"category-{i}" for i in range(_MANY)]),
]


@pytest.mark.parametrize("payload", RULES_OVERSIZED)
def test_oversized_rules_are_refused_by_the_contract(payload: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="bytes"):
        validate_payload(_RULES_TOPIC, _wire(payload))


@pytest.mark.parametrize("payload", RULES_OVERSIZED)
def test_oversized_rules_are_refused_by_the_node(payload: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        decode_rules(_wire(payload))


def test_rules_at_the_size_bound() -> None:
    raw = _wire(_RULES)
    padded = raw[:-1] + b" " * (64 * 1024 - len(raw)) + b"}"
    validate_payload(_RULES_TOPIC, padded)  # exactly at the bound: fine
    assert decode_rules(padded) == decode_rules(raw)
    with pytest.raises(ValidationError, match="bytes"):
        validate_payload(_RULES_TOPIC, padded[:-1] + b" }")


@pytest.mark.parametrize("kind", ["member_info", "erase_command", "redemption_reply", "member_lookup_reply"])
def test_other_messages_are_not_earn_rules(kind: str) -> None:
    for example in iter_examples():
        if example.kind == kind:
            with pytest.raises(ValidationError):
                validate_payload(_RULES_TOPIC, example.payload)
            with pytest.raises(ValueError):
                decode_rules(_wire(example.payload))
