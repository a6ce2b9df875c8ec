"""The PII vault's keys: the X25519 key pair the nodes seal to, and the AES-256-GCM data keys at rest.

Two kinds of key, kept apart on purpose (docs/privacy.md):

* **Opening keys** (``vault.key``): X25519 private keys, one per line ``x25519:<base64>``. Nodes seal personal
  data to the public half (``identity.vault_public_key``); a sealed box names the key it was sealed to by
  ``vault_key`` = the first 16 hex digits of SHA-256 of the public key, so a file may hold the current key
  and the previous one while nodes are being moved to a new pair. Removing a private key from the file
  crypto-shreds every sealed copy made for it (old backups, a stolen Pi's outbox).
* **Data keys** (``vault-data.key``, or the ``KIOSK_VAULT_DATA_KEY`` environment variable): AES-256 keys,
  one per line ``aes256gcm:<base64>``; the first line encrypts, the others only decrypt (during a rotation).
  A key's id is an HMAC of the key itself, so a wrong key is recognised by its id before anything is
  decrypted, and the id reveals nothing about the key.

Nothing here ever logs or prints key material; ``repr`` of every holder hides it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
import secrets
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from nacl.exceptions import CryptoError
from nacl.public import PrivateKey, SealedBox

from cloud_sync.errors import CloudSyncError

log = logging.getLogger(__name__)

PRIVATE_KEY_FILE = "vault.key"
PUBLIC_KEY_FILE = "vault.pub"
DATA_KEY_FILE = "vault-data.key"
OPENING_PREFIX = "x25519:"
DATA_PREFIX = "aes256gcm:"
NONCE_BYTES = 12
_KEY_ID_LABEL = b"kiosk-central vault data key id v1"


class VaultKeyError(CloudSyncError, ValueError):
    """A key file is missing, unreadable or malformed, or does not hold the key the data needs."""


class OpenError(CloudSyncError, ValueError):
    """A sealed box could not be opened; ``reason`` is a short machine-readable word (never any content)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def vault_key_id(public_key: bytes) -> str:
    """The id nodes put in ``vault_key``: the first 16 hex digits of SHA-256 of the public key."""
    return hashlib.sha256(public_key).hexdigest()[:16]


def data_key_id(key: bytes) -> str:
    """A data key's id: an HMAC under the key itself (identifies it, reveals nothing about it)."""
    return hmac.new(key, _KEY_ID_LABEL, hashlib.sha256).hexdigest()[:16]


def _key_lines(text: str) -> Iterable[tuple[int, str]]:
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if line and not line.startswith("#"):
            yield number, line


def _decode_key(line: str, prefix: str, where: str) -> bytes:
    if not line.startswith(prefix):
        raise VaultKeyError(f"{where}: expected '{prefix}<base64 of 32 bytes>'")
    try:
        raw = base64.b64decode(line[len(prefix) :], validate=True)
    except (binascii.Error, ValueError):
        raise VaultKeyError(f"{where}: the key is not valid base64") from None
    if len(raw) != 32:
        raise VaultKeyError(f"{where}: a key has 32 bytes, this one {len(raw)}")
    return raw


def _read_secret_file(path: Path, what: str) -> str:
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        raise VaultKeyError(f"{what} {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise VaultKeyError(f"{what} {path} cannot be read ({exc.__class__.__name__})") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("%s %s is readable by other users; chmod 600 it", what, path)
    return text


class OpeningKeys:
    """The vault's X25519 private keys by ``vault_key`` id: opens what the nodes sealed."""

    def __init__(self, keys: Sequence[PrivateKey]) -> None:
        if not keys:
            raise VaultKeyError("no vault private key given")
        self._boxes = {vault_key_id(bytes(k.public_key)): SealedBox(k) for k in keys}
        self.public_keys = {vault_key_id(bytes(k.public_key)): bytes(k.public_key) for k in keys}

    def __repr__(self) -> str:
        return f"OpeningKeys(ids={sorted(self._boxes)}, <private keys hidden>)"

    @classmethod
    def parse(cls, text: str, source: str = "vault private key") -> OpeningKeys:
        """Keys from ``x25519:<base64>`` lines (``#`` comments and blank lines ignored)."""
        keys = [
            PrivateKey(_decode_key(line, OPENING_PREFIX, f"{source}, line {number}"))
            for number, line in _key_lines(text)
        ]
        if not keys:
            raise VaultKeyError(f"{source}: holds no key")
        return cls(keys)

    @classmethod
    def load(cls, path: Path) -> OpeningKeys:
        """Keys from a file (``kiosk-central vault keygen`` writes one)."""
        return cls.parse(_read_secret_file(path, "vault private key file"), str(path))

    @property
    def ids(self) -> list[str]:
        """The ``vault_key`` ids this holder can open."""
        return sorted(self._boxes)

    def open(self, vault_key: str, sealed: str, max_bytes: int = 8192) -> bytes:
        """The plaintext of ``sealed`` (URL-safe base64 without padding); ``OpenError`` says why not."""
        box = self._boxes.get(vault_key)
        if box is None:
            raise OpenError(
                "unknown-vault-key", f"sealed to key {vault_key!r}, which this vault does not hold"
            )
        if len(sealed) > 2 * max_bytes:
            raise OpenError("oversized", f"{len(sealed)} characters sealed")
        if len(sealed) % 4 == 1:
            raise OpenError("malformed-sealed", "not URL-safe base64 of a sealed box")
        try:
            raw = base64.urlsafe_b64decode(sealed + "=" * (-len(sealed) % 4))
        except (binascii.Error, ValueError):
            raise OpenError("malformed-sealed", "not URL-safe base64 of a sealed box") from None
        if base64.urlsafe_b64encode(raw).rstrip(b"=").decode() != sealed:
            raise OpenError("malformed-sealed", "not canonical URL-safe base64")
        try:
            plain: bytes = box.decrypt(raw)
        except (CryptoError, ValueError, TypeError):
            raise OpenError("undecryptable", "the sealed box does not open with this key") from None
        if len(plain) > max_bytes:
            raise OpenError("oversized", f"{len(plain)} bytes sealed, at most {max_bytes}")
        return plain


@dataclass(frozen=True, slots=True)
class DataKey:
    """One AES-256-GCM key and its id."""

    key_id: str
    key: bytes

    def __repr__(self) -> str:
        return f"DataKey({self.key_id}, <key hidden>)"


class DataKeyring:
    """The data keys: the first encrypts, all decrypt. Re-read from its file when asked for an unknown id
    (another host rotated and the file was redistributed), never from the environment."""

    def __init__(self, keys: Sequence[DataKey], source: Path | None = None) -> None:
        if not keys:
            raise VaultKeyError("no data key given")
        self._keys = list(keys)
        self._by_id = {k.key_id: k for k in keys}
        self.source = source

    def __repr__(self) -> str:
        return f"DataKeyring(ids={self.ids}, <keys hidden>)"

    @classmethod
    def parse(cls, text: str, source: str = "data key", path: Path | None = None) -> DataKeyring:
        """Keys from ``aes256gcm:<base64>`` lines (``#`` comments and blank lines ignored)."""
        keys = []
        for number, line in _key_lines(text):
            raw = _decode_key(line, DATA_PREFIX, f"{source}, key {number}")
            keys.append(DataKey(data_key_id(raw), raw))
        if not keys:
            raise VaultKeyError(f"{source}: holds no key")
        return cls(keys, path)

    @classmethod
    def from_env(cls, value: str, name: str) -> DataKeyring:
        """Keys from an environment variable: ``aes256gcm:<base64>`` separated by commas or white space."""
        return cls.parse("\n".join(value.replace(",", " ").split()), name)

    @classmethod
    def load(cls, path: Path) -> DataKeyring:
        """Keys from a file (``kiosk-central vault keygen`` writes one, ``vault rotate`` rewrites it)."""
        return cls.parse(_read_secret_file(path, "vault data key file"), str(path), path)

    @property
    def ids(self) -> list[str]:
        """Key ids, the encrypting one first."""
        return [k.key_id for k in self._keys]

    @property
    def current(self) -> DataKey:
        """The key new records are encrypted under (the file's first)."""
        return self._keys[0]

    def get(self, key_id: str) -> DataKey:
        """The key with ``key_id``; re-reads the file once if it is not known yet."""
        key = self._by_id.get(key_id)
        if key is None and self.source is not None:
            try:
                fresh = DataKeyring.load(self.source)
            except VaultKeyError as exc:
                log.error("re-reading the data key file failed: %s", exc)
            else:
                self._keys, self._by_id = fresh._keys, fresh._by_id
                key = self._by_id.get(key_id)
        if key is None:
            raise VaultKeyError(
                f"data key {key_id} is not in the key ring ({', '.join(self.ids)}): give the vault the key "
                f"file that holds it"
            )
        return key

    def text(self) -> str:
        """The key file's content (for ``vault rotate``)."""
        return "".join(f"{DATA_PREFIX}{base64.b64encode(k.key).decode()}\n" for k in self._keys)


def new_data_key() -> DataKey:
    """A fresh random AES-256 key."""
    raw = secrets.token_bytes(32)
    return DataKey(data_key_id(raw), raw)


def encrypt(key: DataKey, plaintext: bytes, associated: bytes) -> tuple[bytes, bytes]:
    """``(nonce, ciphertext)``: AES-256-GCM with a random 96-bit nonce, bound to ``associated``."""
    nonce = secrets.token_bytes(NONCE_BYTES)
    return nonce, AESGCM(key.key).encrypt(nonce, plaintext, associated)


def decrypt(key: DataKey, nonce: bytes, ciphertext: bytes, associated: bytes) -> bytes:
    """The plaintext; ``VaultKeyError`` if the tag does not verify (wrong key, tampered or moved record)."""
    try:
        return AESGCM(key.key).decrypt(nonce, ciphertext, associated)
    except InvalidTag:
        raise VaultKeyError(
            f"a record encrypted under data key {key.key_id} does not verify (tampered, or copied from "
            f"another member)"
        ) from None


# -- files ----------------------------------------------------------------------------------------------


def write_secret(path: Path, text: str, *, replace: bool = False) -> None:
    """Write ``text`` to ``path`` with mode 0600: created exclusively, or atomically replaced (rename)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    target = path if not replace else path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if replace:
            target.replace(path)
    except BaseException:
        if replace:
            target.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


@dataclass(frozen=True, slots=True)
class GeneratedKeys:
    """What ``keygen`` wrote: the files and the line for the nodes' ``[identity]`` section."""

    private_key_file: Path
    public_key_file: Path
    data_key_file: Path | None
    vault_key: str
    node_line: str


def keygen(out: Path) -> GeneratedKeys:
    """Write a new X25519 key pair (and a data key if ``out`` has none) into ``out``.

    Refuses (``VaultKeyError``) if ``out`` already holds a private key: overwriting it would make every
    sign-up sealed to it unreadable forever.
    """
    private_path, public_path, data_path = out / PRIVATE_KEY_FILE, out / PUBLIC_KEY_FILE, out / DATA_KEY_FILE
    if private_path.exists() or private_path.is_symlink():
        raise VaultKeyError(f"{private_path} already exists; refusing to overwrite a vault key")
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    private = PrivateKey.generate()
    public = bytes(private.public_key)
    public_text = OPENING_PREFIX + base64.b64encode(public).decode()
    try:
        write_secret(private_path, OPENING_PREFIX + base64.b64encode(bytes(private)).decode() + "\n")
    except FileExistsError:
        raise VaultKeyError(f"{private_path} already exists; refusing to overwrite a vault key") from None
    public_path.unlink(missing_ok=True)
    public_path.write_text(public_text + "\n", encoding="ascii")
    wrote_data: Path | None = None
    if not data_path.exists():
        write_secret(data_path, DataKeyring([new_data_key()]).text())
        wrote_data = data_path
    return GeneratedKeys(
        private_key_file=private_path,
        public_key_file=public_path,
        data_key_file=wrote_data,
        vault_key=vault_key_id(public),
        node_line=f'vault_public_key = "{public_text}"',
    )
