"""Issuing member and reservation codes on the node, so the kiosk works offline and codes never collide.

A member code is ``M`` + 9 digits + a Damm check digit (``cloud_sync.codes``). The 9 digits are this node's
``node.member_prefix`` (4 digits, assigned once per node at enrollment) and a 5-digit counter, so codes are
unique chain-wide without asking the central server. A reservation code is ``R`` + 7 digits + a check digit
from a counter of this node; reservations are picked up where they were made, and the central side keys
them by store and node. Counters only ever go up and are committed to the node's local SQLite file
*before* a code is shown, so a crash can skip a number but never hand the same one out twice.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from cloud_sync.codes import make_member_code, make_reservation_code
from edge.errors import EdgeError

PER_NODE = 100_000  # five digits of member number per node prefix
RESERVATIONS = 10_000_000  # seven digits


class MemberCodesExhausted(EdgeError):  # noqa: N818 - reads as a condition
    """Every code of a counter's range is used (for member codes: the node needs a new prefix)."""


class CodeIssuer:
    """Hands out numbers from named, durable counters; thread-safe; one SQLite file per node."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS code_counters (name TEXT PRIMARY KEY, next INTEGER NOT NULL)"
        )

    def take(self, name: str, limit: int, exhausted: str) -> int:
        """The next number of counter ``name`` (from 1), durable before it is returned."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                row = self._conn.execute("SELECT next FROM code_counters WHERE name = ?", (name,)).fetchone()
                number = int(row[0]) if row else 1
                if number >= limit:
                    raise MemberCodesExhausted(exhausted)
                self._conn.execute(
                    "INSERT INTO code_counters (name, next) VALUES (?, ?) "
                    "ON CONFLICT(name) DO UPDATE SET next = excluded.next",
                    (name, number + 1),
                )
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        return number

    def close(self) -> None:
        """Release the database. Idempotent."""
        with self._lock:
            self._conn.close()


class MemberCodeIssuer:
    """Member codes from this node's block."""

    def __init__(self, path: Path, prefix: int, *, issuer: CodeIssuer | None = None) -> None:
        if not 0 <= prefix <= 9999:
            raise ValueError("member prefix must be 0..9999")
        self._prefix = prefix
        self._own = issuer is None
        self.codes = issuer or CodeIssuer(path)

    def issue(self) -> str:
        """A fresh member code, durable before it is returned."""
        number = self.codes.take(
            f"member:{self._prefix:04d}",
            PER_NODE,
            f"all {PER_NODE - 1} member codes of prefix {self._prefix:04d} are used; "
            "give this node a new node.member_prefix",
        )
        return make_member_code(self._prefix * PER_NODE + number)

    def issue_reservation(self) -> str:
        """A fresh reservation code of this node."""
        return make_reservation_code(
            self.codes.take("reservation", RESERVATIONS, "all reservation codes of this node are used")
        )

    def close(self) -> None:
        """Release the database (if this issuer opened it). Idempotent."""
        if self._own:
            self.codes.close()


__all__ = ["PER_NODE", "CodeIssuer", "MemberCodeIssuer", "MemberCodesExhausted", "make_reservation_code"]
