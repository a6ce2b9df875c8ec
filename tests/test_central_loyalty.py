"""The central loyalty programme with worked examples: tiers, stamp cards, rewards, redemptions, expiry,
and the request/response answers to the tills (SQLite and a private PostgreSQL)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from sqlalchemy import Engine, select

from cloud_sync.central.config import load_central_settings
from cloud_sync.central.db import make_engine
from cloud_sync.central.ingest import Ingestor, balance
from cloud_sync.central.members import MemberService
from cloud_sync.central.program import LoyaltySection
from cloud_sync.central.responder import Responder
from cloud_sync.central.schema import ledger, members, redemptions
from cloud_sync.messages import MemberInfo, MemberLookupReply, RedemptionReply, RedemptionRequestBody
from cloud_sync.settings import ConfigError
from tests.support.central import FakeNode, sale_body, signup_body, token

MEMBER, CARD = token(500), token(501)


@pytest.fixture
def node(engine: Engine) -> FakeNode:
    return FakeNode(engine=engine)


@pytest.fixture
def ingestor(engine: Engine) -> Ingestor:
    return Ingestor(engine, "retail/v1")


@pytest.fixture
def service(engine: Engine) -> MemberService:
    return MemberService(engine, LoyaltySection())


def line(name: str, qty: int, price: int, category: str, sku: str) -> dict[str, Any]:
    return {"name": name, "quantity": qty, "unit_price": price, "category": category, "sku": sku}


def sell(
    ingestor: Ingestor, node: FakeNode, receipt: str, customer: str, lines: list[dict[str, Any]], **kw: Any
) -> None:
    body = sale_body(f"RCPT-{receipt}", customer=customer, lines=lines)
    body.update(kw)
    [outcome] = ingestor.ingest([node.incoming("sale", body)])
    assert outcome.status == "stored", outcome


def join(ingestor: Ingestor, node: FakeNode) -> None:
    [outcome] = ingestor.ingest([node.incoming("signup", signup_body(MEMBER, card_token=CARD))])
    assert outcome.status == "stored"


def tier_of(engine: Engine, member: str) -> str:
    with engine.connect() as conn:
        return str(conn.execute(select(members.c.tier).where(members.c.member_token == member)).scalar_one())


def request(reward: str, n: int = 1, customer: str = CARD) -> RedemptionRequestBody:
    return msgspec.convert(
        {
            "request_id": f"{n:032x}",
            "reward": reward,
            "pos": "till-1",
            "customer": {"source": "nfc", "token": customer},
        },
        RedemptionRequestBody,
    )


def test_tiers_upgrade_on_12_month_spend_and_raise_the_earn_rate(
    engine: Engine, node: FakeNode, ingestor: Ingestor
) -> None:
    join(ingestor, node)
    assert tier_of(engine, MEMBER) == "basic"
    # 490.00 spent: basic still (silver at 500.00); 490 points
    sell(ingestor, node, "R-1", CARD, [line("TV stand", 1, 49_000, "furniture", "TV-1")])
    assert (tier_of(engine, MEMBER), balance(engine, MEMBER)) == ("basic", 490)
    # a purchase 13 months ago does not count towards the tier (it still earned its points)
    old = (datetime.now(UTC) - timedelta(days=400)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    sell(ingestor, node, "R-0", CARD, [line("Lamp", 1, 5_000, "furniture", "LMP-1")], sold_at=old)
    assert tier_of(engine, MEMBER) == "basic"
    # 20.00 more: 510.00 in 12 months -> silver; this sale still earned at the basic rate (20 points)
    sell(ingestor, node, "R-2", CARD, [line("Cable", 1, 2_000, "electronics", "CBL-1")])
    assert tier_of(engine, MEMBER) == "silver"
    assert balance(engine, MEMBER) == 490 + 50 + 20
    # silver earns 125 %: 10.00 -> 12 points (12.5 truncated toward zero)
    sell(ingestor, node, "R-3", CARD, [line("Plug", 1, 1_000, "electronics", "PLG-1")])
    assert balance(engine, MEMBER) == 490 + 50 + 20 + 12


def test_a_tier_is_kept_a_year_then_reviewed_one_step_down(
    engine: Engine, node: FakeNode, ingestor: Ingestor
) -> None:
    join(ingestor, node)
    sell(ingestor, node, "R-1", CARD, [line("Sofa", 1, 160_000, "furniture", "SOFA-1")])
    assert tier_of(engine, MEMBER) == "gold"
    now = datetime.now(UTC)
    assert (
        MemberService(engine, LoyaltySection(), clock=lambda: now + timedelta(days=200)).review_tiers() == 0
    )
    later = MemberService(engine, LoyaltySection(), clock=lambda: now + timedelta(days=400))
    assert later.review_tiers() == 1
    assert tier_of(engine, MEMBER) == "silver"  # one step at a time, even with no spend at all
    assert later.review_tiers() == 0  # the new tier is kept for a year again


def test_stamp_card_nine_coffees_give_one_free_and_returns_take_stamps_back(
    engine: Engine, node: FakeNode, ingestor: Ingestor, service: MemberService
) -> None:
    join(ingestor, node)
    sell(ingestor, node, "R-1", CARD, [line("Latte", 8, 350, "coffee", "LAT-1")])
    info = service.info(CARD)
    assert info.stamps == {"coffee-card": [8, 9]} and "free-coffee" not in info.rewards
    assert service.redeem("store-1", "node-1", request("free-coffee", 1)).reason == "no-stamp-reward"
    sell(ingestor, node, "R-2", CARD, [line("Espresso", 2, 250, "coffee", "ESP-1")])
    info = service.info(CARD)
    assert info.stamps == {"coffee-card": [1, 9]} and "free-coffee" in info.rewards
    reply = service.redeem("store-1", "node-1", request("free-coffee", 2))
    assert reply.approved and reply.reason is None
    assert service.redeem("store-1", "node-1", request("free-coffee", 3)).reason == "no-stamp-reward"
    sell(ingestor, node, "R-3", CARD, [line("Espresso", -1, 250, "coffee", "ESP-1")])  # a return
    assert service.info(CARD).stamps == {"coffee-card": [0, 9]}


def test_redemption_rules_and_idempotence(
    engine: Engine, node: FakeNode, ingestor: Ingestor, service: MemberService
) -> None:
    sell(
        ingestor, node, "R-0", CARD, [line("Coat", 1, 20_000, "clothing", "COAT-1")]
    )  # 200 points, not joined
    assert service.redeem("store-1", "node-1", request("coffee", 1)).reason == "not-a-member"
    join(ingestor, node)  # the card's 200 points move to the member
    assert balance(engine, MEMBER) == 200
    assert service.redeem("store-1", "node-1", request("no-such-reward", 2)).reason == "unknown-reward"
    assert service.redeem("store-1", "node-1", request("voucher-5", 3)).reason == "insufficient-points"
    first = service.redeem("store-1", "node-1", request("coffee", 4))
    assert (first.approved, first.points_balance) == (True, 50)
    again = service.redeem("store-1", "node-1", request("coffee", 4))  # the till retried
    assert (again.approved, again.points_balance) == (True, 50)
    assert balance(engine, MEMBER) == 50
    assert service.redeem("store-1", "node-1", request("coffee", 5)).reason == "insufficient-points"
    assert service.block_card(CARD)
    assert service.redeem("store-1", "node-1", request("coffee", 6)).reason == "card-blocked"
    assert service.info(CARD).blocked


def test_two_tills_cannot_spend_the_same_points(
    db_url: str, engine: Engine, node: FakeNode, ingestor: Ingestor
) -> None:
    join(ingestor, node)
    sell(ingestor, node, "R-1", CARD, [line("Boots", 1, 20_000, "clothing", "BOOT-1")])  # 200 points
    replies: list[RedemptionReply] = []
    barrier = threading.Barrier(4)

    def till(n: int) -> None:
        eng = make_engine(db_url)
        try:
            barrier.wait()
            for attempt in range(20):
                try:
                    replies.append(
                        MemberService(eng, LoyaltySection()).redeem(
                            "store-1", "node-1", request("coffee", 100 + n)
                        )
                    )
                    return
                except Exception as exc:  # SQLite: a writer busy beyond the timeout; a real till retries
                    if "locked" not in str(exc) or attempt == 19:
                        raise
        finally:
            eng.dispose()

    threads = [threading.Thread(target=till, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(r.approved for r in replies) == [False, False, False, True]
    assert balance(engine, MEMBER) == 50


def test_redemption_events_settle_offline_ones_and_never_double_central_ones(
    engine: Engine, node: FakeNode, ingestor: Ingestor, service: MemberService
) -> None:
    join(ingestor, node)
    sell(ingestor, node, "R-1", CARD, [line("Bag", 1, 40_000, "clothing", "BAG-1")])  # 400 points
    approved = service.redeem("store-1", "node-1", request("coffee", 1))
    assert approved.points_balance == 250

    def handed_over(n: int, approval: str, reward: str = "coffee") -> None:
        body = {**msgspec.to_builtins(request(reward, n)), "approval": approval}
        [outcome] = ingestor.ingest([node.incoming("redemption", body)])
        assert outcome.status == "stored"

    handed_over(1, "central")  # the reward the central receiver approved: no second deduction
    assert balance(engine, MEMBER) == 250
    handed_over(2, "offline")  # handed over under the offline allowance: booked on arrival
    handed_over(3, "offline", "voucher-5")  # more than the balance: it may go negative, later earning repays
    assert balance(engine, MEMBER) == 250 - 150 - 500
    with engine.connect() as conn:
        rows = conn.execute(
            select(redemptions.c.request_id, redemptions.c.approval, redemptions.c.event_id)
        ).all()
    assert {r.approval for r in rows} == {"central", "offline"} and all(r.event_id for r in rows)


def test_balances_expire_after_two_idle_years_once(
    engine: Engine, node: FakeNode, ingestor: Ingestor
) -> None:
    join(ingestor, node)
    sell(ingestor, node, "R-1", CARD, [line("Chair", 1, 12_300, "furniture", "CHR-1")])
    now = datetime.now(UTC)
    assert MemberService(engine, LoyaltySection(), clock=lambda: now + timedelta(days=700)).expire() == 0
    later = MemberService(engine, LoyaltySection(), clock=lambda: now + timedelta(days=731))
    assert later.expire() == 1
    assert later.expire() == 0
    assert balance(engine, MEMBER) == 0
    with engine.connect() as conn:
        assert conn.execute(
            select(ledger.c.kind, ledger.c.points).where(ledger.c.kind == "expire")
        ).one() == ("expire", -123)


def test_the_programme_is_configurable_and_checked(tmp_path: Any) -> None:
    toml = tmp_path / "central.toml"
    toml.write_text(
        "[loyalty]\nminor_per_point = 50\n"
        '[[loyalty.tiers]]\nname = "base"\nmin_spend = 0\n'
        '[[loyalty.tiers]]\nname = "vip"\nmin_spend = 1000\npercent = 200\n'
        '[[loyalty.rewards]]\nid = "tea"\nname = "Tea"\npoints = 10\n'
        "[[loyalty.stamp_cards]]\n"
        'id = "tea-card"\ncategories = ["tea"]\nstamps = 5\nreward = "free-tea"\n'
        '[[loyalty.rewards]]\nid = "free-tea"\nname = "Free tea"\n'
    )
    settings = load_central_settings(toml, {})
    assert settings.loyalty.earn_rules.tier_percent == {"base": 100, "vip": 200}
    assert settings.loyalty.tier_for(999) == "base" and settings.loyalty.tier_for(1000) == "vip"
    bad = tmp_path / "bad.toml"
    bad.write_text('[[loyalty.stamp_cards]]\nid = "x"\ncategories = ["c"]\nstamps = 5\nreward = "nothing"\n')
    with pytest.raises(ConfigError, match="stamp_cards"):
        load_central_settings(bad, {})
    bad.write_text('[[loyalty.tiers]]\nname = "a"\nmin_spend = 10\n')
    with pytest.raises(ConfigError, match="tiers"):
        load_central_settings(bad, {})


# -- the answers to the tills -------------------------------------------------------------------------------


def _request_payload(node: FakeNode, kind: str, body: dict[str, Any], ts: str | None = None) -> bytes:
    return node.signer.seal(kind, 0, body, ts=ts).payload


def test_responder_answers_verified_fresh_requests_on_the_nodes_own_reply_topic(
    engine: Engine, node: FakeNode, ingestor: Ingestor, service: MemberService
) -> None:
    join(ingestor, node)
    sell(ingestor, node, "R-1", CARD, [line("Hat", 1, 30_000, "clothing", "HAT-1")])
    responder = Responder(service, ingestor.keys, "retail/v1", max_age=10)
    reply_topic = "retail/v1/store-1/node-1/reply"
    topic = "retail/v1/store-1/node-1/request/redemption"
    body = msgspec.to_builtins(request("coffee", 9))
    out = responder.answer(topic, _request_payload(node, "redemption_request", body), reply_topic, b"c1")
    assert out is not None and out.topic == reply_topic and out.correlation == b"c1"
    reply = msgspec.json.decode(out.payload, type=RedemptionReply)
    assert (reply.approved, reply.points_balance) == (True, 150)

    lookup = {"request_id": "ab" * 16, "tokens": [CARD, token(999)]}
    out = responder.answer(
        "retail/v1/store-1/node-1/request/member",
        _request_payload(node, "member_lookup", lookup),
        reply_topic,
        b"c2",
    )
    assert out is not None
    answer = msgspec.json.decode(out.payload, type=MemberLookupReply)
    assert [(m.known, m.points, m.tier) for m in answer.members] == [(True, 150, "basic"), (False, 0, None)]

    forger = FakeNode()  # same ids, another key
    stale = (datetime.now(UTC) - timedelta(seconds=60)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    ignored = [
        responder.answer(topic, _request_payload(forger, "redemption_request", body), reply_topic, b"x"),
        responder.answer(
            topic, _request_payload(node, "redemption_request", body), "retail/v1/store-2/n/reply", b"x"
        ),
        responder.answer(topic, _request_payload(node, "redemption_request", body), reply_topic, None),
        responder.answer(
            topic.replace("redemption", "member"),
            _request_payload(node, "redemption_request", body),
            reply_topic,
            b"x",
        ),
        responder.answer(topic, b"\x00garbage", reply_topic, b"x"),
        responder.answer("retail/v1/store-1/node-1/request/shutdown", b"{}", reply_topic, b"x"),
    ]
    assert ignored == [None] * len(ignored)
    old = responder.answer(
        topic,
        _request_payload(node, "redemption_request", msgspec.to_builtins(request("coffee", 10)), ts=stale),
        reply_topic,
        b"c3",
    )
    assert old is not None
    declined = msgspec.json.decode(old.payload, type=RedemptionReply)
    assert (declined.approved, declined.reason) == (False, "expired")
    assert balance(engine, MEMBER) == 150  # the stale request spent nothing


def test_pushes_go_to_the_node_that_sent_the_sale(
    engine: Engine, node: FakeNode, ingestor: Ingestor, service: MemberService
) -> None:
    join(ingestor, node)
    responder = Responder(service, ingestor.keys, "retail/v1", max_age=10)
    other = FakeNode("store-9", "till-3", engine=engine)
    docs = [
        {
            "schema": "retail.v1.sale",
            "store": "store-9",
            "node": "till-3",
            "body": sale_body("RCPT-1", customer=CARD),
        },
        {
            "schema": "retail.v1.sale",
            "store": "store-9",
            "node": "till-3",
            "body": sale_body("RCPT-2", customer=CARD),
        },
        {"schema": "retail.v1.sale", "store": "store-9", "node": "till-3", "body": sale_body("RCPT-3")},
        {"schema": "retail.v1.identity", "store": "store-1", "node": "node-1", "body": {"token": CARD}},
    ]
    pushes = responder.pushes(docs)
    assert [p.topic for p in pushes] == [f"retail/v1/{other.store}/{other.node}/cmd/member"]
    info = msgspec.json.decode(pushes[0].payload, type=MemberInfo)
    assert (info.token, info.known, info.tier) == (CARD, True, "basic")


def test_a_name_that_cannot_be_shown_safely_is_cleaned_not_fatal(
    engine: Engine, node: FakeNode, ingestor: Ingestor
) -> None:
    class Names:
        def __init__(self, name: str) -> None:
            self.name = name

        def display_name(self, member_token: str) -> tuple[str, str] | None:
            return ("M0000004275", self.name) if member_token == MEMBER else None

    join(ingestor, node)
    hostile = MemberService(engine, LoyaltySection(), Names("<b>Zeynep</b>\u2028" + "x" * 80)).info(CARD)
    # what a node would decode: within the contract, markup and separators gone, at most 40 characters
    decoded = msgspec.json.decode(msgspec.json.encode(hostile), type=MemberInfo)
    assert decoded.first_name is not None and decoded.first_name.startswith("bZeynep/b")
    assert len(decoded.first_name) == 40 and "<" not in decoded.first_name
    nothing = MemberService(engine, LoyaltySection(), Names("<>\x00")).info(CARD)
    assert nothing.first_name is None and nothing.known and nothing.member_code == "M0000004275"


def test_partial_redemption_spends_a_chosen_number_of_points(
    engine: Engine, node: FakeNode, ingestor: Ingestor, service: MemberService
) -> None:
    join(ingestor, node)
    sell(ingestor, node, "R-1", CARD, [line("Rug", 1, 35_000, "home", "RUG-1")])  # 350 points

    def ask(n: int, reward: str, points: int | None) -> RedemptionReply:
        body = msgspec.to_builtins(request(reward, n))
        if points is not None:
            body["points"] = points
        return service.redeem("store-1", "node-1", msgspec.convert(body, RedemptionRequestBody))

    # "points-off": 1.00 per 100 points, at least 100, in steps of 100
    assert ask(1, "points-off", None).reason == "points-required"
    assert ask(2, "points-off", 150).reason == "invalid-points"
    assert ask(3, "points-off", 400).reason == "insufficient-points"
    spent = ask(4, "points-off", 300)
    assert (spent.approved, spent.points_balance) == (True, 50)
    assert ask(5, "coffee", 999).reason == "invalid-points"  # a fixed reward has its own price
    sell(ingestor, node, "R-2", CARD, [line("Vase", 1, 15_000, "home", "VASE-1")])  # +150 = 200
    assert ask(6, "coffee", 150).approved  # naming its price is fine
    assert balance(engine, MEMBER) == 50
    # handed over offline with points (a till that knows better than to do this): booked as named
    body = {**msgspec.to_builtins(request("points-off", 7)), "approval": "offline", "points": 200}
    assert ingestor.ingest([node.incoming("redemption", body)])[0].status == "stored"
    assert balance(engine, MEMBER) == -150
    with engine.connect() as conn:
        row = conn.execute(select(redemptions).where(redemptions.c.request_id == f"{7:032x}")).one()
    assert (row.points, row.approval, row.reason) == (200, "offline", "offline")
