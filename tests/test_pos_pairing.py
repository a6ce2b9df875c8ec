"""POS pairing: one-time codes, hashed tokens, lock-out, revocation, and the CLI that drives them."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import threading
from pathlib import Path

import pytest

from edge.pos.pairing import TOKEN_PREFIX, Pairing, PairingRefused
from tests.support.node import KIOSK_EDGE, base_env


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def pairing(tmp_path: Path, clock: Clock) -> Pairing:
    p = Pairing(tmp_path / "local.sqlite3", code_ttl=300, max_failures=3, lockout=120, clock=clock)
    yield p  # type: ignore[misc]
    p.close()


def test_a_code_pairs_once_and_the_token_is_stored_only_as_a_hash(pairing: Pairing, tmp_path: Path) -> None:
    code = pairing.new_code()
    assert len(code.code) == 6 and code.code.isdigit()
    token = pairing.pair(code.code, "till-1", "Till 1")
    assert token.startswith(TOKEN_PREFIX) and len(token) >= len(TOKEN_PREFIX) + 43  # 256 bits, base64url
    assert pairing.authenticate(token) == "till-1"
    with pytest.raises(PairingRefused) as again:  # one-time
        pairing.pair(code.code, "till-2", "Till 2")
    assert again.value.reason == "wrong-code"
    raw = (tmp_path / "local.sqlite3").read_bytes() + _wal(tmp_path)
    assert token.encode() not in raw and token[len(TOKEN_PREFIX) :].encode() not in raw
    assert hashlib.sha256(token.encode()).hexdigest().encode() in raw


def _wal(tmp_path: Path) -> bytes:
    wal = tmp_path / "local.sqlite3-wal"
    return wal.read_bytes() if wal.exists() else b""


def test_expired_code_is_refused(pairing: Pairing, clock: Clock) -> None:
    code = pairing.new_code()
    clock.now += 301
    with pytest.raises(PairingRefused) as refused:
        pairing.pair(code.code, "till-1", "Till 1")
    assert refused.value.reason == "expired"


def test_a_new_code_voids_the_previous_one(pairing: Pairing) -> None:
    first = pairing.new_code()
    second = pairing.new_code()
    if first.code != second.code:  # one chance in a million that they collide
        with pytest.raises(PairingRefused):
            pairing.pair(first.code, "till-1", "Till 1")
    assert pairing.pair(second.code, "till-1", "Till 1").startswith(TOKEN_PREFIX)


def test_wrong_codes_lock_pairing_and_void_outstanding_codes(pairing: Pairing, clock: Clock) -> None:
    good = pairing.new_code()
    wrong = f"{(int(good.code) + 1) % 1_000_000:06d}"
    reasons = []
    for _ in range(3):
        with pytest.raises(PairingRefused) as refused:
            pairing.pair(wrong, "laptop", "Attacker")
        reasons.append(refused.value.reason)
    assert reasons == ["wrong-code", "wrong-code", "locked"]
    with pytest.raises(PairingRefused) as locked:  # even the right code, while locked
        pairing.pair(good.code, "till-1", "Till 1")
    assert locked.value.reason == "locked" and 1 <= (locked.value.retry_after or 0) <= 120
    clock.now += 121
    with pytest.raises(PairingRefused) as void:  # the lock-out voided it
        pairing.pair(good.code, "till-1", "Till 1")
    assert void.value.reason == "wrong-code"
    fresh = pairing.new_code()
    assert pairing.pair(fresh.code, "till-1", "Till 1")


def test_failures_are_counted_across_processes_and_restarts(tmp_path: Path, clock: Clock) -> None:
    """The count lives in SQLite: restarting the node (or pairing via the CLI) does not reset it."""
    path = tmp_path / "local.sqlite3"
    first = Pairing(path, max_failures=2, clock=clock)
    code = first.new_code().code
    wrong = [f"{(int(code) + i) % 1_000_000:06d}" for i in (1, 2)]
    with pytest.raises(PairingRefused):
        first.pair(wrong[0], "x", "x")
    first.close()
    second = Pairing(path, max_failures=2, clock=clock)
    try:
        with pytest.raises(PairingRefused) as refused:
            second.pair(wrong[1], "x", "x")
        assert refused.value.reason == "locked"
    finally:
        second.close()


def test_a_success_resets_the_failure_count(pairing: Pairing) -> None:
    for _ in range(2):
        code = pairing.new_code()
        with pytest.raises(PairingRefused):
            pairing.pair(f"{(int(code.code) + 7) % 1_000_000:06d}", "till-1", "Till 1")
        assert pairing.pair(code.code, "till-1", "Till 1")


@pytest.mark.parametrize(
    ("code", "pos_id", "name", "message"),
    [
        ("12345", "till-1", "Till", "6 digits"),
        ("1234567", "till-1", "Till", "6 digits"),
        ("١٢٣٤٥٦", "till-1", "Till", "6 digits"),  # Arabic-Indic digits are not ASCII digits
        (123456, "till-1", "Till", "6 digits"),
        ("123456", "till/1", "Till", "pos_id"),
        ("123456", "+#", "Till", "pos_id"),
        ("123456", "a" * 65, "Till", "pos_id"),
        ("123456", None, "Till", "pos_id"),
        ("123456", "till-1", "", "name"),
        ("123456", "till-1", "x" * 65, "name"),
        ("123456", "till-1", "bad\nname", "name"),
        ("123456", "till-1", ["list"], "name"),
    ],
)
def test_malformed_pairing_requests(
    pairing: Pairing, code: object, pos_id: object, name: object, message: str
) -> None:
    pairing.new_code()
    with pytest.raises(ValueError, match=message):
        pairing.pair(code, pos_id, name)


def test_malformed_requests_do_not_count_as_guesses(pairing: Pairing) -> None:
    code = pairing.new_code()
    for _ in range(10):
        with pytest.raises(ValueError):
            pairing.pair("abc", "till-1", "Till")
    assert pairing.pair(code.code, "till-1", "Till")


def test_revoke_and_repair(pairing: Pairing) -> None:
    token = pairing.pair(pairing.new_code().code, "till-1", "Till 1")
    assert pairing.revoke("till-1") and not pairing.revoke("till-1") and not pairing.revoke("nope")
    assert pairing.authenticate(token) is None  # replay after revoke
    newer = pairing.pair(pairing.new_code().code, "till-1", "Till 1 (new)")
    assert pairing.authenticate(newer) == "till-1" and pairing.authenticate(token) is None
    [client] = pairing.clients()
    assert client.name == "Till 1 (new)" and client.revoked_at is None


def test_repairing_replaces_the_old_token(pairing: Pairing) -> None:
    old = pairing.pair(pairing.new_code().code, "till-1", "Till 1")
    new = pairing.pair(pairing.new_code().code, "till-1", "Till 1")
    assert pairing.authenticate(old) is None and pairing.authenticate(new) == "till-1"


@pytest.mark.parametrize(
    "token",
    ["", "kpos_", "Bearer", "kpos_" + "A" * 43, "x" * 10_000, "kpos_' OR 1=1 --", "kpos_\x00"],
)
def test_unknown_or_hostile_tokens_authenticate_nobody(pairing: Pairing, token: str) -> None:
    pairing.pair(pairing.new_code().code, "till-1", "Till 1")
    assert pairing.authenticate(token) is None


def test_concurrent_pairs_with_one_code_give_one_token(pairing: Pairing) -> None:
    code = pairing.new_code()
    results: list[str] = []
    lock = threading.Lock()

    def attempt(i: int) -> None:
        try:
            token = pairing.pair(code.code, f"till-{i}", "Till")
        except PairingRefused:
            return
        with lock:
            results.append(token)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 1


def test_last_seen_is_written_at_most_once_a_minute(pairing: Pairing, clock: Clock, tmp_path: Path) -> None:
    token = pairing.pair(pairing.new_code().code, "till-1", "Till 1")
    pairing.authenticate(token)
    seen = pairing.clients()[0].last_seen
    clock.now += 30
    pairing.authenticate(token)
    assert pairing.clients()[0].last_seen == seen
    clock.now += 31
    pairing.authenticate(token)
    assert pairing.clients()[0].last_seen == clock.now


# -- the CLI -------------------------------------------------------------------------------------------


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([KIOSK_EDGE, *args], env=env, capture_output=True, text=True, timeout=60)


def test_cli_pair_list_revoke(tmp_path: Path) -> None:
    env = base_env()
    env["KIOSK_EDGE_DATA__DIR"] = str(tmp_path / "data")
    out = _cli(env, "pair")
    assert out.returncode == 0, out.stderr
    line = out.stdout.splitlines()[0]
    code = line.split(":", 1)[1].replace(" ", "")
    assert len(code) == 6 and code.isdigit() and "valid until" in out.stdout
    assert _cli(env, "pos", "list").stdout.startswith("no POS paired yet")
    pairing = Pairing(tmp_path / "data" / "local.sqlite3")
    try:
        token = pairing.pair(code, "till-1", "Front till")
    finally:
        pairing.close()
    listed = _cli(env, "pos", "list")
    assert "till-1" in listed.stdout and "Front till" in listed.stdout and "active" in listed.stdout
    assert token not in listed.stdout
    as_json = json.loads(_cli(env, "pos", "list", "--json").stdout)
    assert as_json[0]["pos_id"] == "till-1" and as_json[0]["revoked_at"] is None
    assert "token_hash" not in as_json[0]
    revoked = _cli(env, "pos", "revoke", "till-1")
    assert revoked.returncode == 0 and "revoked" in revoked.stdout
    again = _cli(env, "pos", "revoke", "till-1")
    assert (
        again.returncode == 1 and "no active POS 'till-1'" in again.stderr and "Traceback" not in again.stderr
    )
    assert "revoked" in _cli(env, "pos", "list").stdout
    conn = sqlite3.connect(tmp_path / "data" / "local.sqlite3")
    try:
        assert (
            conn.execute("SELECT count(*) FROM pos_clients WHERE revoked_at IS NOT NULL").fetchone()[0] == 1
        )
    finally:
        conn.close()


def test_cli_pair_with_an_unusable_data_dir_fails_in_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    env = base_env()
    env["KIOSK_EDGE_DATA__DIR"] = str(blocker / "data")
    out = _cli(env, "pair")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.startswith("kiosk-edge: cannot open the node's pairing state")
