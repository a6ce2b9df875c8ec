"""Identity tokens and the node's two kinds of secret."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from cloud_sync.envelope import decode_public_key
from edge.errors import KeyFileError
from edge.identity import Pseudonymizer
from edge.keys import (
    PSEUDONYM_KEY_FILE,
    SIGNING_KEY_FILE,
    init_keys,
    load_pseudonym_key,
    load_signing_key,
    public_key_text,
)

KEY = bytes(range(32))


def test_tokens_are_keyed_domain_separated_and_stable() -> None:
    p = Pseudonymizer(KEY)
    uid = bytes.fromhex("04A1B2C3D4E5F6")
    token = p.card_token(uid)
    assert token == Pseudonymizer(KEY).card_token(uid)  # same chain key, same token in every store
    assert token != Pseudonymizer(bytes(32)).card_token(uid)
    assert token != p.barcode_token(uid.hex())
    assert uid.hex() not in token and uid.hex().upper() not in token
    assert len(token) == 64 and int(token, 16) >= 0
    assert "key" in repr(p) and KEY.hex() not in repr(p)


@pytest.mark.parametrize("uid", [b"", b"\x01\x02\x03", bytes(11), bytes(5)])
def test_bad_uids(uid: bytes) -> None:
    with pytest.raises(ValueError, match="4, 7 or 10 bytes"):
        Pseudonymizer(KEY).card_token(uid)


@pytest.mark.parametrize("code", ["", "x" * 129, "abc\x00", "line\nbreak"])
def test_bad_codes(code: str) -> None:
    with pytest.raises(ValueError, match="printable"):
        Pseudonymizer(KEY).barcode_token(code)


def test_init_creates_private_keys_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = init_keys(data, None)
    assert first.created_signing and first.created_pseudonym
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    for name in (SIGNING_KEY_FILE, PSEUDONYM_KEY_FILE):
        assert stat.S_IMODE((data / name).stat().st_mode) == 0o600
    pub = public_key_text(data)
    second = init_keys(data, None)
    assert not second.created_signing and not second.created_pseudonym
    assert public_key_text(data) == pub  # never overwritten
    decode_public_key(pub)


def test_chain_key_from_config_is_used_and_no_standalone_key_is_made(tmp_path: Path) -> None:
    chain = tmp_path / "chain.key"
    chain.write_text(KEY.hex() + "\n")
    chain.chmod(0o640)
    result = init_keys(tmp_path / "data", chain)
    assert result.pseudonym_source == chain and not result.created_pseudonym
    assert not (tmp_path / "data" / PSEUDONYM_KEY_FILE).exists()
    assert load_pseudonym_key(chain) == KEY


def test_unsafe_or_bad_key_files_are_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    init_keys(data, None)
    (data / SIGNING_KEY_FILE).chmod(0o644)
    with pytest.raises(KeyFileError, match="readable by other users"):
        load_signing_key(data)
    short = tmp_path / "short.key"
    short.write_text("abcd")
    short.chmod(0o600)
    with pytest.raises(KeyFileError, match="at least 32"):
        load_pseudonym_key(short)
    world = tmp_path / "world.key"
    world.write_text(KEY.hex())
    world.chmod(0o604)
    with pytest.raises(KeyFileError, match="readable by other users"):
        load_pseudonym_key(world)
    with pytest.raises(KeyFileError, match="does not exist"):
        load_signing_key(tmp_path / "empty")
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / SIGNING_KEY_FILE).write_text("not a key")
    (junk / SIGNING_KEY_FILE).chmod(0o600)
    with pytest.raises(KeyFileError, match="not a PEM private key"):
        load_signing_key(junk)
