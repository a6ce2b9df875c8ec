"""``kiosk-central`` as operators use it: registry, stats, bad configuration, card lifecycle, maintenance."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import pytest

from cloud_sync.central.db import make_engine, migrate
from cloud_sync.central.ingest import Ingestor, balance
from cloud_sync.codes import make_member_code
from edge.signup import Vault
from tests.support.broker import free_port
from tests.support.central import KIOSK_CENTRAL, FakeNode, base_env, sale_body, signup_body, token

CODE = make_member_code(427)
OTHER_CODE = make_member_code(428)


def central(
    *args: str, env: dict[str, str] | None = None, data: Path | None = None
) -> subprocess.CompletedProcess[str]:
    environ = base_env()
    if data is not None:
        environ["KIOSK_CENTRAL_DATA__DIR"] = str(data)
    environ.update(env or {})
    return subprocess.run([KIOSK_CENTRAL, *args], capture_output=True, text=True, timeout=60, env=environ)


def test_registry_and_stats(tmp_path: Path, db_url: str) -> None:
    node = FakeNode()
    added = central("nodes", "add", "--db", db_url, node.store, node.node, node.public_key)
    assert added.returncode == 0 and "registered" in added.stdout, added.stderr
    again = central("nodes", "add", "--db", db_url, node.store, node.node, node.public_key)
    assert again.returncode == 0 and "already registered" in again.stdout
    clash = central("nodes", "add", "--db", db_url, node.store, node.node, FakeNode().public_key)
    assert clash.returncode == 2 and "--replace" in clash.stderr and "Traceback" not in clash.stderr
    bad = central("nodes", "add", "--db", db_url, "store/#", "n", node.public_key)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    listed = json.loads(central("nodes", "list", "--json", "--db", db_url).stdout)
    assert [(n["store"], n["node"], n["public_key"]) for n in listed] == [
        (node.store, node.node, node.public_key)
    ]

    engine = make_engine(db_url)
    Ingestor(engine, "retail/v1").ingest(
        [
            node.incoming("sale", sale_body("RCPT-1", customer=token(1))),
            node.incoming("sale", sale_body("RCPT-2")),
        ]
    )
    engine.dispose()
    stats = json.loads(central("stats", "--format", "json", "--db", db_url).stdout)
    assert stats["ingested"] == {"sale": 2} and stats["nodes"][0]["last_seq"] == 2
    table = central("stats", "--db", db_url).stdout
    assert "sale" in table and "missing seqs" in table

    removed = central("nodes", "remove", "--db", db_url, node.store, node.node)
    assert removed.returncode == 0
    gone = central("nodes", "remove", "--db", db_url, node.store, node.node)
    assert gone.returncode == 1 and "not registered" in gone.stderr


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"KIOSK_CENTRAL_DB__URL": "mysql://x/y"},
            "db.url (from KIOSK_CENTRAL_DB__URL): must be a SQLAlchemy URL",
        ),
        (
            {"KIOSK_CENTRAL_MQTT__URL": "http://broker"},
            "mqtt.url (from KIOSK_CENTRAL_MQTT__URL): must start with",
        ),
        ({"KIOSK_CENTRAL_MQTT__BATCH_MAX": "0"}, "mqtt.batch_max (from KIOSK_CENTRAL_MQTT__BATCH_MAX)"),
        ({"KIOSK_CENTRAL_NOPE__X": "1"}, "KIOSK_CENTRAL_NOPE__X: unknown setting"),
        ({"KIOSK_CENTRAL_VAULT__PRIVATE_KEY_FILE": "/nonexistent/vault.key"}, "vault.private_key_file"),
    ],
)
def test_bad_configuration_is_one_line_and_exit_2(tmp_path: Path, env: dict[str, str], message: str) -> None:
    result = central("stats", env=env, data=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_a_database_that_does_not_answer_is_exit_1_with_the_reason(tmp_path: Path) -> None:
    url = f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/none"
    for args in (["stats", "--db", url], ["run", "--db", url, "--broker", f"mqtt://127.0.0.1:{free_port()}"]):
        result = central(*args, env={"KIOSK_CENTRAL_METRICS__PORT": "0"}, data=tmp_path)
        assert result.returncode == 1, result.stderr
        assert "database:" in result.stderr and "Traceback" not in result.stderr


def test_card_lifecycle_lost_card_replacement_and_maintenance(tmp_path: Path, db_url: str) -> None:
    data = tmp_path / "central"
    keygen = central("vault", "keygen", "--out", str(data), data=data)
    assert keygen.returncode == 0, keygen.stderr
    public = keygen.stdout.strip().split('"')[1]
    assert public.startswith("x25519:")
    vault = Vault(base64.b64decode(public.removeprefix("x25519:")))

    engine = make_engine(db_url)
    migrate(engine)
    node = FakeNode(engine=engine)
    member, lost, new = token(10), token(11), token(12)
    body = signup_body(member, card_token=lost)
    body["sealed"] = vault.seal({"first_name": "Zeynep", "member_code": CODE, "email": "z@example.com"})
    body["vault_key"] = vault.key_id
    ingestor = Ingestor(engine, "retail/v1")
    ingestor.ingest(
        [node.incoming("signup", body), node.incoming("sale", sale_body("RCPT-1", customer=lost))]
    )
    # the replacement card was tapped at a till and bought something before it was bound
    ingestor.ingest(
        [
            node.incoming("identity", {"source": "nfc", "token": new, "device": "r"}),
            node.incoming("sale", sale_body("RCPT-2", customer=new)),
        ]
    )
    vault_env = {"KIOSK_CENTRAL_VAULT__URL": f"sqlite:///{tmp_path / 'vault.db'}"}
    assert central("vault", "sync", "--db", db_url, env=vault_env, data=data).returncode == 0

    cards = [
        json.loads(line)
        for line in central(
            "cards", "list", "--db", db_url, CODE, env=vault_env, data=data
        ).stdout.splitlines()
    ]
    assert {(c["token"], c["kind"]) for c in cards} == {(member, "member code"), (lost, "card")}
    recent = [
        json.loads(line) for line in central("cards", "recent", "--db", db_url, data=data).stdout.splitlines()
    ]
    assert [c["token"] for c in recent] == [new]

    assert central("cards", "block", "--db", db_url, lost, data=data).stdout.strip() == "blocked"
    bound = central("cards", "bind", "--db", db_url, CODE, new, env=vault_env, data=data)
    assert bound.returncode == 0 and bound.stdout.strip() == "bound", bound.stderr
    assert balance(engine, member) == 10 and balance(engine, new) == 0  # the new card's 5 points came along
    unknown = central("cards", "bind", "--db", db_url, OTHER_CODE, new, env=vault_env, data=data)
    assert unknown.returncode == 1 and "no member" in unknown.stderr
    typo = CODE[:-1] + str((int(CODE[-1]) + 1) % 10)
    mistyped = central("cards", "bind", "--db", db_url, typo, new, env=vault_env, data=data)
    assert mistyped.returncode == 2 and "check digit" in mistyped.stderr
    assert central("cards", "block", "--db", db_url, "not-a-token", data=data).returncode == 2
    assert central("cards", "unblock", "--db", db_url, token(99), data=data).returncode == 1

    maintained = central("loyalty", "maintain", "--db", db_url, data=data)
    assert json.loads(maintained.stdout) == {"expired_accounts": 0, "tiers_lowered": 0}
    engine.dispose()


def test_dead_letters_of_an_unregistered_node_are_replayed_after_it_is_added(
    tmp_path: Path, db_url: str
) -> None:
    engine = make_engine(db_url)
    migrate(engine)
    node = FakeNode()  # not registered yet: its events are dead-lettered, bytes kept
    ingestor = Ingestor(engine, "retail/v1")
    good = [node.incoming("sale", sale_body(f"RCPT-{i}", customer=token(7))) for i in range(3)]
    garbage = node.incoming("sale", sale_body("RCPT-X"))
    garbage = type(garbage)(garbage.topic, garbage.payload.replace(b'"sig":"', b'"sig":"AAAA'))
    assert [o.reason for o in ingestor.ingest([*good, garbage])] == ["unknown-node"] * 4
    listed = [
        json.loads(x)
        for x in central("deadletters", "list", "--db", db_url, data=tmp_path).stdout.splitlines()
    ]
    assert [x["reason"] for x in listed] == ["unknown-node"] * 4 and all(x["size"] > 300 for x in listed)
    assert central("deadletters", "replay", "--db", db_url, data=tmp_path).returncode == 2  # ids or --reason

    node.register(engine)
    replayed = central("deadletters", "replay", "--db", db_url, "--reason", "unknown-node", data=tmp_path)
    results = [json.loads(x) for x in replayed.stdout.splitlines()]
    assert replayed.returncode == 1  # one failed again: the forged signature
    assert [r["status"] for r in results] == ["stored", "stored", "stored", "dead"]
    assert results[-1]["reason"] == "bad-signature"
    assert balance(engine, token(7)) == 15
    left = [
        json.loads(x)
        for x in central("deadletters", "list", "--db", db_url, data=tmp_path).stdout.splitlines()
    ]
    assert [(x["id"], x["reason"]) for x in left] == [(listed[-1]["id"], "bad-signature")]
    again = central("deadletters", "replay", "--db", db_url, str(listed[0]["id"]), data=tmp_path)
    assert again.returncode == 0 and again.stdout == ""  # already gone: nothing to do, nothing doubled
    assert balance(engine, token(7)) == 15
    engine.dispose()
