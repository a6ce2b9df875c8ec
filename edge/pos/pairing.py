"""Pairing the node with the cashier's POS: one-time codes, bearer tokens, lock-out.

The POS API listens on the shop LAN, where anyone can plug in a laptop, so nothing is readable without a
token, and a token is only handed out for a 6-digit code that a member of staff read off the node
(``kiosk-edge pair``) in the last five minutes. A wrong code counts against a **global** budget (an attacker
can change address at will): after ``max_failures`` wrong codes in a row every outstanding code is void and
pairing is locked for ``lockout`` seconds — about one chance in 200,000 per code a member of staff creates.

Tokens carry 256 random bits and are stored only as their SHA-256: a copy of the data directory does not
let anyone act as a till. A slow password hash would add nothing for secrets of that strength. Codes are
stored the same way, although a 6-digit code's hash is no real protection: it lives five minutes.

The state lives in the node's local SQLite file, shared by the running node and the CLI (``pair``,
``pos list``, ``pos revoke``), so a revocation takes effect on the very next request.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cloud_sync.envelope import IDENT_RE
from edge.errors import EdgeError

log = logging.getLogger(__name__)

TOKEN_PREFIX = "kpos_"  # noqa: S105 - a marker that makes leaked tokens easy to find, not a secret
CODE_DIGITS = 6
#: how often ``last_seen`` is written for a busy till (the SD card should not see a write per sale)
SEEN_RESOLUTION_S = 60.0

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS pos_clients (
        pos_id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        token_hash TEXT NOT NULL UNIQUE,
        paired_at REAL NOT NULL,
        last_seen REAL,
        revoked_at REAL
    )""",
    "CREATE TABLE IF NOT EXISTS pos_pair_codes (code_hash TEXT PRIMARY KEY, expires_at REAL NOT NULL)",
    """CREATE TABLE IF NOT EXISTS pos_pair_guard (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        failures INTEGER NOT NULL,
        locked_until REAL NOT NULL
    )""",
)


class PairingRefused(EdgeError):  # noqa: N818 - reads as an outcome
    """A pairing attempt that did not produce a token; ``reason`` is for the API's problem type."""

    def __init__(self, reason: str, detail: str, retry_after: int | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class PairCode:
    """A one-time code for staff to type into the POS."""

    code: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class PosClient:
    """A paired till as ``pos list`` shows it (never its token)."""

    pos_id: str
    name: str
    paired_at: float
    last_seen: float | None
    revoked_at: float | None


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def check_pos_id(pos_id: object) -> str:
    """A POS id appears in events and logs: the same rules as store and node ids."""
    if not isinstance(pos_id, str) or not IDENT_RE.fullmatch(pos_id):
        raise ValueError(
            "pos_id must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return pos_id


def check_pos_name(name: object) -> str:
    """The till's display name, for ``pos list``: printable, 1-64 characters."""
    if not isinstance(name, str) or not 1 <= len(name.strip()) <= 64 or not name.isprintable():
        raise ValueError("name must be 1-64 printable characters")
    return name.strip()


class Pairing:
    """Codes, tokens and the lock-out; thread-safe; one instance per process."""

    def __init__(
        self,
        path: Path,
        *,
        code_ttl: float = 300.0,
        max_failures: int = 5,
        lockout: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.code_ttl = code_ttl
        self.max_failures = max_failures
        self.lockout = lockout
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: dict[str, float] = {}
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        for statement in _SCHEMA:
            self._conn.execute(statement)
        self._conn.execute(
            "INSERT OR IGNORE INTO pos_pair_guard (id, failures, locked_until) VALUES (1, 0, 0)"
        )

    # -- staff side ----------------------------------------------------------------------------------

    def new_code(self) -> PairCode:
        """A fresh one-time code; it replaces any code not yet used."""
        code = f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"
        expires = self._clock() + self.code_ttl
        with self._lock, self._transaction():
            self._conn.execute("DELETE FROM pos_pair_codes")
            self._conn.execute("INSERT INTO pos_pair_codes VALUES (?, ?)", (_digest(code), expires))
        log.info("a POS pairing code was issued (valid %.0f s)", self.code_ttl)
        return PairCode(code, expires)

    def clients(self) -> list[PosClient]:
        """Every till ever paired, revoked ones included (for the audit trail)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT pos_id, name, paired_at, last_seen, revoked_at FROM pos_clients ORDER BY pos_id"
            ).fetchall()
        return [PosClient(*row) for row in rows]

    def revoke(self, pos_id: str) -> bool:
        """Void a till's token at once; False if there is no such (active) till."""
        with self._lock, self._transaction():
            done = self._conn.execute(
                "UPDATE pos_clients SET revoked_at = ? WHERE pos_id = ? AND revoked_at IS NULL",
                (self._clock(), pos_id),
            ).rowcount
        if done:
            log.warning("POS %s: token revoked", pos_id)
        return bool(done)

    # -- the till's side -----------------------------------------------------------------------------

    def pair(self, code: object, pos_id: object, name: object) -> str:
        """Exchange a valid code for a new bearer token (shown once, stored hashed).

        Pairing a ``pos_id`` again replaces its token (a re-installed till); the old one stops working.
        """
        pos = check_pos_id(pos_id)
        label = check_pos_name(name)
        if not isinstance(code, str) or len(code) != CODE_DIGITS or not code.isascii() or not code.isdigit():
            raise ValueError(f"code must be the {CODE_DIGITS} digits shown by 'kiosk-edge pair'")
        now = self._clock()
        with self._lock, self._transaction():
            # refusals are raised after the commit: the failure count must be durable
            refusal = self._check_code(code, pos, now)
            if refusal is None:
                token = TOKEN_PREFIX + secrets.token_urlsafe(32)
                self._conn.execute("DELETE FROM pos_pair_codes")
                self._conn.execute("UPDATE pos_pair_guard SET failures = 0 WHERE id = 1")
                self._conn.execute(
                    "INSERT INTO pos_clients (pos_id, name, token_hash, paired_at) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT(pos_id) DO UPDATE SET name = excluded.name, "
                    "token_hash = excluded.token_hash, paired_at = excluded.paired_at, "
                    "last_seen = NULL, revoked_at = NULL",
                    (pos, label, _digest(token), now),
                )
                self._seen.pop(pos, None)
        if refusal is not None:
            raise refusal
        log.info("POS %s (%s) paired", pos, label)
        return token

    def _check_code(self, code: str, pos: str, now: float) -> PairingRefused | None:
        failures, locked_until = self._conn.execute(
            "SELECT failures, locked_until FROM pos_pair_guard WHERE id = 1"
        ).fetchone()
        if locked_until > now:
            return PairingRefused(
                "locked",
                "pairing is locked after too many wrong codes; ask staff for a new code later",
                retry_after=max(1, int(locked_until - now + 0.999)),
            )
        row = self._conn.execute(
            "SELECT expires_at FROM pos_pair_codes WHERE code_hash = ?", (_digest(code),)
        ).fetchone()
        if row is not None and row[0] > now:
            return None
        failures += 1
        if failures >= self.max_failures:
            self._conn.execute("DELETE FROM pos_pair_codes")
            self._conn.execute(
                "UPDATE pos_pair_guard SET failures = 0, locked_until = ? WHERE id = 1", (now + self.lockout,)
            )
            log.warning(
                "POS pairing locked for %.0f s after %d wrong codes (the last from pos_id %r); "
                "outstanding codes are void",
                self.lockout,
                failures,
                pos,
            )
            return PairingRefused(
                "locked",
                "too many wrong codes: pairing is locked and every outstanding code is void",
                retry_after=max(1, int(self.lockout)),
            )
        self._conn.execute("UPDATE pos_pair_guard SET failures = ? WHERE id = 1", (failures,))
        log.warning("POS pairing: wrong or expired code from pos_id %r (%d in a row)", pos, failures)
        if row is not None:
            return PairingRefused("expired", "the code has expired; ask staff for a new one")
        return PairingRefused("wrong-code", "the code is wrong or was already used")

    def authenticate(self, token: str) -> str | None:
        """The pos_id that ``token`` belongs to, or None (unknown, revoked, malformed)."""
        if not token.startswith(TOKEN_PREFIX) or len(token) > 128:
            return None
        digest = _digest(token)
        with self._lock:
            row = self._conn.execute(
                "SELECT pos_id FROM pos_clients WHERE token_hash = ? AND revoked_at IS NULL", (digest,)
            ).fetchone()
            if row is None:
                return None
            pos_id = str(row[0])
            now = self._clock()
            if now - self._seen.get(pos_id, 0.0) >= SEEN_RESOLUTION_S:
                self._seen[pos_id] = now
                self._conn.execute("UPDATE pos_clients SET last_seen = ? WHERE pos_id = ?", (now, pos_id))
        return pos_id

    def close(self) -> None:
        """Release the database. Idempotent."""
        with self._lock:
            self._conn.close()

    def _transaction(self) -> _Transaction:
        return _Transaction(self._conn)


class _Transaction:
    """BEGIN IMMEDIATE … COMMIT, so the CLI and the node never interleave a read-modify-write."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __enter__(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_rest: object) -> None:
        self._conn.execute("ROLLBACK" if exc_type is not None else "COMMIT")
