"""What the node knows about members, for the till and the kiosk: first name, tier, balance, rewards.

The central receiver owns the ledger and the customer records; the node keeps only a small cache of the
members seen recently, filled by the central receiver (its issue adds the command that does it). The
cache lives **in memory only**: a first name is personal data and must never touch the node's disk, and a
restart merely means "your points will update shortly" until the next fill. An unknown token is normal
(a new card, the central side offline) and every caller must cope with ``None``.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from cloud_sync.messages import MemberInfo


@dataclass(frozen=True, slots=True)
class StampProgress:
    """One stamp card: ``stamps`` of ``needed`` collected towards its reward."""

    card: str
    stamps: int
    needed: int


@dataclass(frozen=True, slots=True)
class MemberSummary:
    """What the till and the kiosk may show about a member (no contact data, ever)."""

    member_code: str
    first_name: str
    tier: str
    points: int
    rewards: tuple[str, ...] = field(default=())
    stamps: tuple[StampProgress, ...] = field(default=())
    #: display names of the rewards, from the chain's catalogue (the id where there is none)
    reward_names: tuple[tuple[str, str], ...] = field(default=())

    def reward_label(self, reward: str) -> str:
        """What the kiosk shows for a reward id."""
        return dict(self.reward_names).get(reward, reward)

    @classmethod
    def from_info(cls, info: MemberInfo) -> MemberSummary:
        """The central receiver's summary of a known member, as the node keeps it."""
        return cls(
            member_code=info.member_code or "",
            first_name=info.first_name or "",
            tier=info.tier or "",
            points=info.points,
            rewards=tuple(info.rewards),
            stamps=tuple(StampProgress(card, pair[0], pair[1]) for card, pair in sorted(info.stamps.items())),
            reward_names=tuple(sorted(info.reward_names.items())),
        )

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

    def __init__(
        self,
        capacity: int = 5000,
        *,
        max_age: float = 86400.0,
        unknown_max_age: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._capacity = capacity
        self._max_age = max_age
        # short: a card that joins at another store (or at this kiosk) is asked about again soon
        self._unknown_max_age = unknown_max_age
        self._clock = clock
        self._lock = threading.Lock()
        self._by_token: OrderedDict[str, MemberSummary] = OrderedDict()
        self._stored_at: dict[str, float] = {}
        #: tokens the central receiver said are not members (a card that has not joined yet)
        self._unknown: OrderedDict[str, float] = OrderedDict()

    def lookup(self, token: str) -> MemberSummary | None:
        """The member behind ``token``, if the node knows them (entries older than ``max_age`` are gone:
        a first name is not kept longer than a day after the member was last seen or pushed)."""
        with self._lock:
            summary = self._by_token.get(token)
            if summary is not None and self._clock() - self._stored_at.get(token, 0.0) > self._max_age:
                self._drop(token)
                summary = None
            if summary is not None:
                self._by_token.move_to_end(token)
            return summary

    def is_unknown(self, token: str) -> bool:
        """Whether the central receiver said recently that ``token`` is not a member."""
        with self._lock:
            at = self._unknown.get(token)
            return at is not None and self._clock() - at <= self._unknown_max_age

    def remember(self, token: str, summary: MemberSummary) -> None:
        """Store or refresh a member (the oldest is forgotten beyond the capacity)."""
        with self._lock:
            self._unknown.pop(token, None)
            self._by_token[token] = summary
            self._stored_at[token] = self._clock()
            self._by_token.move_to_end(token)
            while len(self._by_token) > self._capacity:
                old, _ = self._by_token.popitem(last=False)
                self._stored_at.pop(old, None)

    def apply(self, info: MemberInfo) -> bool:
        """Take the central receiver's word on ``info.token``; True if it is a member."""
        if info.known and not info.blocked:
            self.remember(info.token, MemberSummary.from_info(info))
            return True
        with self._lock:
            self._drop(info.token)
            if not info.known:
                self._unknown[info.token] = self._clock()
                self._unknown.move_to_end(info.token)
                while len(self._unknown) > self._capacity:
                    self._unknown.popitem(last=False)
        return False

    def _drop(self, token: str) -> None:
        self._by_token.pop(token, None)
        self._stored_at.pop(token, None)
        self._unknown.pop(token, None)

    def forget(self, token: str) -> None:
        """Drop a member (e.g. a blocked card or an erased customer)."""
        with self._lock:
            self._drop(token)

    def forget_all(self, tokens: Iterable[str]) -> None:
        """Drop every token of a member at once (an erasure names the member's cards and code)."""
        with self._lock:
            for token in tokens:
                self._drop(token)

    def __len__(self) -> int:
        with self._lock:
            return len(self._by_token)
