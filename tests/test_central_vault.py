"""The central PII vault on SQLite and on a private PostgreSQL (ledger and vault as two databases).

Personal data is sealed by the node's own services (``edge.signup``, ``edge.reservation``,
``edge.feedback``) to the key ``kiosk-central vault keygen`` printed, signed by the node's outbox, and
ingested by the real ``Ingestor`` with the vault as its post-commit consumer. Erasure is checked the hard
way: every row of every table of both databases (and, for SQLite, the raw file bytes including the WAL) is
searched for the name, the e-mail, the phone and the sealed boxes.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import stat
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Engine, func, select, text, update

from cloud_sync.central.db import make_engine, migrate
from cloud_sync.central.ingest import Incoming, Ingestor, balance
from cloud_sync.central.schema import dead_letters, events, ledger, members, sale_lines, sales
from cloud_sync.central.vault import (
    AbsorbReport,
    MemberErased,
    PiiVault,
    VaultError,
    absorbed,
    consents,
    erasure_notices,
    erasures,
    people,
)
from cloud_sync.central.vault_keys import (
    DATA_KEY_FILE,
    PRIVATE_KEY_FILE,
    DataKeyring,
    GeneratedKeys,
    OpeningKeys,
    VaultKeyError,
    keygen,
)
from cloud_sync.central_cli import cli
from cloud_sync.codes import make_member_code
from cloud_sync.envelope import SignedMessage, Signer
from cloud_sync.messages import EraseCommand
from cloud_sync.outbox import Outbox
from edge.feedback import FeedbackService, SurveyAnswer, WarrantyRequest
from edge.identity import Pseudonymizer
from edge.membercodes import MemberCodeIssuer
from edge.reservation import ReservationRequest, ReservationService
from edge.signup import SignupRequest, SignupService, Vault, load_vault
from tests.support.broker import Collector, Mosquitto
from tests.support.central import FakeNode, sale_body, token

ROOT = "retail/v1"
CHAIN_KEY = bytes(range(32))
ERASE_TOPIC = f"{ROOT}/+/+/cmd/erase"


# -- fixtures ----------------------------------------------------------------------------------------------


@pytest.fixture
def ledger_engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def vault_url(db_url: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The vault's own database: a second SQLite file, or a second database on the private PostgreSQL."""
    if db_url.startswith("sqlite"):
        return f"sqlite:///{tmp_path / 'vault.db'}"
    return request.getfixturevalue("postgres").create_database(f"vault_{secrets.token_hex(6)}")


@pytest.fixture
def keys(tmp_path: Path) -> GeneratedKeys:
    return keygen(tmp_path / "keys")


@pytest.fixture
def vault(vault_url: str, ledger_engine: Engine, keys: GeneratedKeys) -> Iterator[PiiVault]:
    assert keys.data_key_file is not None
    pii = PiiVault.connect(
        vault_url,
        ledger_engine,
        OpeningKeys.load(keys.private_key_file),
        DataKeyring.load(keys.data_key_file),
    )
    yield pii
    pii.close()


class Till:
    """One node as deployed: its outbox and the node's own sign-up/reservation/feedback services, sealing
    to the vault key from ``keygen``'s node line. Each method returns the signed event as delivered."""

    def __init__(self, tmp: Path, node: FakeNode, vault_public: str, prefix: int = 1) -> None:
        self.node = node
        self.dir = tmp / f"till-{node.store}-{node.node}"
        self.dir.mkdir(parents=True)
        self.outbox = Outbox(self.dir / "outbox.sqlite3", Signer(node.key, node.store, node.node), ROOT)
        self.issuer = MemberCodeIssuer(self.dir / "codes.sqlite3", prefix)
        self.pseudonymizer = Pseudonymizer(CHAIN_KEY)
        self.vault, standalone = load_vault(vault_public, self.dir)
        assert not standalone
        self.signups = SignupService(self.outbox, self.pseudonymizer, self.issuer, self.vault)
        self.reservations = ReservationService(self.outbox, self.issuer, self.vault)
        self.feedback = FeedbackService(self.outbox, self.vault)

    def close(self) -> None:
        self.outbox.close()
        self.issuer.close()

    def signup(
        self,
        name: str,
        *,
        email: str | None = None,
        phone: str | None = None,
        card: str | None = None,
        marketing_email: bool = False,
        marketing_sms: bool = False,
    ) -> tuple[str, str, Incoming]:
        """(member code, member token, the signed event as the broker would deliver it)."""
        reg = self.signups.register(
            SignupRequest(name, email, phone, marketing_email, marketing_sms, "friend", "en"), card
        )
        return reg.member_code, self.pseudonymizer.barcode_token(reg.member_code), self.incoming(reg.message)

    def incoming(self, message: SignedMessage) -> Incoming:
        return Incoming(self.node.topic(message.schema.removeprefix("retail.v1.")), message.payload)

    def reserve(self, name: str, email: str, member_token: str | None) -> Incoming:
        request = ReservationRequest(
            gtin=None,
            sku="SKU-1",
            quantity=1,
            pickup_date=dt.date.today() + dt.timedelta(days=3),
            name=name,
            email=email,
            phone=None,
            language="en",
        )
        return self.incoming(self.reservations.reserve(request, member_token).message)

    def survey(self, comment: str, member_token: str | None) -> Incoming:
        return self.incoming(self.feedback.answer_survey(SurveyAnswer(3, comment, "en"), member_token))

    def warranty(self, name: str, phone: str, member_token: str | None) -> Incoming:
        request = WarrantyRequest("SN-12345", "RCPT-0001", None, name, None, phone, "en")
        return self.incoming(self.feedback.register_warranty(request, member_token))


def _node_value(keys: GeneratedKeys) -> str:
    return str(tomllib.loads(keys.node_line)["vault_public_key"])


@pytest.fixture
def till(tmp_path: Path, ledger_engine: Engine, keys: GeneratedKeys) -> Iterator[Till]:
    t = Till(tmp_path, FakeNode("store-1", "node-1", engine=ledger_engine), _node_value(keys))
    yield t
    t.close()


@pytest.fixture
def ingestor(ledger_engine: Engine, vault: PiiVault) -> Ingestor:
    return Ingestor(ledger_engine, ROOT, on_commit=vault.absorb)


def count(engine: Engine, table: Any, *where: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one())


def event_body(engine: Engine, event_id: str) -> dict[str, Any]:
    with engine.connect() as conn:
        body: dict[str, Any] = conn.execute(select(events.c.body).where(events.c.id == event_id)).scalar_one()
    return body


def stored(ingestor: Ingestor, *messages: Incoming) -> list[str]:
    outcomes = ingestor.ingest(list(messages))
    assert [o.status for o in outcomes] == ["stored"] * len(messages), outcomes
    return [str(o.event_id) for o in outcomes]


# -- the CLI -----------------------------------------------------------------------------------------------


def cli_env(
    tmp_path: Path, db_url: str, vault_url: str, keys: GeneratedKeys, broker: str = ""
) -> dict[str, str | None]:
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("KIOSK_")}
    env.update(
        KIOSK_CENTRAL_DB__URL=db_url,
        KIOSK_CENTRAL_VAULT__URL=vault_url,
        KIOSK_CENTRAL_DATA__DIR=str(tmp_path / "central-data"),
        KIOSK_VAULT_PRIVATE_KEY_FILE=str(keys.private_key_file),
        KIOSK_VAULT_DATA_KEY_FILE=str(keys.data_key_file),
    )
    if broker:
        env["KIOSK_CENTRAL_MQTT__URL"] = broker
    return env


def run(env: dict[str, str | None], *args: str) -> Result:
    return CliRunner(env=env).invoke(cli, list(args), catch_exceptions=False)


# -- raw contents of a database ----------------------------------------------------------------------------


def raw_contents(engine: Engine) -> bytes:
    """Every value of every row of every table, as bytes (PostgreSQL: each row cast to text)."""
    chunks: list[bytes] = []
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            tables = conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'table'")).scalars().all()
            for table in tables:
                for row in conn.execute(text(f'SELECT * FROM "{table}"')):
                    for value in row:
                        chunks.append(
                            bytes(value) if isinstance(value, bytes | memoryview) else str(value).encode()
                        )
        else:
            tables = (
                conn.execute(
                    text(
                        "SELECT tablename FROM pg_tables "
                        "WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
                    )
                )
                .scalars()
                .all()
            )
            for table in tables:
                chunks.extend(
                    r.encode() for r in conn.execute(text(f'SELECT t::text FROM "{table}" t')).scalars()
                )
    assert chunks, "nothing read: the search would prove nothing"
    return b"\n".join(chunks)


def sqlite_files(url: str) -> bytes:
    """The database file and its WAL/SHM, byte for byte."""
    path = Path(url.split(":///", 1)[1])
    return b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists())


def forms(needle: str) -> list[bytes]:
    """The ways a string can sit in a database: UTF-8, JSON-escaped, and as PostgreSQL's bytea hex."""
    raw = needle.encode()
    return [raw, json.dumps(needle)[1:-1].encode(), raw.hex().encode()]


def assert_absent(haystack: bytes, needles: dict[str, str], where: str) -> None:
    for label, needle in needles.items():
        for form in forms(needle):
            assert form not in haystack, f"{label} found in {where}"


def assert_present(haystack: bytes, needle: str, where: str) -> None:
    assert any(form in haystack for form in forms(needle)), f"control value missing from {where}"


# -- keys --------------------------------------------------------------------------------------------------


def test_keygen_writes_a_private_key_0600_and_a_node_line_that_seals(tmp_path: Path) -> None:
    out = tmp_path / "vault-keys"
    result = CliRunner().invoke(cli, ["vault", "keygen", "--out", str(out)])
    assert result.exit_code == 0, result.output
    line = result.stdout.strip()
    assert line.startswith('vault_public_key = "x25519:') and "\n" not in line
    private = out / PRIVATE_KEY_FILE
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert stat.S_IMODE((out / DATA_KEY_FILE).stat().st_mode) == 0o600
    assert private.read_text().startswith("x25519:")
    secret = private.read_text().strip()
    assert secret not in result.stdout + result.stderr  # the private key is never printed

    # the printed line is valid node configuration, and what a node seals with it opens with the key file
    from edge.config import IdentitySection

    value = tomllib.loads(line)["vault_public_key"]
    msgspec.convert({"vault_public_key": value}, IdentitySection)
    node_vault, standalone = load_vault(value, tmp_path)
    assert not standalone
    sealed = node_vault.seal({"first_name": "Ada", "member_code": "M0000000017", "email": "ada@example.org"})
    opened = OpeningKeys.load(private).open(node_vault.key_id, sealed)
    assert json.loads(opened) == {
        "first_name": "Ada",
        "member_code": "M0000000017",
        "email": "ada@example.org",
    }

    # a key file may hold the next key pair too (moving the nodes to it): both open
    later = keygen(tmp_path / "next")
    both = OpeningKeys.parse(
        private.read_text() + "# the next key pair\n" + later.private_key_file.read_text()
    )
    assert both.ids == sorted([node_vault.key_id, later.vault_key])
    assert json.loads(both.open(node_vault.key_id, sealed))["first_name"] == "Ada"

    before = private.read_bytes()
    again = CliRunner().invoke(cli, ["vault", "keygen", "--out", str(out)])
    assert again.exit_code == 1
    assert "refusing to overwrite" in again.stderr
    assert private.read_bytes() == before


def test_a_wrong_data_key_is_refused_with_the_key_ids(
    vault: PiiVault,
    ingestor: Ingestor,
    till: Till,
    vault_url: str,
    ledger_engine: Engine,
    keys: GeneratedKeys,
) -> None:
    _code, _token, message = till.signup("Ada", email="ada@example.org")
    stored(ingestor, message)
    assert count(vault.engine, people) == 1
    other_keys = keygen(keys.private_key_file.parent.parent / "other")
    assert other_keys.data_key_file is not None
    with pytest.raises(VaultKeyError, match="does not hold") as info:
        PiiVault.connect(
            vault_url,
            ledger_engine,
            OpeningKeys.load(keys.private_key_file),
            DataKeyring.load(other_keys.data_key_file),
        )
    current = DataKeyring.load(keys.data_key_file).ids[0]  # type: ignore[arg-type]
    assert current in str(info.value)
    assert DataKeyring.load(other_keys.data_key_file).text().split(":")[1].strip() not in str(info.value)


def test_the_vault_refuses_the_ledgers_own_database(
    db_url: str, ledger_engine: Engine, keys: GeneratedKeys
) -> None:
    assert keys.data_key_file is not None
    with pytest.raises(VaultError, match="must not share the ledger"):
        PiiVault.connect(
            db_url,
            ledger_engine,
            OpeningKeys.load(keys.private_key_file),
            DataKeyring.load(keys.data_key_file),
        )


# -- absorbing ---------------------------------------------------------------------------------------------


def test_signups_sealed_by_the_node_are_absorbed_encrypted_and_idempotently(
    vault: PiiVault, ingestor: Ingestor, till: Till
) -> None:
    code, member_token, message = till.signup(
        "Zoë-Anne", email="zoe.anne@example.org", phone="+31612345678", card=token(7), marketing_email=True
    )
    (event_id,) = stored(ingestor, message)
    assert vault.personal_data(code) == {
        "first_name": "Zoë-Anne",
        "email": "zoe.anne@example.org",
        "phone": "+31612345678",
        "language": "en",
    }
    with vault.engine.connect() as conn:
        row = conn.execute(select(people)).one()
        assert (row.member_code, row.member_token, row.event_id) == (code, member_token, event_id)
        assert b"zoe.anne" not in row.ciphertext and "Zoë".encode() not in row.ciphertext
        assert conn.execute(select(absorbed.c.status)).scalars().all() == ["stored"]
    assert count(vault.engine, consents) == 2

    # the same event again (redelivery to on_commit, a catch-up, a second worker): nothing changes
    envelope = {**json.loads(message.payload), "body": event_body(ingestor._engine, event_id)}
    report = vault.absorb([envelope])
    assert (report.stored, report.duplicate) == (0, 1)
    assert vault.catch_up().stored == 0
    assert count(vault.engine, people) == 1
    assert count(vault.engine, consents) == 2
    assert count(vault.engine, absorbed) == 1
    # the ledger itself never sees the name
    assert b"zoe.anne" not in raw_contents(ingestor._engine)


def test_a_vault_that_missed_signups_catches_up_from_the_ledger(
    vault: PiiVault,
    ledger_engine: Engine,
    till: Till,
    tmp_path: Path,
    db_url: str,
    vault_url: str,
    keys: GeneratedKeys,
) -> None:
    def broken(_docs: Any) -> None:
        raise ConnectionError("vault database down")

    ingest_without_vault = Ingestor(ledger_engine, ROOT, on_commit=broken)
    codes = []
    for i in range(3):
        code, _token, message = till.signup(f"Name{'abc'[i]}", email=f"n{i}@example.org")
        codes.append(code)
        assert [o.status for o in ingest_without_vault.ingest([message])] == ["stored"]  # ingest unaffected
    assert count(vault.engine, people) == 0

    result = run(cli_env(tmp_path, db_url, vault_url, keys), "vault", "sync")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["stored"] == 3
    assert [vault.personal_data(c)["email"] for c in codes] == [f"n{i}@example.org" for i in range(3)]
    assert vault.catch_up().as_dict()["stored"] == 0  # idempotent


def _envelope(till: Till, event_type: str, body: dict[str, Any], ts: str | None = None) -> dict[str, Any]:
    doc = json.loads(till.node.seal(event_type, body).payload)
    doc.pop("sig")
    if ts:
        doc["ts"] = ts
    return dict(doc)


def test_hostile_sealed_content_is_recorded_as_failed_and_never_stops_the_batch(
    vault: PiiVault, ingestor: Ingestor, till: Till, keys: GeneratedKeys
) -> None:
    node_vault: Vault = till.vault
    member = iter(range(100, 200))

    def signup_with(sealed: str, vault_key: str | None = None) -> dict[str, Any]:
        return {
            "member_token": token(next(member)),
            "consent": {
                "privacy_notice": True,
                "marketing_email": True,
                "marketing_sms": False,
                "notice_version": "2026-11",
            },
            "language": "en",
            "sealed": sealed,
            "vault_key": vault_key or node_vault.key_id,
        }

    good_code = make_member_code(4242)
    valid = make_member_code(5)
    wrong_check = valid[:-1] + str((int(valid[-1]) + 1) % 10)
    cases = {
        # through the broker and the ingest (the body schema allows these)
        "malformed-sealed": signup_with("A" * 41),  # base64 of an impossible length
        "undecryptable": signup_with("A" * 64),  # random bytes, not a sealed box
        "unknown-vault-key": signup_with(node_vault.seal({"first_name": "X"}), "0123456789abcdef"),
        "unexpected-fields": signup_with(
            node_vault.seal(
                {"first_name": "Eve", "member_code": make_member_code(1), "email": "e@x.org", "role": "admin"}
            )
        ),
        "invalid-content": signup_with(
            node_vault.seal(
                {
                    "first_name": "<script>alert(1)</script>",
                    "member_code": make_member_code(2),
                    "email": "e@x.org",
                }
            )
        ),
        "not-json": signup_with(_raw_seal(node_vault, b"[1,2")),
    }
    oversized = signup_with(
        node_vault.seal({"first_name": "A" * 1500, "member_code": make_member_code(3), "email": "e@x.org"})
    )
    bad_code = signup_with(
        node_vault.seal({"first_name": "Eve", "member_code": wrong_check, "email": "e@x.org"})
    )
    good = signup_with(
        node_vault.seal({"first_name": "Grace", "member_code": good_code, "email": "g@example.org"})
    )
    batch = [till.node.incoming("signup", body) for body in [*cases.values(), oversized, bad_code, good]]
    outcomes = ingestor.ingest(batch)
    assert [o.status for o in outcomes] == ["stored"] * len(batch)

    # a body the ingest would never let through, handed to absorb directly (e.g. a hand-edited ledger row)
    not_base64 = _envelope(till, "signup", signup_with("A" * 40))
    not_base64["body"]["sealed"] = "!!not base64!! <script>alert(1)</script>"
    report = vault.absorb([not_base64])
    assert report.failed == {"schema": 1}

    with vault.engine.connect() as conn:
        rows = conn.execute(select(absorbed.c.event_id, absorbed.c.status, absorbed.c.reason)).all()
        reasons = {event_id: (status, reason) for event_id, status, reason in rows}
        names = conn.execute(select(people.c.member_code)).scalars().all()
    assert names == [good_code]
    by_event = [reasons[str(o.event_id)] for o in outcomes]
    expected = [("failed", reason) for reason in cases] + [
        ("failed", "invalid-content"),  # 1500-character name
        ("failed", "invalid-content"),  # bad check digit
        ("stored", None),
    ]
    assert by_event == expected
    # failures keep no content: no reason/detail carries what was sealed
    with vault.engine.connect() as conn:
        details = " ".join(str(d) for d in conn.execute(select(absorbed.c.detail)).scalars())
    for secret in ("script", "admin", "Eve", "e@x.org", "AAAA"):
        assert secret not in details
    # a retry does not turn them into anything else, and never crashes
    retry = vault.catch_up(retry_failed=True)
    assert retry.stored == 0 and sum(retry.failed.values()) == len(batch) - 1


def _raw_seal(node_vault: Vault, plaintext: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(node_vault._box.encrypt(plaintext)).rstrip(b"=").decode()


def test_consent_history_the_latest_statement_wins_even_when_it_arrives_first(
    vault: PiiVault, ingestor: Ingestor, till: Till
) -> None:
    code_a, token_a, msg_a = till.signup(
        "Alice", email="alice@example.org", phone="+31611111111", marketing_email=True
    )
    code_b, _token_b, msg_b = till.signup("Bob", email="bob@example.org", marketing_email=False)
    _code_c, _token_c, msg_c = till.signup("Carol", phone="+31622222222", marketing_sms=True)
    stored(ingestor, msg_a, msg_b, msg_c)

    def listed(channel: str) -> list[str]:
        return [entry["member_code"] for entry in vault.marketing(channel)]  # type: ignore[arg-type]

    assert listed("email") == [code_a]
    assert [e.get("phone") for e in vault.marketing("sms")] == ["+31622222222"]
    assert next(iter(vault.marketing("email")))["email"] == "alice@example.org"

    # Alice withdraws e-mail consent later (a future consent event), then an older statement arrives late
    joined = vault.export(code_a)["consents"]["current"]["email"]["given_at"]
    later = (dt.datetime.fromisoformat(joined.replace("Z", "+00:00")) + dt.timedelta(hours=1)).isoformat()
    earlier = (dt.datetime.fromisoformat(joined.replace("Z", "+00:00")) - dt.timedelta(hours=1)).isoformat()
    consent = {"privacy_notice": True, "marketing_sms": False, "notice_version": "2026-11"}
    withdraw = _envelope(
        till, "consent", {"member_token": token_a, "consent": {**consent, "marketing_email": False}}, later
    )
    stale = _envelope(
        till, "consent", {"member_token": token_a, "consent": {**consent, "marketing_email": True}}, earlier
    )
    vault.absorb([withdraw])
    vault.absorb([stale])
    vault.absorb([withdraw, stale])  # duplicates change nothing
    assert listed("email") == []
    exported = vault.export(code_a)["consents"]
    assert exported["current"]["email"]["granted"] is False
    assert [h["granted"] for h in exported["history"] if h["channel"] == "email"] == [True, True, False]
    assert code_b not in listed("email")


def test_export_has_everything_on_the_member_and_opens_their_sealed_parts(
    vault: PiiVault,
    ingestor: Ingestor,
    till: Till,
    tmp_path: Path,
    db_url: str,
    vault_url: str,
    keys: GeneratedKeys,
) -> None:
    card = token(77)
    # a survey and a card tap arrive before the sign-up (out of order): they are linked all the same
    tap = till.node.incoming("identity", {"source": "nfc", "token": card, "device": "reader-1"})
    code, member_token, signup = till.signup(
        "Hedy", email="hedy@example.org", phone="+31633333333", card=card, marketing_email=True
    )
    survey = till.survey("The cashier Hedy met was lovely", member_token)
    stored(ingestor, tap, survey)
    stored(ingestor, signup)
    sale = till.node.incoming("sale", sale_body("R-0001", customer=card))
    reservation = till.reserve("Hedy L", "hedy.l@example.org", member_token)
    warranty = till.warranty("Hedy L", "+31644444444", member_token)
    other_code, _t, other = till.signup("Ingrid", email="ingrid@example.org")
    stored(ingestor, sale, reservation, warranty, other)

    env = cli_env(tmp_path, db_url, vault_url, keys)
    result = run(env, "privacy", "export", code.lower())
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["format"] == "kiosk-central.privacy-export.v1"
    assert (doc["member_code"], doc["member_token"]) == (code, member_token)
    assert doc["personal_data"] == {
        "first_name": "Hedy",
        "email": "hedy@example.org",
        "phone": "+31633333333",
        "language": "en",
    }
    assert doc["consents"]["current"]["email"]["granted"] is True
    assert doc["consents"]["current"]["sms"]["granted"] is False
    assert doc["member"]["marketing_email"] is True
    assert {c["token"] for c in doc["cards"]} == {member_token, card}
    assert [s["receipt"] for s in doc["sales"]] == ["R-0001"]
    assert doc["sales"][0]["lines"][0]["name"] == "Milk 1L"
    assert doc["ledger"]["balance"] == balance(ingestor._engine, member_token) == 5
    assert doc["surveys"][0]["personal"]["sealed_comment"] == {"comment": "The cashier Hedy met was lovely"}
    assert doc["surveys"][0]["body"]["score"] == 3 and "sealed_comment" not in doc["surveys"][0]["body"]
    assert doc["reservations"][0]["personal"]["sealed"]["email"] == "hedy.l@example.org"
    assert doc["warranties"][0]["personal"]["sealed"] == {"name": "Hedy L", "phone": "+31644444444"}
    assert [t["store"] for t in doc["card_taps"]] == ["store-1"]
    assert len(doc["signups"]) == 1 and "sealed" not in doc["signups"][0]["body"]
    assert "ingrid" not in result.stdout.lower()  # nobody else's data

    out = tmp_path / "export.json"
    to_file = run(env, "privacy", "export", code, "--output", str(out))
    assert to_file.exit_code == 0 and to_file.stdout == ""
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert json.loads(out.read_text())["personal_data"]["first_name"] == "Hedy"

    valid = make_member_code(5)
    assert run(env, "privacy", "export", valid[:-1] + str((int(valid[-1]) + 1) % 10)).exit_code == 2  # typo
    unknown = run(env, "privacy", "export", valid)
    assert unknown.exit_code == 1 and "no member" in unknown.stderr
    assert other_code != code


# -- erasure -----------------------------------------------------------------------------------------------


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    server = Mosquitto(tmp_path / "broker").start()
    try:
        yield server
    finally:
        server.stop()


def test_erase_removes_the_personal_data_from_both_databases_and_tells_every_node(
    vault: PiiVault,
    ingestor: Ingestor,
    till: Till,
    ledger_engine: Engine,
    broker: Mosquitto,
    tmp_path: Path,
    db_url: str,
    vault_url: str,
    keys: GeneratedKeys,
) -> None:
    FakeNode("store-2", "node-9", engine=ledger_engine)  # a second registered node
    card = token(55)
    pii = {
        "first name": "Quirinella",
        "e-mail": "quirinella.x@example.org",
        "phone": "+31655555555",
        "reservation e-mail": "q.reserves@example.org",
        "survey comment": "Quirinella thinks the queue was long",
        "warranty name": "Quirinella Warranty",
        "warranty phone": "+31666666666",
    }
    code, member_token, signup = till.signup(
        pii["first name"], email=pii["e-mail"], phone=pii["phone"], card=card, marketing_email=True
    )
    survey_early = till.survey(pii["survey comment"], member_token)  # before the sign-up
    stored(ingestor, survey_early)
    stored(ingestor, signup)
    messages = [
        till.node.incoming("identity", {"source": "nfc", "token": card, "device": "reader-1"}),
        till.node.incoming("sale", sale_body("R-1001", customer=card)),
        till.node.incoming("sale", sale_body("R-1002", customer=member_token, source="barcode")),
        till.reserve("Quirinella Q", pii["reservation e-mail"], member_token),
        till.warranty(pii["warranty name"], pii["warranty phone"], member_token),
    ]
    stored(ingestor, *messages)
    # a control member who stays
    keep_code, _keep_token, keep = till.signup("Rosalind", email="rosalind.keep@example.org")
    stored(ingestor, keep)
    # a dead-lettered copy of a sign-up (signed by an unknown node) carrying the member's sealed box
    with ledger_engine.begin() as conn:
        signup_body = json.loads(signup.payload)["body"]
        conn.execute(
            dead_letters.insert().values(
                received_at=dt.datetime.now(dt.UTC),
                topic="retail/v1/store-x/node-x/event/signup",
                reason="unknown-node",
                detail="store-x/node-x is not in the node registry",
                payload=json.dumps({"body": signup_body}).encode(),
            )
        )
    sealed_boxes = {
        f"sealed box {i}": body.get("sealed") or body.get("sealed_comment")
        for i, body in enumerate(
            json.loads(m.payload)["body"] for m in [signup, survey_early, messages[3], messages[4]]
        )
    }
    assert all(sealed_boxes.values())
    with vault.engine.connect() as conn:
        ciphertext = conn.execute(
            select(people.c.ciphertext).where(people.c.member_code == code)
        ).scalar_one()
    # the search finds them before the erasure (so its silence afterwards means something)
    ledger_rows, vault_rows = raw_contents(ledger_engine), raw_contents(vault.engine)
    for box in sealed_boxes.values():
        assert_present(ledger_rows, box, "ledger rows")
    assert any(form in vault_rows for form in (ciphertext, ciphertext.hex().encode()))
    if db_url.startswith("sqlite"):
        assert_present(sqlite_files(db_url), str(sealed_boxes["sealed box 0"]), "ledger file")
        assert ciphertext in sqlite_files(vault_url)
    sales_before = count(ledger_engine, sales)
    ledger_before = count(ledger_engine, ledger)
    points = balance(ledger_engine, member_token)
    assert points == 10

    with Collector(broker.url, ERASE_TOPIC) as collector:
        result = run(cli_env(tmp_path, db_url, vault_url, keys, broker.url), "privacy", "erase", code)
        assert result.exit_code == 0, result.output
        summary = json.loads(result.stdout)
        assert summary["nodes"] == {"store-1/node-1": "delivered", "store-2/node-9": "delivered"}
        assert summary["ledger_events_scrubbed"] == 4 and summary["dead_letters_scrubbed"] == 1
        assert collector.wait_count(2, timeout=5)
        received = {m.topic: msgspec.json.decode(m.payload, type=EraseCommand) for m in collector.messages()}
    assert set(received) == {f"{ROOT}/store-1/node-1/cmd/erase", f"{ROOT}/store-2/node-9/cmd/erase"}
    for command in received.values():
        assert command.member_token == member_token
        assert command.tokens == [member_token, card]

    # nothing personal left anywhere: rows of every table of both databases ...
    needles = {**pii, **sealed_boxes, "vault ciphertext": ciphertext.hex()}
    for engine, name in ((ledger_engine, "ledger"), (vault.engine, "vault")):
        contents = raw_contents(engine)
        assert_absent(contents, needles, f"{name} rows")
        assert ciphertext not in contents
    assert_present(raw_contents(vault.engine), keep_code, "vault rows")
    # ... and, for SQLite, the files themselves (freed pages zeroed, the WAL checkpointed away)
    if db_url.startswith("sqlite"):
        for url, name in ((db_url, "ledger file"), (vault_url, "vault file")):
            files = sqlite_files(url)
            assert_absent(files, needles, name)
            assert ciphertext not in files
    # sales, points and the pseudonymous member stay
    assert count(ledger_engine, sales) == sales_before
    assert count(ledger_engine, ledger) == ledger_before
    assert balance(ledger_engine, member_token) == points
    assert count(ledger_engine, sale_lines) == sales_before
    with ledger_engine.connect() as conn:
        member = conn.execute(select(members).where(members.c.member_token == member_token)).one()
    assert (member.marketing_email, member.marketing_sms) == (False, False)
    # the vault keeps only the erasure log and who was told
    with vault.engine.connect() as conn:
        assert conn.execute(select(erasures.c.member_code, erasures.c.member_token)).all() == [
            (code, member_token)
        ]
        assert set(conn.execute(select(erasure_notices.c.node, erasure_notices.c.status)).all()) == {
            ("node-1", "delivered"),
            ("node-9", "delivered"),
        }
    assert count(vault.engine, consents, consents.c.member_token == member_token) == 0

    env = cli_env(tmp_path, db_url, vault_url, keys, broker.url)
    gone = run(env, "privacy", "export", code)
    assert gone.exit_code == 1 and "erased" in gone.stderr
    assert [e["member_code"] for e in vault.marketing("email")] == []
    with pytest.raises(MemberErased):
        vault.personal_data(code)
    # a sync (or a worker replaying the ledger) does not bring anything back
    assert vault.catch_up().stored == 0
    assert count(vault.engine, people, people.c.member_code == code) == 0

    # a late event of the erased member (from a node's outbox) is scrubbed as it arrives
    (late_id,) = stored(ingestor, till.survey("Quirinella again", member_token))
    late = event_body(ledger_engine, late_id)
    assert "sealed_comment" not in late and late["erased"] is True


def test_erase_with_the_broker_down_completes_the_erasure_names_the_nodes_and_a_rerun_tells_them(
    vault: PiiVault,
    ingestor: Ingestor,
    till: Till,
    tmp_path: Path,
    db_url: str,
    vault_url: str,
    keys: GeneratedKeys,
) -> None:
    code, member_token, signup = till.signup("Tamsin", email="tamsin@example.org")
    stored(ingestor, signup)
    server = Mosquitto(tmp_path / "broker")  # its port is chosen, nothing listens there yet
    env = cli_env(tmp_path, db_url, vault_url, keys, server.url)
    result = run(env, "privacy", "erase", code, "--timeout", "2")
    assert result.exit_code == 1
    assert "store-1/node-1 (broker-unreachable)" in result.stderr
    assert "erased in both databases" in result.stderr
    assert count(vault.engine, people) == 0  # the erasure itself is done
    assert "sealed" not in event_body(ingestor._engine, json.loads(signup.payload)["id"])
    with vault.engine.connect() as conn:
        assert conn.execute(select(erasure_notices.c.status)).scalars().all() == ["broker-unreachable"]

    with server, Collector(server.url, ERASE_TOPIC) as collector:  # now the broker is up
        again = run(env, "privacy", "erase", code)
        assert again.exit_code == 0, again.output
        summary = json.loads(again.stdout)
        assert summary["already_erased"] is True and summary["nodes"] == {"store-1/node-1": "delivered"}
        assert collector.wait_count(1, timeout=5)
        command = msgspec.json.decode(collector.payloads()[0], type=EraseCommand)
    assert command.tokens == [member_token]
    with vault.engine.connect() as conn:
        notice = conn.execute(select(erasure_notices)).one()
    assert notice.status == "delivered" and notice.delivered_at is not None


def test_erasure_is_reapplied_after_either_database_is_restored_from_a_backup(
    vault: PiiVault, ingestor: Ingestor, till: Till, ledger_engine: Engine
) -> None:
    code, member_token, signup = till.signup("Ulla", email="ulla@example.org")
    (event_id,) = stored(ingestor, signup)
    original_body = event_body(ledger_engine, event_id)
    with vault.engine.connect() as conn:
        person_row = dict(conn.execute(select(people)).one()._mapping)
    vault.erase(code)

    # the ledger restored from last night's backup: the sealed box is back
    with ledger_engine.begin() as conn:
        conn.execute(update(events).where(events.c.id == event_id).values(body=original_body))
    report = vault.catch_up()
    assert report.scrubbed == 1
    assert "sealed" not in event_body(ledger_engine, event_id)

    # the vault restored from a backup: the person is back and the erasure log is gone
    with vault.engine.begin() as conn:
        conn.execute(erasures.delete())
        conn.execute(people.insert().values(**person_row))
    report = vault.catch_up()
    assert report.reconciled == 1
    assert count(vault.engine, people) == 0
    with vault.engine.connect() as conn:
        assert conn.execute(select(erasures.c.member_token)).scalars().all() == [member_token]


# -- rotation ----------------------------------------------------------------------------------------------


def test_rotation_re_encrypts_every_record_and_the_old_key_is_no_longer_needed(
    vault: PiiVault,
    ingestor: Ingestor,
    till: Till,
    tmp_path: Path,
    db_url: str,
    vault_url: str,
    ledger_engine: Engine,
    keys: GeneratedKeys,
) -> None:
    assert keys.data_key_file is not None
    codes = []
    for name in ("Vera", "Wanda", "Xenia"):
        code, _t, message = till.signup(name, email=f"{name.lower()}@example.org")
        stored(ingestor, message)
        codes.append(code)
    old_ring = DataKeyring.parse(keys.data_key_file.read_text())  # a copy, not re-read from the file
    with vault.engine.connect() as conn:
        before = dict(conn.execute(select(people.c.member_code, people.c.ciphertext)).all())

    result = run(cli_env(tmp_path, db_url, vault_url, keys), "vault", "rotate")
    assert result.exit_code == 0, result.output
    rotation = json.loads(result.stdout)
    assert rotation["re_encrypted"] == 3 and rotation["retired"] == old_ring.ids
    new_ring = DataKeyring.load(keys.data_key_file)
    assert new_ring.ids == [rotation["data_key_id"]] and rotation["data_key_id"] not in old_ring.ids
    assert stat.S_IMODE(keys.data_key_file.stat().st_mode) == 0o600
    with vault.engine.connect() as conn:
        rows = conn.execute(select(people.c.member_code, people.c.data_key_id, people.c.ciphertext)).all()
    assert {r.data_key_id for r in rows} == {rotation["data_key_id"]}
    assert all(before[r.member_code] != r.ciphertext for r in rows)

    # a vault given only the new key reads everything; one given only the old key is refused, clearly
    fresh = PiiVault.connect(vault_url, ledger_engine, OpeningKeys.load(keys.private_key_file), new_ring)
    try:
        assert [fresh.personal_data(c)["first_name"] for c in codes] == ["Vera", "Wanda", "Xenia"]
        # new sign-ups are encrypted under the new key too
        code, _t, message = till.signup("Yara", email="yara@example.org")
        Ingestor(ledger_engine, ROOT, on_commit=fresh.absorb).ingest([message])
        with fresh.engine.connect() as conn:
            assert (
                conn.execute(select(people.c.data_key_id).where(people.c.member_code == code)).scalar_one()
                == (rotation["data_key_id"])
            )
    finally:
        fresh.close()
    with pytest.raises(VaultKeyError, match="does not hold"):
        PiiVault.connect(vault_url, ledger_engine, OpeningKeys.load(keys.private_key_file), old_ring)
    old_file = tmp_path / "old.key"
    old_file.write_text(old_ring.text())
    old_file.chmod(0o600)
    env = cli_env(tmp_path, db_url, vault_url, keys)
    refused = run(env | {"KIOSK_VAULT_DATA_KEY_FILE": str(old_file)}, "privacy", "export", codes[0])
    assert refused.exit_code == 2 and "vault keys" in refused.stderr and "does not hold" in refused.stderr


def test_rotation_with_an_environment_key_adopts_the_first_key(
    vault: PiiVault,
    ingestor: Ingestor,
    till: Till,
    tmp_path: Path,
    db_url: str,
    vault_url: str,
    keys: GeneratedKeys,
) -> None:
    assert keys.data_key_file is not None
    code, _t, message = till.signup("Zelda", email="zelda@example.org")
    stored(ingestor, message)
    env = cli_env(tmp_path, db_url, vault_url, keys)
    new_line = run(env, "vault", "new-data-key").stdout.strip()
    old_line = keys.data_key_file.read_text().strip()
    env_keys = env | {"KIOSK_VAULT_DATA_KEY_FILE": None, "KIOSK_VAULT_DATA_KEY": f"{new_line},{old_line}"}
    result = run(env_keys, "vault", "rotate", "--adopt")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["re_encrypted"] == 1
    only_new = env_keys | {"KIOSK_VAULT_DATA_KEY": new_line}
    exported = run(only_new, "privacy", "export", code)
    assert exported.exit_code == 0, exported.output
    assert json.loads(exported.stdout)["personal_data"]["first_name"] == "Zelda"
    assert run(env_keys, "vault", "rotate").exit_code == 2  # no file to write a generated key into


def test_absorb_report_sums() -> None:
    a, b = AbsorbReport(stored=1, failed={"x": 1}), AbsorbReport(stored=2, failed={"x": 2, "y": 1})
    a.add(b)
    assert a.as_dict()["stored"] == 3 and a.failed == {"x": 3, "y": 1}


# -- the worker's wiring (as cloud_sync.central.service composes it) ----------------------------------------


def test_the_worker_wiring_names_members_for_the_tills_and_forgets_them_after_erasure(
    vault: PiiVault, ledger_engine: Engine, till: Till
) -> None:
    from cloud_sync.central.members import MemberService
    from cloud_sync.central.program import LoyaltySection

    program = LoyaltySection()
    pushed: list[str] = []
    consumers = [vault.on_commit, lambda docs: pushed.extend(d["id"] for d in docs)]

    def after_commit(docs: Any) -> None:
        for consume in consumers:
            consume(list(docs))

    ingest = Ingestor(ledger_engine, ROOT, program=program, on_commit=after_commit)
    members_service = MemberService(ledger_engine, program, names=vault)
    card = token(88)
    code, _member_token, signup = till.signup("Beatrix", email="beatrix@example.org", card=card)
    assert [o.status for o in ingest.ingest([signup])] == ["stored"]
    info = members_service.info(card)
    assert (info.known, info.member_code, info.first_name) == (True, code, "Beatrix")

    # the vault's database failing must not stop the consumers after it (nor the ingest)
    def broken(_docs: Any) -> AbsorbReport:
        raise ConnectionError("vault database down")

    vault_absorb, vault.absorb = vault.absorb, broken  # type: ignore[method-assign]
    try:
        code2, _t2, signup2 = till.signup("Clio", email="clio@example.org")
        outcomes = ingest.ingest([signup2])
    finally:
        vault.absorb = vault_absorb  # type: ignore[method-assign]
    assert [o.status for o in outcomes] == ["stored"] and str(outcomes[0].event_id) in pushed
    catching_up = vault.start_catch_up()
    catching_up.join(10)
    assert not catching_up.is_alive()
    assert vault.personal_data(code2)["first_name"] == "Clio"

    vault.erase(code)
    after = members_service.info(card)
    assert after.known and after.first_name is None and after.member_code is None


def test_a_node_with_no_session_on_the_broker_counts_as_not_told(
    vault: PiiVault,
    ingestor: Ingestor,
    till: Till,
    ledger_engine: Engine,
    broker: Mosquitto,
    tmp_path: Path,
    db_url: str,
    vault_url: str,
    keys: GeneratedKeys,
) -> None:
    FakeNode("store-3", "node-offline", engine=ledger_engine)
    code, _token, signup = till.signup("Delia", email="delia@example.org")
    stored(ingestor, signup)
    # only store-1/node-1 is listening; the other node has no session, so the broker drops its command
    with Collector(broker.url, f"{ROOT}/store-1/node-1/cmd/erase") as collector:
        result = run(cli_env(tmp_path, db_url, vault_url, keys, broker.url), "privacy", "erase", code)
        assert collector.wait_count(1, timeout=5)
    assert result.exit_code == 1
    assert json.loads(result.stdout)["nodes"] == {
        "store-1/node-1": "delivered",
        "store-3/node-offline": "no-subscriber",
    }
    assert "store-3/node-offline (no-subscriber)" in result.stderr
    assert "store-1/node-1" not in result.stderr


def test_missing_keys_are_a_configuration_error_and_other_commands_ignore_the_key_variables(
    tmp_path: Path, db_url: str, vault_url: str, keys: GeneratedKeys
) -> None:
    env = cli_env(tmp_path, db_url, vault_url, keys) | {"KIOSK_VAULT_PRIVATE_KEY_FILE": None}
    result = run(env, "privacy", "export", make_member_code(5))
    assert result.exit_code == 2 and "no vault private key" in result.stderr
    missing = run(env | {"KIOSK_VAULT_PRIVATE_KEY_FILE": str(tmp_path / "nope.key")}, "vault", "sync")
    assert missing.exit_code == 2 and "does not exist" in missing.stderr
    # the KIOSK_VAULT_* variables are outside the KIOSK_CENTRAL_ settings: no other command minds them
    from cloud_sync.central.config import load_central_settings

    environ = {k: v for k, v in cli_env(tmp_path, db_url, vault_url, keys).items() if v is not None}
    assert load_central_settings(None, environ).vault_url == vault_url


def test_a_ciphertext_moved_to_another_member_does_not_decrypt(
    vault: PiiVault, ingestor: Ingestor, till: Till
) -> None:
    code_a, _ta, msg_a = till.signup("Elsa", email="elsa@example.org")
    code_b, _tb, msg_b = till.signup("Fenna", email="fenna@example.org")
    stored(ingestor, msg_a, msg_b)
    with vault.engine.begin() as conn:
        a = conn.execute(
            select(people.c.nonce, people.c.ciphertext).where(people.c.member_code == code_a)
        ).one()
        conn.execute(
            update(people)
            .where(people.c.member_code == code_b)
            .values(nonce=a.nonce, ciphertext=a.ciphertext)
        )
    assert vault.personal_data(code_a)["first_name"] == "Elsa"
    with pytest.raises(VaultKeyError, match="does not verify"):
        vault.personal_data(code_b)
