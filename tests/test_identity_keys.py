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


def test_signing_key_file_is_standard_pkcs8_both_ways(tmp_path: Path) -> None:
    """Our PEM is what OpenSSL and `cryptography` read and write, so keys move between tools."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
        PublicFormat,
        load_pem_private_key,
    )

    data = tmp_path / "data"
    init_keys(data, None)
    ours = load_pem_private_key((data / SIGNING_KEY_FILE).read_bytes(), password=None)
    assert isinstance(ours, Ed25519PrivateKey)
    raw_pub = ours.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert bytes(load_signing_key(data).verify_key) == raw_pub

    theirs = Ed25519PrivateKey.generate()
    other = tmp_path / "other"
    other.mkdir()
    (other / SIGNING_KEY_FILE).write_bytes(
        theirs.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    )
    (other / SIGNING_KEY_FILE).chmod(0o600)
    expected = theirs.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert bytes(load_signing_key(other).verify_key) == expected


def test_node_reads_its_key_without_loading_cryptography(tmp_path: Path) -> None:
    """The Rust library behind `cryptography` costs the node ~7.5 MB of RSS; the node must not map it."""
    import subprocess
    import sys

    init_keys(tmp_path / "data", None)
    code = (
        "import sys; from pathlib import Path; from edge.keys import public_key_text; import edge.node; "
        f"print(public_key_text(Path({str(tmp_path / 'data')!r}))); "
        "print(sorted(m for m in sys.modules if m.startswith('cryptography')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    pub, loaded = out.splitlines()
    assert pub.startswith("ed25519:") and loaded == "[]"


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        # right header, seed one byte short: not our fast path, and cryptography refuses it too
        (
            b"-----BEGIN PRIVATE KEY-----\nMC0CAQAwBQYDK2VwBCEEIAABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4=\n"
            b"-----END PRIVATE KEY-----\n",
            "not a PEM private key",
        ),
        (b"-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----\n", "not a PEM private key"),
        (b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n", "encrypted"),
        (b"\x00" * 5000, "not a PEM private key"),
    ],
)
def test_malformed_or_foreign_signing_keys_are_refused(tmp_path: Path, content: bytes, reason: str) -> None:
    (tmp_path / SIGNING_KEY_FILE).write_bytes(content)
    (tmp_path / SIGNING_KEY_FILE).chmod(0o600)
    with pytest.raises(KeyFileError, match=reason):
        load_signing_key(tmp_path)


def test_a_non_ed25519_key_is_refused(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    pem = generate_private_key(SECP256R1()).private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    (tmp_path / SIGNING_KEY_FILE).write_bytes(pem)
    (tmp_path / SIGNING_KEY_FILE).chmod(0o600)
    with pytest.raises(KeyFileError, match="not an Ed25519 key"):
        load_signing_key(tmp_path)
