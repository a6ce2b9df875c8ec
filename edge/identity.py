"""Turning a card UID or a loyalty barcode into the pseudonymous identity token of DESIGN.md.

The raw value lives only in memory, inside this call: the token is HMAC-SHA256 under the chain's key,
domain-separated by source so a barcode can never collide with a card UID of the same bytes.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Literal

Source = Literal["nfc", "barcode"]
MAX_UID_BYTES = 10  # ISO 14443 UIDs are 4, 7 or 10 bytes
MAX_CODE_CHARS = 128


class Pseudonymizer:
    """Holds the chain key; the only object on the node that can make tokens."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def __repr__(self) -> str:  # never print the key, even in a traceback's locals
        return "Pseudonymizer(<key hidden>)"

    def card_token(self, uid: bytes) -> str:
        """Token of an NFC card UID (4, 7 or 10 bytes)."""
        if len(uid) not in (4, 7, 10):
            raise ValueError(f"a card UID has 4, 7 or 10 bytes, not {len(uid)}")
        return self._token(b"nfc:" + uid)

    def barcode_token(self, code: str) -> str:
        """Token of a scanned loyalty code (printable text, at most 128 characters)."""
        if not code or len(code) > MAX_CODE_CHARS or not code.isprintable():
            raise ValueError(f"a loyalty code is 1-{MAX_CODE_CHARS} printable characters")
        return self._token(b"barcode:" + code.encode("utf-8"))

    def _token(self, message: bytes) -> str:
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()
