"""The node's two kinds of secret, kept apart.

* The **signing key** (Ed25519, one per node) proves to the central receiver which node sent a message.
* The **pseudonymisation key** (32+ random bytes, one per *chain*) turns card UIDs and barcodes into
  identity tokens; the same key on every node makes the same card the same token in every store. It is
  provisioned from a file named in the config; only a standalone node generates its own.

Both live in the data directory (0700) with mode 0600 and are never logged.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from nacl.signing import SigningKey

from cloud_sync.envelope import encode_public_key
from edge.errors import KeyFileError

SIGNING_KEY_FILE = "node-signing.key"
PSEUDONYM_KEY_FILE = "pseudonym.key"
MIN_PSEUDONYM_KEY_BYTES = 32

# An unencrypted Ed25519 PKCS#8 v1 key is this fixed DER header followed by the 32-byte seed (RFC 8410,
# section 7 and the example in section 10.3); OpenSSL and `cryptography` write exactly this. Reading it by
# its header keeps the node from loading cryptography's 7.5 MB library just to read one key. Any other
# encoding (a v2 key carrying its public half, say) is handed to `cryptography`'s full parser.
_PKCS8_ED25519_HEADER = bytes.fromhex("302e020100300506032b657004220420")
_PEM_BEGIN = b"-----BEGIN PRIVATE KEY-----"
_PEM_END = b"-----END PRIVATE KEY-----"


def signing_key_pem(key: SigningKey) -> bytes:
    """The key as PEM PKCS#8, readable by ``openssl pkey`` and any PKCS#8 library."""
    body = base64.encodebytes(_PKCS8_ED25519_HEADER + key.encode()).replace(b"\n", b"")
    return _PEM_BEGIN + b"\n" + body + b"\n" + _PEM_END + b"\n"


def _parse_signing_key(data: bytes, path: Path) -> SigningKey:
    text = data.strip()
    if text.startswith(_PEM_BEGIN) and text.endswith(_PEM_END):
        try:
            der = base64.b64decode(b"".join(text[len(_PEM_BEGIN) : -len(_PEM_END)].split()), validate=True)
        except binascii.Error as exc:
            raise KeyFileError(f"{path} is not a PEM private key (bad base64)") from exc
        if len(der) == len(_PKCS8_ED25519_HEADER) + 32 and der.startswith(_PKCS8_ED25519_HEADER):
            return SigningKey(der[len(_PKCS8_ED25519_HEADER) :])
    return _parse_with_cryptography(data, path)


def _parse_with_cryptography(data: bytes, path: Path) -> SigningKey:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
        load_pem_private_key,
    )

    try:
        key = load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path} is not a PEM private key (or it is encrypted)") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path} is not an Ed25519 key")
    return SigningKey(key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()))


def ensure_data_dir(path: Path) -> Path:
    """Create the data directory with mode 0700 (and tighten it if it already exists and is ours)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.stat().st_uid == os.getuid():
        path.chmod(0o700)
    return path


def write_secret(path: Path, data: bytes) -> None:
    """Write ``data`` to a new file that is 0600 from its first byte (never briefly world-readable)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_secret(path: Path, *, forbidden: int = 0o077) -> bytes:
    """Read a secret file, refusing one whose mode grants any of the ``forbidden`` bits."""
    try:
        mode = path.stat().st_mode
        if mode & forbidden:
            raise KeyFileError(f"{path} is readable by other users (mode {mode & 0o777:o}); chmod 600 it")
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise KeyFileError(f"{path} does not exist; run 'kiosk-edge keys init'") from exc
    except PermissionError as exc:
        raise KeyFileError(f"{path} is not readable by this user") from exc


@dataclass(frozen=True, slots=True)
class InitResult:
    """What ``init_keys`` did, for the CLI to report."""

    created_signing: bool
    created_pseudonym: bool
    pseudonym_source: Path


def init_keys(data_dir: Path, pseudonym_key_file: Path | None) -> InitResult:
    """Create the keys that are missing; never overwrite one."""
    ensure_data_dir(data_dir)
    signing = data_dir / SIGNING_KEY_FILE
    created_signing = False
    if not signing.exists():
        write_secret(signing, signing_key_pem(SigningKey.generate()))
        created_signing = True
    created_pseudonym = False
    if pseudonym_key_file is not None:
        source = pseudonym_key_file
    else:
        source = data_dir / PSEUDONYM_KEY_FILE
        if not source.exists():
            write_secret(source, secrets.token_hex(32).encode() + b"\n")
            created_pseudonym = True
    load_pseudonym_key(source)  # validate whichever we use
    return InitResult(created_signing, created_pseudonym, source)


def load_signing_key(data_dir: Path) -> SigningKey:
    """The node's Ed25519 private key (PEM PKCS#8)."""
    path = data_dir / SIGNING_KEY_FILE
    return _parse_signing_key(read_secret(path), path)


def public_key_text(data_dir: Path) -> str:
    """The one-line public key to register centrally (``kiosk-central nodes add``)."""
    return encode_public_key(load_signing_key(data_dir).verify_key)


def load_pseudonym_key(path: Path) -> bytes:
    """The chain key: hex (64+ digits) or raw bytes (32+), surrounding whitespace ignored.

    Group-readable is allowed (provisioning may share it with the service's group); world-readable is not.
    """
    data = read_secret(path, forbidden=0o007)
    text = data.strip()
    try:
        key = bytes.fromhex(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        key = data
    if len(key) < MIN_PSEUDONYM_KEY_BYTES:
        raise KeyFileError(f"{path} holds {len(key)} bytes; a pseudonymisation key needs at least 32")
    return key
