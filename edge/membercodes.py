"""Issuing member codes on the node, so sign-up works offline and codes are still unique chain-wide.

A member code is ``M`` + 9 digits + a Damm check digit (``cloud_sync.codes``). The 9 digits are this node's
``node.member_prefix`` (4 digits, assigned once per node at enrollment) and a 5-digit counter that only
ever goes up. The counter is committed to the node's local SQLite file *before* the code is shown, so a
crash can skip a number but never hand the same one out twice.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from cloud_sync.codes import make_member_code
from edge.errors import EdgeError

PER_NODE = 100_000  # five digits


class MemberCodesExhausted(EdgeError):  # noqa: N818 - reads as a condition
    """Every code of this node's block is used: enrollment must give the node a new prefix."""


class MemberCodeIssuer:
    """Hands out member codes from this node's block; thread-safe."""

    def __init__(self, path: Path, prefix: int) -> None:
        if not 0 <= prefix <= 9999:
            raise ValueError("member prefix must be 0..9999")
        self._prefix = prefix
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS member_counter (prefix INTEGER PRIMARY KEY, next INTEGER NOT NULL)"
        )

    def issue(self) -> str:
        """A fresh member code, durable before it is returned."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                row = self._conn.execute(
                    "SELECT next FROM member_counter WHERE prefix = ?", (self._prefix,)
                ).fetchone()
                number = int(row[0]) if row else 1
                if number >= PER_NODE:
                    raise MemberCodesExhausted(
                        f"all {PER_NODE - 1} member codes of prefix {self._prefix:04d} are used; "
                        "give this node a new node.member_prefix"
                    )
                self._conn.execute(
                    "INSERT INTO member_counter (prefix, next) VALUES (?, ?) "
                    "ON CONFLICT(prefix) DO UPDATE SET next = excluded.next",
                    (self._prefix, number + 1),
                )
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        return make_member_code(self._prefix * PER_NODE + number)

    def close(self) -> None:
        """Release the database. Idempotent."""
        with self._lock:
            self._conn.close()
