"""Check MQTT payloads against the published AsyncAPI document (``docs/asyncapi.yaml``).

The document is the contract with central; this helper makes it executable in the tests:

* ``message_schemas_for_topic(topic)`` maps a real topic (``retail/v1/s1/n1/event/identity``,
  ``retail/v1/s1/n1/status``, ``retail/v1/s1/n1/reply``, the chain-wide ``retail/v1/config/earn-rules``)
  to the JSON Schemas of the messages the document declares for it, by message kind: one for most
  channels, several for the node's reply topic, which carries the answers to every kind of request
  (``message_schema_for_topic`` when there is just one);
* ``validate_payload(topic, payload)`` checks raw bytes (or a decoded dict) against them (exactly one of
  the channel's messages must match) and that an envelope's ``store``/``node`` are the topic's;
  ``payload_kind(topic, payload)`` says which message it is; ``validate_message(kind, payload)`` checks a
  payload as one message kind (``identity``, ``assist``, ``status``, ``presence``, ``redemption_reply``,
  ``member_info``, ``earn_rules``, ...).
* ``is_envelope(kind)`` tells signed envelopes from plain messages (the central receiver's replies, commands
  and retained configuration, which carry no ``store``/``node`` of their own: for them only the topic's
  shape is checked).

Every mismatch raises ``jsonschema.ValidationError``. Validation is JSON Schema draft 7 with two
deliberate tightenings, so the check is as strict as the node's own message models and the wire rules:

* ``integer`` does not accept floats (JSON Schema would accept ``1.0``; the envelope forbids any float,
  and the raw JSON is also scanned for float literals, ``NaN`` and ``Infinity``);
* ``pattern`` uses ECMA-262 semantics as the spec says: ``$`` matches only at the very end (Python's
  ``re`` also matches before a trailing newline) and ``\\d``/``\\w`` are ASCII-only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from jsonschema import ValidationError
from jsonschema.protocols import Validator
from referencing import Registry
from referencing.jsonschema import DRAFT7

DOC_PATH = Path(__file__).resolve().parents[2] / "docs" / "asyncapi.yaml"
DOC_URI = DOC_PATH.as_uri()
DEFAULT_ROOT = "retail/v1"
#: Same bound as ``cloud_sync.envelope.MAX_PAYLOAD_BYTES`` (kept literal: the doc states it, too).
MAX_PAYLOAD_BYTES = 64 * 1024

__all__ = [
    "DEFAULT_ROOT",
    "DOC_PATH",
    "Example",
    "Route",
    "ValidationError",
    "decode_payload",
    "is_envelope",
    "iter_examples",
    "load_document",
    "message_kinds",
    "message_schema",
    "message_schema_for_topic",
    "message_schemas_for_topic",
    "payload_kind",
    "route_for_topic",
    "validate_message",
    "validate_payload",
]


# -- the document -----------------------------------------------------------------------------------


@cache
def load_document() -> dict[str, Any]:
    """The parsed AsyncAPI document (cached; treat it as read-only)."""
    with DOC_PATH.open(encoding="utf-8") as handle:
        doc = yaml.safe_load(handle)
    if not isinstance(doc, dict) or not str(doc.get("asyncapi", "")).startswith("3."):
        raise ValueError(f"{DOC_PATH} is not an AsyncAPI 3 document")
    return doc


def _pointer_get(doc: Any, pointer: str) -> Any:
    node = doc
    for raw in pointer.lstrip("/").split("/") if pointer else []:
        part = raw.replace("~1", "/").replace("~0", "~")
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def _follow(doc: dict[str, Any], pointer: str) -> tuple[str, Any]:
    """Follow local ``$ref``s starting at ``pointer``; returns the final pointer and object."""
    node = _pointer_get(doc, pointer)
    seen = {pointer}
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        if not isinstance(ref, str) or not ref.startswith("#"):
            raise ValueError(f"only local references are supported, got {ref!r} at {pointer}")
        pointer = ref[1:]
        if pointer in seen:
            raise ValueError(f"reference cycle at {pointer}")
        seen.add(pointer)
        node = _pointer_get(doc, pointer)
    return pointer, node


@dataclass(frozen=True, slots=True)
class _Message:
    kind: str  # the message's key in its channel: identity, status, redemption_reply, member_info, ...
    channel: str  # the key of its channel
    message_pointer: str  # JSON pointer of the resolved Message Object
    payload_pointer: str  # JSON pointer of the payload schema


@dataclass(frozen=True, slots=True)
class _Channel:
    key: str
    address: str
    kinds: tuple[str, ...]  # the keys of its messages, in document order


@cache
def _channels() -> tuple[_Channel, ...]:
    doc = load_document()
    found = []
    for key, channel in doc["channels"].items():
        messages = channel.get("messages") or {}
        if not messages:
            raise ValueError(f"channel {key} declares no messages")
        found.append(_Channel(key, channel["address"], tuple(messages)))
    return tuple(found)


@cache
def _messages() -> dict[str, _Message]:
    doc = load_document()
    found: dict[str, _Message] = {}
    for channel in _channels():
        for kind in channel.kinds:
            if kind in found:
                raise ValueError(
                    f"message kind {kind!r} is declared by channels {found[kind].channel} and {channel.key}"
                )
            pointer, _ = _follow(doc, f"/channels/{channel.key}/messages/{kind}")
            found[kind] = _Message(kind, channel.key, pointer, pointer + "/payload")
    return found


def message_kinds() -> list[str]:
    """The message kinds the document declares, e.g. ``["identity", "assist", ..., "member_info"]``."""
    return list(_messages())


def _message(kind: str) -> _Message:
    try:
        return _messages()[kind]
    except KeyError:
        raise KeyError(
            f"docs/asyncapi.yaml declares no message kind {kind!r} (known: {message_kinds()})"
        ) from None


@dataclass(frozen=True, slots=True)
class Example:
    """One message example from the document."""

    kind: str
    name: str
    payload: dict[str, Any]


def iter_examples() -> Iterator[Example]:
    """Every message example in the document, with its message kind."""
    doc = load_document()
    for kind, found in _messages().items():
        message = _pointer_get(doc, found.message_pointer)
        for index, example in enumerate(message.get("examples") or []):
            yield Example(kind, example.get("name", f"#{index}"), example["payload"])


# -- validation -------------------------------------------------------------------------------------


def _ecma_to_python(pattern: str) -> str:
    """Rewrite ``$`` outside character classes as ``\\Z`` (ECMA-262 ``$`` never matches before a newline)."""
    out: list[str] = []
    in_class = False
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\" and i + 1 < len(pattern):
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if char == "[" and not in_class:
            in_class = True
        elif char == "]" and in_class:
            in_class = False
        elif char == "$" and not in_class:
            char = r"\Z"
        out.append(char)
        i += 1
    return "".join(out)


@cache
def _compile(pattern: str) -> re.Pattern[str]:
    return re.compile(_ecma_to_python(pattern), re.ASCII)


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not _compile(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _strict_integer(_checker: Any, instance: Any) -> bool:
    return isinstance(instance, int) and not isinstance(instance, bool)


_StrictDraft7 = jsonschema.validators.extend(
    jsonschema.Draft7Validator,
    validators={"pattern": _pattern},
    type_checker=jsonschema.Draft7Validator.TYPE_CHECKER.redefine("integer", _strict_integer),
)


@cache
def _registry() -> Registry[Any]:
    resource = DRAFT7.create_resource(load_document())
    registry: Registry[Any] = Registry().with_resource(DOC_URI, resource)
    return registry


@cache
def _validator(payload_pointer: str) -> Validator:
    schema = {"$ref": f"{DOC_URI}#{payload_pointer}"}
    validator: Validator = _StrictDraft7(schema, registry=_registry())
    return validator


def is_envelope(kind: str) -> bool:
    """Whether message ``kind`` is a signed envelope (its payload schema requires ``sig``)."""
    return "sig" in message_schema(kind).get("required", ())


def message_schema(kind: str) -> dict[str, Any]:
    """The payload schema (still containing ``$ref``s into the document) of message ``kind``."""
    _, schema = _follow(load_document(), _message(kind).payload_pointer)
    return dict(schema)


@dataclass(frozen=True, slots=True)
class Route:
    """What a topic says: the message kinds of its channel and the topic's ``store`` and ``node`` levels.

    ``store`` and ``node`` are None for a chain-wide topic (``{root}/config/earn-rules``).
    """

    kinds: tuple[str, ...]
    store: str | None
    node: str | None

    @property
    def kind(self) -> str:
        """The message kind of a channel with one message (``payload_kind`` tells several apart)."""
        if len(self.kinds) != 1:
            raise ValueError(f"the topic's channel carries several messages {self.kinds}; use payload_kind")
        return self.kinds[0]


_PARAM_RE = re.compile(r"\{([A-Za-z0-9_]+)\}")


def route_for_topic(topic: str, *, root: str = DEFAULT_ROOT) -> Route:
    """Match ``topic`` against the channel addresses of the document, with ``{root}`` fixed to ``root``.

    Raises ValidationError if no channel matches (e.g. a wildcard or a separator in a store id).
    """
    ident = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
    for channel in _channels():
        parts = _PARAM_RE.split(channel.address)
        regex = []
        for index, part in enumerate(parts):
            if index % 2 == 0:
                regex.append(re.escape(part))
            elif part == "root":
                regex.append(re.escape(root))
            else:
                regex.append(f"(?P<{part}>{ident})")
        match = re.fullmatch("".join(regex), topic, re.ASCII)
        if match:
            levels = match.groupdict()
            return Route(channel.kinds, levels.get("store"), levels.get("node"))
    raise ValidationError(f"topic {topic!r} matches no channel of docs/asyncapi.yaml (root {root!r})")


def message_schemas_for_topic(topic: str, *, root: str = DEFAULT_ROOT) -> dict[str, dict[str, Any]]:
    """The payload schemas the document declares for ``topic``, by message kind."""
    return {kind: message_schema(kind) for kind in route_for_topic(topic, root=root).kinds}


def message_schema_for_topic(topic: str, *, root: str = DEFAULT_ROOT) -> dict[str, Any]:
    """The payload schema the document declares for ``topic`` (a channel with one message)."""
    return message_schema(route_for_topic(topic, root=root).kind)


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValidationError(f"duplicate member {key!r} in JSON object")
        result[key] = value
    return result


def _reject_float(text: str) -> Any:
    raise ValidationError(f"floating-point number {text} is not allowed in messages")


def _reject_constant(text: str) -> Any:
    raise ValidationError(f"{text} is not valid JSON")


def _check_plain_json(value: Any, where: str = "payload") -> None:
    """Refuse anything a JSON parser of the wire bytes could not have produced under our rules."""
    if isinstance(value, float):
        raise ValidationError(f"{where}: floating-point number {value!r} is not allowed in messages")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValidationError(f"{where}: object key {key!r} is not a string")
            _check_plain_json(item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_plain_json(item, f"{where}[{index}]")
    elif value is not None and not isinstance(value, str | int | bool):
        raise ValidationError(f"{where}: {type(value).__name__} is not a JSON value")


def decode_payload(payload: bytes | str | dict[str, Any]) -> dict[str, Any]:
    """Decode wire bytes (UTF-8 JSON object, no floats, no duplicate members) or check a dict."""
    if isinstance(payload, dict):
        _check_plain_json(payload)
        return payload
    raw = payload.encode("utf-8") if isinstance(payload, str) else payload
    if len(raw) > MAX_PAYLOAD_BYTES:
        raise ValidationError(f"payload is {len(raw)} bytes, more than the {MAX_PAYLOAD_BYTES} allowed")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValidationError(f"payload is not UTF-8: {exc}") from exc
    try:
        doc = json.loads(
            text,
            object_pairs_hook=_reject_duplicates,
            parse_float=_reject_float,
            parse_constant=_reject_constant,
        )
    except json.JSONDecodeError as exc:
        raise ValidationError(f"payload is not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise ValidationError(f"payload is a JSON {type(doc).__name__}, not an object")
    return doc


def _error(kind: str, doc: dict[str, Any]) -> ValidationError | None:
    validator = _validator(_message(kind).payload_pointer)
    error: ValidationError | None = jsonschema.exceptions.best_match(validator.iter_errors(doc))
    return error


def _validate(kind: str, doc: dict[str, Any]) -> None:
    error = _error(kind, doc)
    if error is not None:
        raise error


def _match(route: Route, topic: str, doc: dict[str, Any]) -> str:
    """The one message kind of the topic's channel that ``doc`` is valid as."""
    errors = {kind: _error(kind, doc) for kind in route.kinds}
    valid = [kind for kind, error in errors.items() if error is None]
    if len(valid) == 1:
        return valid[0]
    if valid:
        raise ValidationError(f"payload on {topic!r} is valid as several messages {valid}; it must be one")
    if len(route.kinds) == 1:
        (error,) = errors.values()
        assert error is not None
        raise error
    reasons = "; ".join(f"as {kind}: {error.message}" for kind, error in errors.items() if error is not None)
    raise ValidationError(f"payload on {topic!r} is none of the messages {list(route.kinds)} ({reasons})")


def validate_message(kind: str, payload: bytes | str | dict[str, Any]) -> dict[str, Any]:
    """Validate a payload as message ``kind``; returns the decoded envelope."""
    doc = decode_payload(payload)
    _validate(kind, doc)
    return doc


def validate_payload(
    topic: str, payload: bytes | str | dict[str, Any], *, root: str = DEFAULT_ROOT
) -> dict[str, Any]:
    """Validate a payload published on ``topic``; returns the decoded envelope (or plain message).

    Besides the schema, an envelope's ``store`` and ``node`` must be the topic's.
    """
    return _validate_on_topic(topic, payload, root)[1]


def payload_kind(topic: str, payload: bytes | str | dict[str, Any], *, root: str = DEFAULT_ROOT) -> str:
    """Validate a payload published on ``topic`` like ``validate_payload``; returns its message kind."""
    return _validate_on_topic(topic, payload, root)[0]


def _validate_on_topic(
    topic: str, payload: bytes | str | dict[str, Any], root: str
) -> tuple[str, dict[str, Any]]:
    route = route_for_topic(topic, root=root)
    doc = decode_payload(payload)
    kind = _match(route, topic, doc)
    if not is_envelope(kind):
        return kind, doc
    for member in ("store", "node"):
        if doc[member] != getattr(route, member):
            raise ValidationError(
                f"envelope {member} {doc[member]!r} does not match the topic's {getattr(route, member)!r}"
            )
    return kind, doc
