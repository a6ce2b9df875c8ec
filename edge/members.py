"""What the node knows about members, for the till and the kiosk: first name, tier, balance, rewards.

The central receiver owns the ledger and the customer records; the node keeps only a small cache of the
members seen recently, filled by the central receiver (its issue adds the command that does it). The
cache lives **in memory only**: a first name is personal data and must never touch the node's disk, and a
restart merely means "your points will update shortly" until the next fill. An unknown token is normal
(a new card, the central side offline) and every caller must cope with ``None``.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class MemberSummary:
    """What the till and the kiosk may show about a member (no contact data, ever)."""

    member_code: str
    first_name: str
    tier: str
    points: int
    rewards: tuple[str, ...] = field(default=())

    def public(self) -> dict[str, object]:
        """The JSON form the POS API returns."""
        return {
            "member_code": self.member_code,
            "first_name": self.first_name,
            "tier": self.tier,
            "points": self.points,
            "rewards": list(self.rewards),
        }


class MemberDirectory:
    """A bounded, in-memory, least-recently-used cache of member summaries keyed by identity token."""

    def __init__(self, capacity: int = 5000) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._capacity = capacity
        self._lock = threading.Lock()
        self._by_token: OrderedDict[str, MemberSummary] = OrderedDict()

    def lookup(self, token: str) -> MemberSummary | None:
        """The member behind ``token``, if the node knows them."""
        with self._lock:
            summary = self._by_token.get(token)
            if summary is not None:
                self._by_token.move_to_end(token)
            return summary

    def remember(self, token: str, summary: MemberSummary) -> None:
        """Store or refresh a member (the oldest is forgotten beyond the capacity)."""
        with self._lock:
            self._by_token[token] = summary
            self._by_token.move_to_end(token)
            while len(self._by_token) > self._capacity:
                self._by_token.popitem(last=False)

    def forget(self, token: str) -> None:
        """Drop a member (e.g. a blocked card or an erased customer)."""
        with self._lock:
            self._by_token.pop(token, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._by_token)
