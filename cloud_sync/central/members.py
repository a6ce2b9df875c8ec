"""Member-facing decisions of the central receiver: who is behind a token, may they take a reward.

Answers the tills' requests (``request/member``, ``request/redemption``) and builds the summary pushed
to a node after each sale. Everything a node receives is what its screens may show: a first name (from
the vault, when it holds one), the tier, the balance, the rewards available, stamp-card progress —
never contact data.

Redemptions are decided in one transaction per request and recorded under the request id, so a repeated
request gets the same answer and never a second deduction. On PostgreSQL the member's row is locked
(``FOR UPDATE``) while the balance is checked and debited, so two tills redeeming for the same member at
the same moment cannot both spend the same points; SQLite serialises writers anyway.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import msgspec
from sqlalchemy import Connection, Engine, and_, func, select

from cloud_sync.central.accounts import bind_token
from cloud_sync.central.db import IMMEDIATE
from cloud_sync.central.program import LoyaltySection
from cloud_sync.central.schema import cards, ledger, members, redemptions, sales, stamps
from cloud_sync.messages import MemberInfo, RedemptionReply, RedemptionRequestBody

log = logging.getLogger(__name__)


_UNSHOWABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029<>]")


def _checked(info: MemberInfo) -> MemberInfo:
    """The summary as the node will decode it: msgspec does not check constraints when a struct is built
    in code, and a node drops a whole push that fails them. A name that cannot be shown safely (too long,
    control characters, markup) is cleaned or left out rather than losing the member's figures."""
    raw = msgspec.to_builtins(info)
    if raw.get("first_name"):
        name = _UNSHOWABLE.sub("", raw["first_name"]).strip()[:40]
        raw["first_name"] = name or None
        if raw["first_name"] is None:
            del raw["first_name"]
    names = {k: _UNSHOWABLE.sub("", v).strip()[:60] or k for k, v in raw.get("reward_names", {}).items()}
    if names:
        raw["reward_names"] = names
    try:
        return msgspec.convert(raw, MemberInfo)
    except msgspec.ValidationError as exc:
        log.error("member summary for a token fails its contract (%s); sent without names", exc)
        raw.pop("first_name", None)
        raw.pop("reward_names", None)
        return msgspec.convert(raw, MemberInfo)


class NameSource(Protocol):
    """Where a member's code and first name come from (the PII vault); None when it has nothing."""

    def display_name(self, member_token: str) -> tuple[str, str] | None:
        """(member code, first name) of the member, or None."""
        ...


class MemberService:
    """Reads and decisions on members; thread-safe (one short transaction per call)."""

    def __init__(
        self,
        engine: Engine,
        program: LoyaltySection,
        names: NameSource | None = None,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._engine = engine
        self._program = program
        self._names = names
        self._clock = clock

    # -- who -----------------------------------------------------------------------------------------
    def _resolve(self, conn: Connection, tokens: list[str]) -> tuple[str | None, str | None, bool]:
        """(member token, tier, blocked) behind the first token that is bound; (None, None, blocked)."""
        rows = conn.execute(
            select(cards.c.token, cards.c.member_token, cards.c.status, members.c.tier)
            .select_from(cards.outerjoin(members, cards.c.member_token == members.c.member_token))
            .where(cards.c.token.in_(tokens))
        ).all()
        by_token = {row.token: row for row in rows}
        blocked = any(by_token[t].status == "blocked" for t in tokens if t in by_token)
        for token in tokens:
            row = by_token.get(token)
            if row is not None and row.member_token is not None and row.tier is not None:
                return row.member_token, row.tier, blocked
        return None, None, blocked

    @staticmethod
    def _balance(conn: Connection, account: str) -> int:
        return int(
            conn.execute(
                select(func.coalesce(func.sum(ledger.c.points), 0)).where(ledger.c.account == account)
            ).scalar_one()
        )

    def _stamp_state(self, conn: Connection, account: str) -> dict[str, tuple[int, int, int]]:
        """card id -> (progress, stamps needed, rewards left)."""
        units = dict(
            conn.execute(select(stamps.c.card, stamps.c.units).where(stamps.c.account == account)).all()
        )
        taken: dict[str, int] = dict(
            conn.execute(
                select(redemptions.c.reward, func.count())
                .where(redemptions.c.account == account, redemptions.c.approved.is_(True))
                .group_by(redemptions.c.reward)
            ).all()
        )
        return self._stamps_from({str(c): int(n) for c, n in units.items()}, taken)

    def _stamps_from(self, units: dict[str, int], taken: dict[str, int]) -> dict[str, tuple[int, int, int]]:
        """The stamp-card rule (docs/loyalty.md) from net units per card and approved redemptions per
        reward: card id -> (progress, stamps needed, rewards left)."""
        state: dict[str, tuple[int, int, int]] = {}
        for card in self._program.stamp_cards:
            net = max(0, units.get(card.id, 0))
            left = max(0, net // card.stamps - taken.get(card.reward, 0))
            state[card.id] = (net % card.stamps, card.stamps, left)
        return state

    def _summaries(self, conn: Connection, tokens: list[str]) -> dict[str, MemberInfo]:
        """The summaries of many tokens with one query per table (the pushes after a batch of sales)."""
        rows = conn.execute(
            select(cards.c.token, cards.c.member_token, cards.c.status, members.c.tier)
            .select_from(cards.outerjoin(members, cards.c.member_token == members.c.member_token))
            .where(cards.c.token.in_(tokens))
        ).all()
        by_token = {row.token: row for row in rows}
        accounts = sorted({r.member_token for r in rows if r.member_token is not None and r.tier is not None})
        balances: dict[str, int] = {}
        units: dict[str, dict[str, int]] = {}  # account -> card -> net units
        taken: dict[str, dict[str, int]] = {}  # account -> reward -> approved redemptions
        if accounts:
            balances = {
                a: int(v)
                for a, v in conn.execute(
                    select(ledger.c.account, func.sum(ledger.c.points))
                    .where(ledger.c.account.in_(accounts))
                    .group_by(ledger.c.account)
                ).all()
            }
            for a, c, n in conn.execute(
                select(stamps.c.account, stamps.c.card, stamps.c.units).where(stamps.c.account.in_(accounts))
            ).all():
                units.setdefault(a, {})[c] = int(n)
            for a, r, n in conn.execute(
                select(redemptions.c.account, redemptions.c.reward, func.count())
                .where(redemptions.c.account.in_(accounts), redemptions.c.approved.is_(True))
                .group_by(redemptions.c.account, redemptions.c.reward)
            ).all():
                taken.setdefault(a, {})[r] = int(n)
        out: dict[str, MemberInfo] = {}
        for token in tokens:
            row = by_token.get(token)
            blocked = row is not None and row.status == "blocked"
            if row is None or row.member_token is None or row.tier is None:
                out[token] = MemberInfo(token=token, known=False, blocked=blocked)
                continue
            member = row.member_token
            points = balances.get(member, 0)
            stamp_state = self._stamps_from(units.get(member, {}), taken.get(member, {}))
            rewards = [r.id for r in self._program.rewards if r.points and r.points <= points]
            rewards += [card.reward for card in self._program.stamp_cards if stamp_state[card.id][2] > 0]
            named = self._names.display_name(member) if self._names is not None else None
            out[token] = _checked(
                MemberInfo(
                    token=token,
                    known=True,
                    member_code=named[0] if named else None,
                    first_name=named[1] if named else None,
                    tier=row.tier,
                    points=points,
                    rewards=rewards[:32],
                    reward_names={
                        r: reward.name
                        for r in rewards[:32]
                        if (reward := self._program.reward(r)) is not None
                    },
                    stamps={
                        card_id: [progress, needed] for card_id, (progress, needed, _) in stamp_state.items()
                    },
                    blocked=blocked,
                )
            )
        return out

    def info(self, token: str) -> MemberInfo:
        """What a node may cache about ``token`` (``known`` false: not a member yet)."""
        return self.infos([token])[token]

    def infos(self, tokens: Sequence[str]) -> dict[str, MemberInfo]:
        """``info`` for many tokens at once, in a few queries (pushes after a batch, lookups of 8)."""
        unique = list(dict.fromkeys(tokens))
        if not unique:
            return {}
        with self._engine.connect() as conn:
            return self._summaries(conn, unique)

    # -- rewards -------------------------------------------------------------------------------------------
    def redeem(self, store: str, node: str, request: RedemptionRequestBody) -> RedemptionReply:
        """Decide a till's redemption request (idempotent on ``request_id``)."""
        now = self._clock()
        with self._engine.connect() as conn, conn.execution_options(**{IMMEDIATE: True}).begin():
            previous = conn.execute(
                select(redemptions).where(redemptions.c.request_id == request.request_id)
            ).one_or_none()
            if previous is not None:
                balance = self._balance(conn, previous.account) if previous.account else None
                return RedemptionReply(
                    request_id=request.request_id,
                    approved=previous.approved,
                    reason=previous.reason,
                    points_balance=balance,
                )
            tokens = [t for t in (request.customer.token, request.customer.code_token) if t]
            member, _tier, blocked = self._resolve(conn, tokens)
            if member is not None and conn.dialect.name == "postgresql":
                conn.execute(
                    select(members.c.member_token).where(members.c.member_token == member).with_for_update()
                )
            reward = self._program.reward(request.reward)
            priced = reward.cost(request.points) if reward is not None else 0
            cost = priced if isinstance(priced, int) else 0
            reason: str | None = None
            balance = self._balance(conn, member) if member is not None else None
            if blocked:
                reason = "card-blocked"
            elif member is None:
                reason = "not-a-member"
            elif reward is None:
                reason = "unknown-reward"
            elif isinstance(priced, str):
                reason = priced
            elif (card := self._program.stamp_card_for_reward(reward.id)) is not None:
                if self._stamp_state(conn, member)[card.id][2] < 1:
                    reason = "no-stamp-reward"
            elif balance is not None and balance < cost:
                reason = "insufficient-points"
            approved = reason is None
            conn.execute(
                redemptions.insert().values(
                    request_id=request.request_id,
                    account=member,
                    reward=request.reward,
                    points=cost if approved else 0,
                    approved=approved,
                    reason=reason,
                    approval="central",
                    store=store,
                    node=node,
                    pos=request.pos,
                    decided_at=now,
                )
            )
            if approved and cost and member is not None:
                conn.execute(
                    ledger.insert().values(
                        account=member,
                        event_id=None,
                        ref=request.request_id,
                        kind="redeem",
                        points=-cost,
                        booked_at=now,
                        store=store,
                    )
                )
                balance = (balance or 0) - cost
        log.info(
            "redemption %s of %s at %s/%s: %s",
            request.request_id,
            request.reward,
            store,
            node,
            "approved" if approved else reason,
        )
        return RedemptionReply(
            request_id=request.request_id, approved=approved, reason=reason, points_balance=balance
        )

    # -- maintenance (daily) -------------------------------------------------------------------------------
    def expire(self) -> int:
        """Expire the balances of accounts with no earning or redeeming for ``expire_after_days``.

        Returns how many accounts expired. Safe to run any number of times: an expired balance is 0.
        """
        days = self._program.expire_after_days
        if not days:
            return 0
        now = self._clock()
        cutoff = now - timedelta(days=days)
        with self._engine.begin() as conn:
            activity = (
                select(
                    ledger.c.account,
                    func.max(ledger.c.booked_at).label("last"),
                    func.sum(ledger.c.points).label("balance"),
                )
                .group_by(ledger.c.account)
                .subquery()
            )
            stale = conn.execute(
                select(activity.c.account, activity.c.balance).where(
                    and_(activity.c.last < cutoff, activity.c.balance > 0)
                )
            ).all()
            if stale:
                conn.execute(
                    ledger.insert(),
                    [
                        {
                            "account": account,
                            "event_id": None,
                            "ref": f"expiry:{now:%Y-%m-%d}",
                            "kind": "expire",
                            "points": -int(balance),
                            "booked_at": now,
                            "store": "central",
                        }
                        for account, balance in stale
                    ],
                )
        return len(stale)

    def review_tiers(self) -> int:
        """Move members down (one tier at a time) whose tier is a year old and whose spend fell short.

        Upgrades happen at once when a sale arrives; a tier, once reached, is kept for 12 months.
        Returns how many members moved.
        """
        now = self._clock()
        since = self._program.spend_window_start(now)
        moved = 0
        with self._engine.begin() as conn:
            candidates = conn.execute(
                select(members.c.member_token, members.c.tier).where(members.c.tier_since <= since)
            ).all()
            for member, tier in candidates:
                rank = self._program.rank(tier)
                if rank == 0:
                    continue
                spend = int(
                    conn.execute(
                        select(func.coalesce(func.sum(sales.c.total), 0)).where(
                            sales.c.account == member, sales.c.sold_at >= since
                        )
                    ).scalar_one()
                )
                earned = self._program.rank(self._program.tier_for(spend))
                if earned < rank:
                    conn.execute(
                        members.update()
                        .where(members.c.member_token == member)
                        .values(tier=self._program.tiers[rank - 1].name, tier_since=now)
                    )
                    moved += 1
        return moved

    def block_card(self, token: str, *, blocked: bool = True) -> bool:
        """Block a lost card (its redemptions are declined; its points stay with the member), or unblock."""
        with self._engine.begin() as conn:
            result = conn.execute(
                cards.update().where(cards.c.token == token).values(status="blocked" if blocked else "active")
            )
        return bool(result.rowcount)

    def cards_of(self, member_token: str) -> list[dict[str, Any]]:
        """The member's tokens (cards and their member code's own token), for an operator."""
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(cards).where(cards.c.member_token == member_token).order_by(cards.c.first_seen)
            ).all()
        return [
            {
                "token": r.token,
                "kind": "member code" if r.token == member_token else "card",
                "status": r.status,
                "first_seen": r.first_seen.isoformat(),
                "last_seen": r.last_seen.isoformat(),
                "last_store": r.last_store,
            }
            for r in rows
        ]

    def recent_unbound(self, store: str | None = None, limit: int = 10) -> list[dict[str, Any]]:
        """Cards tapped recently that belong to nobody: a replacement card just tapped at a till is here."""
        query = select(cards).where(cards.c.member_token.is_(None))
        if store is not None:
            query = query.where(cards.c.last_store == store)
        with self._engine.connect() as conn:
            rows = conn.execute(query.order_by(cards.c.last_seen.desc()).limit(limit)).all()
        return [{"token": r.token, "last_seen": r.last_seen.isoformat(), "store": r.last_store} for r in rows]

    def bind_card(self, member_token: str, token: str) -> bool:
        """Bind a replacement card to a member (its own earnings move over); False if it belongs to
        someone else or the member does not exist."""
        now = self._clock()
        with self._engine.connect() as conn, conn.execution_options(**{IMMEDIATE: True}).begin():
            store = conn.execute(
                select(members.c.store).where(members.c.member_token == member_token)
            ).scalar_one_or_none()
            if store is None:
                return False
            return bind_token(conn, token, member_token, now=now, store=store, ref=f"bind:{now:%Y-%m-%d}")
