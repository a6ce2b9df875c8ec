"""Central ingest on SQLite and on a private PostgreSQL: exactly-once effects, dead letters, the ledger."""

from __future__ import annotations

import base64
import json
import threading
from collections import Counter

import msgspec
import pytest
from nacl.signing import SigningKey
from sqlalchemy import Engine, func, select, text

from cloud_sync.central.db import make_engine, migrate
from cloud_sync.central.ingest import Incoming, Ingestor, balance
from cloud_sync.central.registry import RegistryError, add_node, list_nodes, remove_node
from cloud_sync.central.schema import cards, dead_letters, events, ledger, members, sale_lines, sales
from cloud_sync.central.stats import as_table, collect
from cloud_sync.envelope import canonical_json
from cloud_sync.loyalty import points_for
from cloud_sync.messages import SaleBody
from tests.support.central import FakeNode, sale_body, signup_body, token


@pytest.fixture
def node(engine: Engine) -> FakeNode:
    return FakeNode(engine=engine)


@pytest.fixture
def ingestor(engine: Engine) -> Ingestor:
    return Ingestor(engine, "retail/v1")


def count(engine: Engine, table: object, *where: object) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one())  # type: ignore[arg-type]


def test_migrations_are_idempotent(engine: Engine) -> None:
    from alembic.script import ScriptDirectory

    from cloud_sync.central.db import MIGRATIONS

    migrate(engine)  # a second worker starting, or a restart
    head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == head


def test_a_sale_books_the_points_the_shared_rules_compute(
    engine: Engine, node: FakeNode, ingestor: Ingestor
) -> None:
    body = sale_body(
        "R-0001",
        customer=token(1),
        lines=[
            {"name": "Coffee", "quantity": 3, "unit_price": 399, "category": "grocery", "sku": "COF-1"},
            {"name": "Cigarettes", "quantity": 1, "unit_price": 900, "category": "tobacco", "sku": "TOB-1"},
        ],
        discount=100,
    )
    outcomes = ingestor.ingest([node.incoming("sale", body)])
    assert [o.status for o in outcomes] == ["stored"]
    # by hand: eligible 1197 of gross 2097, discount 100: 1197 * 1997 // 2097 = 1139 minor = 11 points
    assert points_for(msgspec.convert(body, SaleBody).lines, 100, None) == 11
    assert balance(engine, token(1)) == 11
    with engine.connect() as conn:
        row = conn.execute(select(sales)).one()
        assert (row.receipt, row.total, row.discount, row.points, row.account) == (
            "R-0001",
            1997,
            100,
            11,
            token(1),
        )
        assert [r.name for r in conn.execute(select(sale_lines).order_by(sale_lines.c.line_no))] == [
            "Coffee",
            "Cigarettes",
        ]


def test_duplicates_in_a_batch_across_batches_and_replays_have_one_effect(
    engine: Engine, node: FakeNode, ingestor: Ingestor
) -> None:
    sale = node.incoming("sale", sale_body("R-0002", customer=token(2)))
    outcomes = ingestor.ingest(
        [sale, sale, node.incoming("identity", {"source": "nfc", "token": token(2), "device": "r"})]
    )
    assert [o.status for o in outcomes] == ["stored", "duplicate", "stored"]
    for _ in range(3):
        assert [o.status for o in ingestor.ingest([sale])] == ["duplicate"]
    assert count(engine, events) == 2
    assert count(engine, sales) == 1
    assert balance(engine, token(2)) == 5
    stats = collect(engine)
    assert stats.ingested == {"identity": 1, "sale": 1}
    assert stats.duplicates == {"sale": 4}


def test_two_workers_racing_on_the_same_batch_book_each_event_once(
    db_url: str, engine: Engine, node: FakeNode
) -> None:
    batch = [node.incoming("sale", sale_body(f"R-{i:04d}", customer=token(7))) for i in range(60)]
    results: list[list[str]] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def worker() -> None:
        eng = make_engine(db_url)
        try:
            ing = Ingestor(eng, "retail/v1")
            barrier.wait()
            for start in range(0, len(batch), 10):
                while True:
                    try:
                        results.append([o.status for o in ing.ingest(batch[start : start + 10])])
                        break
                    except Exception as exc:  # SQLite "database is locked" beyond the busy timeout: retry
                        if "locked" not in str(exc):
                            raise
        except BaseException as exc:
            errors.append(exc)
        finally:
            eng.dispose()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    statuses = [s for r in results for s in r]
    assert statuses.count("stored") == 60
    assert statuses.count("duplicate") == 60
    assert count(engine, sales) == 60
    assert balance(engine, token(7)) == 60 * 5


def test_a_full_return_reverses_the_points(engine: Engine, node: FakeNode, ingestor: Ingestor) -> None:
    lines = [{"name": "Jacket", "quantity": 1, "unit_price": 8999, "category": "clothing", "sku": "JKT-9"}]
    ingestor.ingest(
        [node.incoming("sale", sale_body("R-0100", customer=token(3), lines=lines, discount=999))]
    )
    assert balance(engine, token(3)) == 80
    returned = [{**lines[0], "quantity": -1}]
    ingestor.ingest(
        [node.incoming("sale", sale_body("R-0101", customer=token(3), lines=returned, discount=999))]
    )
    assert balance(engine, token(3)) == 0
    with engine.connect() as conn:
        kinds = sorted(conn.execute(select(ledger.c.kind, ledger.c.points)).all())
    assert kinds == [("earn", 80), ("return", -80)]


@pytest.mark.parametrize("signup_first", [True, False])
def test_points_of_a_card_follow_it_to_the_member_whatever_the_order(
    engine: Engine, node: FakeNode, ingestor: Ingestor, signup_first: bool
) -> None:
    member, card = token(100), token(101)
    signup = node.incoming("signup", signup_body(member, card_token=card))
    before = node.incoming("sale", sale_body("R-0200", customer=card))
    after = node.incoming("sale", sale_body("R-0201", customer=card))
    order = [signup, before, after] if signup_first else [before, signup, after]
    for message in order:
        assert [o.status for o in ingestor.ingest([message])] == ["stored"]
    assert balance(engine, member) == 10
    assert balance(engine, card) == 0
    with engine.connect() as conn:
        assert conn.execute(select(cards.c.member_token).where(cards.c.token == card)).scalar_one() == member
        assert conn.execute(select(members.c.marketing_email, members.c.marketing_sms)).one() == (True, False)


def test_a_card_bound_to_one_member_is_not_taken_by_another(
    engine: Engine, node: FakeNode, ingestor: Ingestor
) -> None:
    card = token(201)
    ingestor.ingest([node.incoming("signup", signup_body(token(200), card_token=card))])
    ingestor.ingest([node.incoming("signup", signup_body(token(202), card_token=card))])
    ingestor.ingest([node.incoming("sale", sale_body("R-0300", customer=card))])
    assert balance(engine, token(200)) == 5
    assert balance(engine, token(202)) == 0


def _envelope(
    node: FakeNode, event_type: str, body: dict[str, object], seq: int = 1, key: SigningKey | None = None
) -> bytes:
    """A signed envelope built by hand, so a test can sign what the node's Signer would never produce."""
    doc = {
        "schema": f"retail.v1.{event_type}",
        "id": "01900000-0000-7000-8000-00000000abcd",
        "store": node.store,
        "node": node.node,
        "seq": seq,
        "ts": "2026-11-26T10:00:00.000Z",
        "body": body,
    }
    sig = (key or node.key).sign(canonical_json(doc)).signature
    return json.dumps({**doc, "sig": base64.urlsafe_b64encode(sig).rstrip(b"=").decode()}).encode()


def test_bad_messages_are_dead_lettered_with_reason_and_bytes_and_good_ones_still_commit(
    engine: Engine, node: FakeNode, ingestor: Ingestor
) -> None:
    stranger = FakeNode("store-1", "node-9")  # never registered
    forger = SigningKey.generate()
    good = node.incoming("sale", sale_body("R-0400", customer=token(4)))
    other = FakeNode("store-2", "node-2", engine=engine)
    hostile = sale_body("R-0401", customer=token(4))
    hostile["lines"][0]["name"] = "'); DROP TABLE sales; -- <script>alert(1)</script>"
    cases = [
        ("oversized", Incoming(node.topic("sale"), b"{" + b" " * 70_000 + b"}")),
        ("malformed", Incoming(node.topic("sale"), b"\xff\xfe not json")),
        ("malformed", Incoming(node.topic("sale"), b'{"schema": "retail.v1.sale"}')),
        (
            "bad-topic",
            Incoming("retail/v1/store-1/node-1/sale", node.seal("sale", sale_body("R-0402")).payload),
        ),
        ("unknown-node", stranger.incoming("sale", sale_body("R-0403"))),
        (
            "bad-signature",
            Incoming(node.topic("sale"), _envelope(node, "sale", sale_body("R-0404"), key=forger)),
        ),
        # signed by node-1, published under another node's topic: checked with that node's key
        ("bad-signature", Incoming(other.topic("sale"), node.seal("sale", sale_body("R-0405")).payload)),
        ("topic-mismatch", Incoming(node.topic("identity"), node.seal("sale", sale_body("R-0407")).payload)),
        (
            "schema",
            Incoming(node.topic("sale"), _envelope(node, "sale", {**sale_body("R-0406"), "admin": True})),
        ),
        ("unknown-type", Incoming(node.topic("presence"), _envelope(node, "presence", {"state": "online"}))),
    ]
    batch = [good, *(m for _, m in cases), node.incoming("sale", hostile)]
    outcomes = ingestor.ingest(batch)
    assert [o.status for o in outcomes] == ["stored", *["dead"] * len(cases), "stored"]
    assert [o.reason for o in outcomes[1:-1]] == [r for r, _ in cases]
    with engine.connect() as conn:
        rows = conn.execute(select(dead_letters).order_by(dead_letters.c.id)).all()
        assert [r.reason for r in rows] == [r for r, _ in cases]
        assert [bytes(r.payload) for r in rows] == [m.payload for _, m in cases]
        assert all(r.detail for r in rows)
        names = set(conn.execute(select(sale_lines.c.name)).scalars())
    assert "'); DROP TABLE sales; -- <script>alert(1)</script>" in names  # stored verbatim, harmlessly
    assert balance(engine, token(4)) == 10
    assert collect(engine).dead_letters == dict(Counter(r for r, _ in cases))


def test_sequence_gaps_are_reported_and_filled_out_of_order(
    engine: Engine, node: FakeNode, ingestor: Ingestor
) -> None:
    def tap(seq: int) -> Incoming:
        return node.incoming("identity", {"source": "nfc", "token": token(seq), "device": "r"}, seq=seq)

    ingestor.ingest([tap(1), tap(2), tap(6)])
    [progress] = collect(engine).nodes
    assert (progress.last_seq, progress.events, progress.missing) == (6, 3, 3)
    ingestor.ingest([tap(5), tap(3)])  # late arrivals, out of order
    ingestor.ingest([tap(4)])
    [progress] = collect(engine).nodes
    assert (progress.first_seq, progress.last_seq, progress.events, progress.missing) == (1, 6, 6, 0)
    assert "missing seqs" in as_table(collect(engine))


def test_registry_add_is_idempotent_refuses_a_clash_and_remove_takes_effect(
    engine: Engine, node: FakeNode, ingestor: Ingestor
) -> None:
    assert add_node(engine, node.store, node.node, node.public_key) is False
    other = SigningKey.generate().verify_key
    from cloud_sync.envelope import encode_public_key

    with pytest.raises(RegistryError, match="already registered"):
        add_node(engine, node.store, node.node, encode_public_key(other))
    with pytest.raises(RegistryError, match="public key"):
        add_node(engine, "store-3", "node-3", "ed25519:not-base64!")
    with pytest.raises(RegistryError, match="store id"):
        add_node(engine, "store/#", "node-3", node.public_key)
    assert [(e.store, e.node) for e in list_nodes(engine)] == [(node.store, node.node)]
    assert (
        ingestor.ingest([node.incoming("identity", {"source": "nfc", "token": token(1), "device": "r"})])[
            0
        ].status
        == "stored"
    )
    assert remove_node(engine, node.store, node.node) is True
    assert remove_node(engine, node.store, node.node) is False
    fresh = Ingestor(engine, "retail/v1")  # a worker's cache refreshes within 30 s; a new one at once
    outcome = fresh.ingest([node.incoming("identity", {"source": "nfc", "token": token(2), "device": "r"})])[
        0
    ]
    assert (outcome.status, outcome.reason) == ("dead", "unknown-node")
    # re-imaged node: a new key replaces the old one only when asked
    assert add_node(engine, node.store, node.node, encode_public_key(other), replace=True) is True


def test_every_event_type_a_node_sends_is_ingested(
    engine: Engine, node: FakeNode, ingestor: Ingestor
) -> None:
    from cloud_sync.central.ingest import INGESTED_TYPES
    from tests.support.asyncapi import iter_examples  # the AsyncAPI document's examples

    examples = [
        (e.payload["schema"].removeprefix("retail.v1."), e.payload["body"])
        for e in iter_examples()
        if "schema" in e.payload and e.payload["schema"].removeprefix("retail.v1.") in INGESTED_TYPES
    ]
    assert {t for t, _ in examples} >= {
        "identity",
        "sale",
        "signup",
        "reservation",
        "pickup",
        "survey",
        "warranty",
        "assist",
        "status",
    }
    outcomes = ingestor.ingest([node.incoming(t, body) for t, body in examples])
    assert [o.status for o in outcomes] == ["stored"] * len(examples), outcomes
    assert count(engine, events) == len(examples)
