"""Joining the loyalty programme at the kiosk: the rules, kept out of the Flask views.

Personal data (first name, e-mail, phone) is sealed to the central PII vault's public key here, in
memory, and only the sealed box reaches the outbox: a stolen Pi holds no readable personal data. The
event itself carries only tokens (the new member code's, the bound card's) and the consent choices.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from nacl.public import PublicKey, SealedBox

from cloud_sync.envelope import SignedMessage
from cloud_sync.outbox import Outbox
from edge.identity import Pseudonymizer
from edge.membercodes import MemberCodeIssuer

log = logging.getLogger(__name__)

VAULT_PUBLIC_FILE = "vault-standalone.pub"
NOTICE_VERSION = "2026-11"
HEARD_VIA = ("friend", "in_store", "social", "search", "advert", "other", "not_said")
MAX_NAME = 40
_NAME_OK = re.compile(r"^[^\W\d_](?:[^\W\d_]|[ '\-.])*\Z")


class Vault:
    """The PII vault's public key: anything sealed here opens only with the vault's private key."""

    def __init__(self, public_key: bytes) -> None:
        self._box = SealedBox(PublicKey(public_key))
        self.key_id = hashlib.sha256(public_key).hexdigest()[:16]

    def seal(self, data: dict[str, str]) -> str:
        """Encrypt ``data`` (compact JSON) to the vault; URL-safe base64 without padding."""
        sealed = self._box.encrypt(json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode())
        return base64.urlsafe_b64encode(sealed).rstrip(b"=").decode()


def load_vault(configured: str, data_dir: Path) -> tuple[Vault, bool]:
    """The configured vault key, or (standalone) a throwaway one whose private half was never kept.

    Returns the vault and whether it is the standalone throwaway: data sealed to it can be read by
    nobody, which is the only safe default for a node that has no central vault to send it to.
    """
    if configured:
        return Vault(base64.b64decode(configured.removeprefix("x25519:"))), False
    path = data_dir / VAULT_PUBLIC_FILE
    if not path.exists():
        from nacl.public import PrivateKey

        public = bytes(PrivateKey.generate().public_key)  # the private key is dropped right here
        path.write_text("x25519:" + base64.b64encode(public).decode() + "\n")
        log.warning(
            "standalone node: personal data typed at the kiosk is sealed to a throwaway key nobody can "
            "open; set identity.vault_public_key to the chain's PII vault key"
        )
    return Vault(base64.b64decode(path.read_text().strip().removeprefix("x25519:"))), True


def clean_name(text: str) -> str | None:
    """A first name as people write it (any script, spaces, hyphens, apostrophes), or None."""
    name = unicodedata.normalize("NFC", " ".join(text.split()))
    if not name or len(name) > MAX_NAME or not _NAME_OK.match(name):
        return None
    return name


def clean_email(text: str) -> str | None:
    """The normalised address if its syntax is valid (no DNS lookup: the kiosk may be offline)."""
    if not text or len(text) > 254:
        return None
    # imported on first use: the validators' data is only needed once a customer fills in a form
    from email_validator import EmailNotValidError, validate_email

    try:
        return str(validate_email(text.strip(), check_deliverability=False).normalized)
    except EmailNotValidError:
        return None


def clean_phone(text: str, region: str) -> str | None:
    """The number in E.164 if it is a valid number (local numbers read in the store's region)."""
    if not text or len(text) > 32:
        return None
    import phonenumbers

    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


@dataclass(frozen=True, slots=True)
class SignupRequest:
    """A validated sign-up (the form layer checked and normalised every field)."""

    first_name: str
    email: str | None
    phone: str | None
    marketing_email: bool
    marketing_sms: bool
    heard_via: str
    language: str

    def __post_init__(self) -> None:
        if not (self.email or self.phone):
            raise ValueError("a sign-up needs an e-mail address or a phone number")
        if self.marketing_email and not self.email:
            raise ValueError("marketing by e-mail needs an e-mail address")
        if self.marketing_sms and not self.phone:
            raise ValueError("marketing by SMS needs a phone number")
        if self.heard_via not in HEARD_VIA:
            raise ValueError("unknown answer to 'how did you hear about us?'")

    def __repr__(self) -> str:  # never print personal data, even in a traceback
        return "SignupRequest(<personal data hidden>)"


@dataclass(frozen=True, slots=True)
class Registration:
    """What the new member sees: their code (and the event that carries the sign-up)."""

    member_code: str
    message: SignedMessage
    card_bound: bool


class SignupService:
    """Issues the member code, seals the personal data, queues the ``signup`` event."""

    def __init__(
        self, outbox: Outbox, pseudonymizer: Pseudonymizer, issuer: MemberCodeIssuer, vault: Vault
    ) -> None:
        self._outbox = outbox
        self._pseudonymizer = pseudonymizer
        self._issuer = issuer
        self._vault = vault

    def register(self, request: SignupRequest, card_token: str | None) -> Registration:
        """Join; ``card_token`` is the card tapped just before (bound to the new member), if any."""
        member_code = self._issuer.issue()
        personal = {"first_name": request.first_name, "member_code": member_code}
        if request.email:
            personal["email"] = request.email
        if request.phone:
            personal["phone"] = request.phone
        body: dict[str, object] = {
            "member_token": self._pseudonymizer.barcode_token(member_code),
            "consent": {
                "privacy_notice": True,
                "marketing_email": request.marketing_email,
                "marketing_sms": request.marketing_sms,
                "notice_version": NOTICE_VERSION,
            },
            "heard_via": request.heard_via,
            "language": request.language,
            "sealed": self._vault.seal(personal),
            "vault_key": self._vault.key_id,
        }
        if card_token:
            body["card_token"] = card_token
        message = self._outbox.accept("signup", body)
        log.info("sign-up queued as event seq %d (card %s)", message.seq, "bound" if card_token else "none")
        return Registration(member_code, message, card_token is not None)
