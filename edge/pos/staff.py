"""The staff PIN that guards the pairing page on the shop LAN (``/pos/staff``).

``kiosk-edge pair`` needs a shell on the node; the staff page lets a shift manager get a pairing code from
the POS's own browser instead, after typing the store's staff PIN. The PIN is stored only as an scrypt hash
(a PIN is short: a fast hash would fall to a dictionary in seconds on a stolen SD card), in the data
directory with mode 0600, set with ``kiosk-edge pos set-pin``. Wrong PINs lock the page the same way wrong
pairing codes lock pairing: ``max_failures`` in a row, then ``lockout`` seconds, logged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path

from edge.errors import EdgeError
from edge.keys import read_secret, write_secret

log = logging.getLogger(__name__)

PIN_FILE = "staff-pin"
MIN_PIN, MAX_PIN = 6, 12
# scrypt cost: ~50 ms and 16 MiB per check on a Pi 4 — slow for a dictionary, fine for a person
_N, _R, _P = 2**14, 8, 1


class PinLocked(EdgeError):  # noqa: N818 - reads as the condition
    """Too many wrong PINs; ``retry_after`` seconds to wait."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many wrong PINs; try again in {retry_after} s")
        self.retry_after = retry_after


def check_pin_shape(pin: str) -> str:
    """A PIN is 6-12 ASCII digits (typed on a till's keypad)."""
    if not (MIN_PIN <= len(pin) <= MAX_PIN and pin.isascii() and pin.isdigit()):
        raise ValueError(f"the staff PIN must be {MIN_PIN}-{MAX_PIN} digits")
    return pin


def hash_pin(pin: str) -> str:
    """``scrypt$N$r$p$salt$hash`` (base64)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(check_pin_shape(pin).encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"scrypt${_N}${_R}${_P}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def set_pin(data_dir: Path, pin: str) -> None:
    """Store a new PIN (replacing the old one)."""
    line = hash_pin(pin).encode() + b"\n"
    target = data_dir / PIN_FILE
    tmp = target.with_name(PIN_FILE + ".new")
    tmp.unlink(missing_ok=True)
    write_secret(tmp, line)
    tmp.replace(target)


class StaffPin:
    """Checks PINs against the stored hash; thread-safe; the failure count is per process."""

    def __init__(
        self,
        data_dir: Path,
        *,
        max_failures: int = 5,
        lockout: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._path = data_dir / PIN_FILE
        self.max_failures = max_failures
        self.lockout = lockout
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._locked_until = 0.0

    @property
    def configured(self) -> bool:
        """Whether a PIN was set (without one the page only says how to set it)."""
        return self._path.exists()

    def verify(self, pin: str) -> bool:
        """True for the right PIN; raises PinLocked while locked (the lock-out counts wrong PINs only)."""
        with self._lock:
            now = self._clock()
            if self._locked_until > now:
                raise PinLocked(max(1, int(self._locked_until - now + 0.999)))
        ok = self._matches(pin)
        with self._lock:
            if ok:
                self._failures = 0
                return True
            self._failures += 1
            if self._failures >= self.max_failures:
                self._failures = 0
                self._locked_until = self._clock() + self.lockout
                log.warning(
                    "staff page locked for %.0f s after %d wrong PINs", self.lockout, self.max_failures
                )
            else:
                log.warning("staff page: wrong PIN (%d in a row)", self._failures)
        return False

    def _matches(self, pin: str) -> bool:
        if not (isinstance(pin, str) and len(pin) <= MAX_PIN and pin.isascii() and pin.isdigit()):
            return False
        try:
            stored = read_secret(self._path).decode().strip()
            scheme, n, r, p, salt, digest = stored.split("$")
            if scheme != "scrypt":
                return False
            got = hashlib.scrypt(
                pin.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=32
            )
        except (EdgeError, OSError, ValueError) as exc:
            log.error("staff PIN file unusable: %s", exc)
            return False
        return hmac.compare_digest(got, base64.b64decode(digest))
