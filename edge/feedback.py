"""The post-sale survey and warranty registration: the rules, outside the Flask views.

Free text and contact details are sealed to the PII vault like every other personal datum; scores,
serial numbers and receipt codes are not personal and travel in clear for the central KPIs.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from cloud_sync.envelope import SignedMessage
from cloud_sync.outbox import Outbox
from edge.signup import Vault

log = logging.getLogger(__name__)

MAX_COMMENT = 500
_SERIAL = re.compile(r"^[0-9A-Z][0-9A-Z./-]{2,39}\Z")
_RECEIPT = re.compile(r"^[0-9A-Za-z-]{4,48}\Z")


def clean_serial(text: str) -> str | None:
    """A product serial number as printed (letters, digits, ``.``, ``/``, ``-``), upper-cased."""
    value = text.strip().upper()
    return value if _SERIAL.match(value) and value.isascii() else None


def clean_receipt(text: str) -> str | None:
    """A receipt code as the POS prints it."""
    value = text.strip()
    return value if _RECEIPT.match(value) else None


def clean_comment(text: str) -> str | None:
    """The "why?" answer: printable, at most 500 characters; empty means not given."""
    value = " ".join(text.split())
    if not value:
        return None
    if len(value) > MAX_COMMENT or not value.isprintable():
        raise ValueError("comment too long or not printable")
    return value


@dataclass(frozen=True, slots=True)
class SurveyAnswer:
    """A validated survey answer."""

    score: int
    comment: str | None
    language: str
    receipt: str | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.score <= 10:
            raise ValueError("score must be 0..10")

    def __repr__(self) -> str:
        return f"SurveyAnswer(score={self.score}, <comment hidden>)"


@dataclass(frozen=True, slots=True)
class WarrantyRequest:
    """A validated warranty registration; name/contact only when the customer is not identified."""

    serial: str
    receipt: str
    gtin: str | None
    name: str | None
    email: str | None
    phone: str | None
    language: str

    def __repr__(self) -> str:
        return "WarrantyRequest(<personal data hidden>)"


class FeedbackService:
    """Queues ``survey`` and ``warranty`` events."""

    def __init__(self, outbox: Outbox, vault: Vault) -> None:
        self._outbox = outbox
        self._vault = vault

    def answer_survey(self, answer: SurveyAnswer, member_token: str | None) -> SignedMessage:
        """Queue one survey answer."""
        body: dict[str, object] = {
            "score": answer.score,
            "language": answer.language,
            "vault_key": self._vault.key_id,
        }
        if answer.comment:
            body["sealed_comment"] = self._vault.seal({"comment": answer.comment})
        if member_token:
            body["member_token"] = member_token
        if answer.receipt:
            body["receipt"] = answer.receipt
        message = self._outbox.accept("survey", body)
        log.info("survey answer queued as event seq %d", message.seq)
        return message

    def register_warranty(self, request: WarrantyRequest, member_token: str | None) -> SignedMessage:
        """Queue one warranty registration."""
        if member_token is None and not (request.name and (request.email or request.phone)):
            raise ValueError("without a member, a warranty registration needs a name and a contact")
        body: dict[str, object] = {
            "serial": request.serial,
            "receipt": request.receipt,
            "language": request.language,
            "vault_key": self._vault.key_id,
        }
        if request.gtin:
            body["gtin"] = request.gtin
        if member_token:
            body["member_token"] = member_token
        if request.name:
            personal = {"name": request.name}
            if request.email:
                personal["email"] = request.email
            if request.phone:
                personal["phone"] = request.phone
            body["sealed"] = self._vault.seal(personal)
        message = self._outbox.accept("warranty", body)
        log.info("warranty registration queued as event seq %d", message.seq)
        return message
