"""Answers to the tills (MQTT v5 request/response) and pushes to the nodes, without the transport.

A request arrives on ``{root}/{store}/{node}/request/{kind}`` as a signed envelope, with a response topic
and correlation data. It is answered only when:

- the node is registered and the signature verifies (a forged request gets no answer at all);
- the envelope's kind matches the topic, and the response topic is that node's own reply topic, so the
  receiver can never be used to publish into another node's topics;
- it is fresh (``request_max_age``, by the envelope ``ts``): a till that asked has given up after ~3 s,
  and a redelivered old request must not spend a member's points for a reward nobody handed over — it
  is declined as ``expired``, without effect.

Pushes: after each committed batch the worker asks for the member summaries of the customers of new
sales and sign-ups; each goes to the node that sent the event on ``cmd/member``, so its screens show
current figures without asking.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec

from cloud_sync.central.ingest import NodeKeys
from cloud_sync.central.members import MemberService
from cloud_sync.envelope import SCHEMA_PREFIX, verify
from cloud_sync.errors import EnvelopeError
from cloud_sync.messages import (
    MemberLookupReply,
    MemberLookupRequest,
    RedemptionReply,
    RedemptionRequestBody,
)

log = logging.getLogger(__name__)

#: request topic kind -> envelope schema kind
REQUEST_KINDS = {"redemption": "redemption_request", "member": "member_lookup"}


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message to publish (QoS 1): a reply carries the request's correlation data."""

    topic: str
    payload: bytes
    correlation: bytes | None = None


class Responder:
    """Pure request handling: verified envelope in, reply out (the worker does the MQTT)."""

    def __init__(self, members: MemberService, keys: NodeKeys, topic_root: str, max_age: float) -> None:
        self._members = members
        self._keys = keys
        self._root = topic_root
        self._root_parts = topic_root.split("/")
        self._max_age = max_age

    def reply_topic(self, store: str, node: str) -> str:
        """The only topic a node's replies go to."""
        return f"{self._root}/{store}/{node}/reply"

    def answer(
        self,
        topic: str,
        payload: bytes,
        response_topic: str | None,
        correlation: bytes | None,
        *,
        now: datetime | None = None,
    ) -> Outgoing | None:
        """The reply to one request, or None when it must not be answered (the reason is logged)."""
        parts = topic.split("/")
        n = len(self._root_parts)
        if len(parts) != n + 4 or parts[:n] != self._root_parts or parts[n + 2] != "request":
            log.warning("request on an unexpected topic %r ignored", topic[:200])
            return None
        store, node, kind = parts[n], parts[n + 1], parts[n + 3]
        schema_kind = REQUEST_KINDS.get(kind)
        if schema_kind is None:
            log.warning("unknown request kind %r from %s/%s ignored", kind[:40], store, node)
            return None
        if response_topic != self.reply_topic(store, node) or not correlation:
            log.warning("request from %s/%s without its own reply topic and correlation ignored", store, node)
            return None
        key = self._keys.get(store, node)
        if key is None:
            log.warning("request from unregistered node %s/%s ignored", store, node)
            return None
        try:
            doc = verify(payload, key)
        except EnvelopeError as exc:
            log.warning("request from %s/%s refused: %s", store, node, exc)
            return None
        if (doc["store"], doc["node"], doc["schema"]) != (store, node, SCHEMA_PREFIX + schema_kind):
            log.warning("request from %s/%s does not match its topic; ignored", store, node)
            return None
        age = (
            (now or datetime.now(UTC)) - datetime.fromisoformat(doc["ts"].replace("Z", "+00:00"))
        ).total_seconds()
        try:
            if kind == "redemption":
                request = msgspec.convert(doc["body"], RedemptionRequestBody, strict=True)
                if age > self._max_age:
                    log.warning(
                        "redemption %s from %s/%s is %.0f s old: expired",
                        request.request_id,
                        store,
                        node,
                        age,
                    )
                    reply: Any = RedemptionReply(
                        request_id=request.request_id, approved=False, reason="expired"
                    )
                else:
                    reply = self._members.redeem(store, node, request)
            else:
                lookup = msgspec.convert(doc["body"], MemberLookupRequest, strict=True)
                if age > self._max_age:
                    return None  # the node stopped waiting; nothing to spend, nothing to say
                found = self._members.infos(lookup.tokens)
                reply = MemberLookupReply(
                    request_id=lookup.request_id, members=[found[t] for t in lookup.tokens]
                )
        except msgspec.ValidationError as exc:
            log.warning("malformed %s request from %s/%s: %s", kind, store, node, exc)
            return None
        return Outgoing(self.reply_topic(store, node), msgspec.json.encode(reply), correlation)

    def pushes(self, docs: Sequence[dict[str, Any]]) -> list[Outgoing]:
        """Member summaries for the customers of freshly committed sales and sign-ups, to their node."""
        wanted: dict[tuple[str, str, str], None] = {}
        for doc in docs:
            event_type = doc["schema"].removeprefix(SCHEMA_PREFIX)
            body = doc["body"]
            tokens: list[str] = []
            if event_type == "sale" and body.get("customer"):
                tokens = [body["customer"]["token"]]
            elif event_type == "signup":
                tokens = [body["member_token"], *([body["card_token"]] if body.get("card_token") else [])]
            elif event_type == "redemption":
                tokens = [body["customer"]["token"]]
            for token in tokens:
                wanted[(doc["store"], doc["node"], token)] = None
        found = self._members.infos([token for _store, _node, token in wanted])
        return [
            Outgoing(f"{self._root}/{store}/{node}/cmd/member", msgspec.json.encode(found[token]))
            for store, node, token in wanted
        ]
