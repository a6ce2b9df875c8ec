"""The PII vault: the only place where a member's name and contact are readable (DESIGN.md, Privacy).

Why a separate database: the ledger is read by reports, dashboards and every worker; the vault is read by
the privacy officer's tools and by marketing exports only, so it gets its own URL, credentials, backups and
Alembic history (``vault_migrations``), and the two are linked by nothing but the member code (people rows
also carry the member token, the pseudonym the ledger uses, so an export can find the member's sales).

What it does:

* **absorb** the sign-ups the ingest committed (``Ingestor(on_commit=vault.absorb)``): open the sealed box
  with the vault's X25519 key, check the content strictly, and store it AES-256-GCM encrypted under the
  current data key, bound to the member code (associated data). Idempotent per event id; a box that does not
  open or holds something unexpected is recorded as failed with a reason (never its content) and never
  stops the batch. ``catch_up`` does the same from the ledger's events table for whatever ``absorb`` missed
  (the vault database was down) and re-applies erasures after either database was restored from a backup.
* **consents**: every consent statement is kept as history; the current one per channel is the latest by the
  time the customer gave it (not by arrival), so a later change always wins, even when it arrives first.
* **export** everything on a member (vault, ledger, opened sealed parts of their events) as JSON.
* **erase** a member: delete the vault row and consent history, scrub the sealed parts of their events (and
  dead letters) from the ledger so the vault key can no longer open any copy there, keep sales and points
  under the pseudonymous token, and keep an erasure log with no personal data so the erasure is re-applied
  to late events and restores. Telling the nodes is ``cloud_sync.central.vault_notify``.
* **rotate** the data key: every record is re-encrypted under a new key, then the old key is dropped.

Nothing here logs personal data or key material; reasons and counts only.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import msgspec
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    DateTime,
    Engine,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    delete,
    event,
    func,
    or_,
    select,
    update,
)

from cloud_sync.central import schema as ledger_schema
from cloud_sync.central.db import IMMEDIATE, make_engine, run_migrations, upsert
from cloud_sync.central.vault_keys import (
    DATA_KEY_FILE,
    PRIVATE_KEY_FILE,
    DataKey,
    DataKeyring,
    OpenError,
    OpeningKeys,
    VaultKeyError,
    decrypt,
    encrypt,
    new_data_key,
    write_secret,
)
from cloud_sync.codes import member_code_is_valid, normalize_member_code
from cloud_sync.errors import CloudSyncError
from cloud_sync.messages import Consent, SignupBody

log = logging.getLogger(__name__)

VAULT_MIGRATIONS = Path(__file__).with_name("vault_migrations")
#: environment fallbacks while ``[vault]`` has no key settings (outside the KIOSK_CENTRAL_ prefix on purpose:
#: the config loader refuses unknown KIOSK_CENTRAL_* names)
ENV_PRIVATE_KEY_FILE = "KIOSK_VAULT_PRIVATE_KEY_FILE"
ENV_DATA_KEY_FILE = "KIOSK_VAULT_DATA_KEY_FILE"
ENV_DATA_KEY = "KIOSK_VAULT_DATA_KEY"

#: event types whose sealed parts name a person, and those parts
SEALED_TYPES = ("signup", "reservation", "survey", "warranty")
SEALED_FIELDS = ("sealed", "sealed_comment")
#: event types the vault absorbs (a future ``consent`` change event carries ``member_token`` + ``consent``)
ABSORBED_TYPES = ("signup", "consent")
CHANNELS = ("email", "sms")
MAX_PLAINTEXT = 2048
_PAGE = 500

Status = Literal["stored", "duplicate", "failed", "erased"]

# -- the vault's own tables ---------------------------------------------------------------------------------

metadata = MetaData()
_Code = String(16)
_Token = String(64)
_EventId = String(36)
_Ident = String(64)
_When = DateTime(timezone=True)

#: One row per member: the personal data, encrypted; the member code is the only link to the rest.
people = Table(
    "people",
    metadata,
    Column("member_code", _Code, primary_key=True),
    Column("member_token", _Token, nullable=False, unique=True),
    Column("data_key_id", String(16), nullable=False),
    Column("nonce", LargeBinary, nullable=False),
    Column("ciphertext", LargeBinary, nullable=False),
    Column("event_id", _EventId, nullable=False),
    Column("store", _Ident, nullable=False),
    Column("node", _Ident, nullable=False),
    Column("created_at", _When, nullable=False),
    Column("updated_at", _When, nullable=False),
)
Index("ix_people_data_key", people.c.data_key_id)

#: Consent history: one row per statement and channel; the current consent is the latest ``given_at``.
consents = Table(
    "consents",
    metadata,
    Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True),
    Column("member_token", _Token, nullable=False),
    Column("channel", String(16), nullable=False),
    Column("granted", Boolean, nullable=False),
    Column("given_at", _When, nullable=False),
    Column("event_id", _EventId, nullable=False),
    Column("notice_version", String(64), nullable=False),
    Column("recorded_at", _When, nullable=False),
    UniqueConstraint("event_id", "channel", name="uq_consents_event_channel"),
)
Index("ix_consents_member_channel", consents.c.member_token, consents.c.channel, consents.c.given_at)

#: Every event the vault has looked at, so absorbing is idempotent; failures keep a reason, never content.
absorbed = Table(
    "absorbed",
    metadata,
    Column("event_id", _EventId, primary_key=True),
    Column("event_type", String(32), nullable=False),
    Column("status", String(16), nullable=False),
    Column("reason", String(32), nullable=True),
    Column("detail", String(200), nullable=True),
    Column("absorbed_at", _When, nullable=False),
)
Index("ix_absorbed_status", absorbed.c.status)

#: The erasure log: who (pseudonymously) was erased when; no name, no contact. It makes re-runs, late
#: events and database restores honour the erasure.
erasures = Table(
    "erasures",
    metadata,
    Column("member_code", _Code, primary_key=True),
    Column("member_token", _Token, nullable=False, unique=True),
    Column("erased_at", _When, nullable=False),
)

#: Which node was told of which erasure, and the last outcome (``delivered`` or why not).
erasure_notices = Table(
    "erasure_notices",
    metadata,
    Column("member_code", _Code, primary_key=True),
    Column("store", _Ident, primary_key=True),
    Column("node", _Ident, primary_key=True),
    Column("status", String(32), nullable=False),
    Column("attempted_at", _When, nullable=False),
    Column("delivered_at", _When, nullable=True),
)

#: One row: the data key new records are encrypted under. Writers lock it shared, a rotation exclusively,
#: so no record is written under a key that is being retired.
vault_state = Table(
    "vault_state",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("data_key_id", String(16), nullable=False),
    Column("updated_at", _When, nullable=False),
)


# -- errors and results -------------------------------------------------------------------------------------


class VaultError(CloudSyncError):
    """A privacy operation could not be done; the message says why (without personal data)."""


class UnknownMember(VaultError, LookupError):  # noqa: N818 - reads as the condition
    """No member with this code in the vault (nor in the erasure log)."""


class MemberErased(VaultError):  # noqa: N818 - reads as the condition
    """The member was erased: nothing personal is left to export."""

    def __init__(self, member_code: str, erased_at: datetime) -> None:
        super().__init__(f"member {member_code} was erased on {_iso(erased_at)}; no personal data is kept")
        self.erased_at = erased_at


@dataclass
class AbsorbReport:
    """What ``absorb`` / ``catch_up`` did, by outcome (and failure reason)."""

    stored: int = 0
    duplicate: int = 0
    failed: dict[str, int] = field(default_factory=dict)
    erased: int = 0
    consents: int = 0
    scrubbed: int = 0
    reconciled: int = 0

    def add(self, other: AbsorbReport) -> None:
        """Sum ``other`` into this report."""
        self.stored += other.stored
        self.duplicate += other.duplicate
        self.erased += other.erased
        self.consents += other.consents
        self.scrubbed += other.scrubbed
        self.reconciled += other.reconciled
        for reason, n in other.failed.items():
            self.failed[reason] = self.failed.get(reason, 0) + n

    def as_dict(self) -> dict[str, Any]:
        """For ``vault sync``'s JSON line."""
        return {
            "stored": self.stored,
            "duplicate": self.duplicate,
            "failed": dict(sorted(self.failed.items())),
            "erased": self.erased,
            "consents": self.consents,
            "ledger_events_scrubbed": self.scrubbed,
            "erasures_reapplied": self.reconciled,
        }


@dataclass(frozen=True, slots=True)
class Erasure:
    """What ``erase`` did; ``tokens`` are what the nodes must forget (member token first, then cards)."""

    member_code: str
    member_token: str
    tokens: list[str]
    erased_at: datetime
    already_erased: bool
    events_scrubbed: int
    dead_letters_scrubbed: int


@dataclass(frozen=True, slots=True)
class Rotation:
    """What ``rotate`` did."""

    data_key_id: str
    re_encrypted: int
    retired: list[str]


_Outcome = tuple[Status, str | None, str | None]  # status, reason, detail (never any content)


@dataclass(frozen=True, slots=True)
class _Pass:
    """One absorb transaction's context."""

    conn: Connection
    key: DataKey
    erased: set[str]
    now: datetime
    report: AbsorbReport


class _Failed(Exception):  # noqa: N818 - internal control flow, never escapes
    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


# -- small helpers ------------------------------------------------------------------------------------------


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return _utc(value).isoformat().replace("+00:00", "Z")


def _parse_ts(value: Any) -> datetime:
    if isinstance(value, datetime):
        return _utc(value)
    return _utc(datetime.fromisoformat(str(value).replace("Z", "+00:00")))


def _event_type(doc: Mapping[str, Any]) -> str:
    return str(doc.get("schema", "")).rpartition(".")[2]


def _aad(member_code: str) -> bytes:
    return b"kiosk-central/vault/people/v1\x00" + member_code.encode("ascii")


def _chunks(items: Sequence[str], size: int = _PAGE) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# Content checks: the same rules as the kiosk (edge.signup), re-applied here because a node can be stolen
# or buggy and a sealed box is only as trustworthy as whoever sealed it.
_NAME_OK = re.compile(r"^[^\W\d_](?:[^\W\d_]|[ '\-.])*\Z")
_EMAIL_OK = re.compile(r"^[^@\s<>\"'`\x00-\x1f\x7f]{1,64}@[^@\s<>\"'`\x00-\x1f\x7f]{1,253}\Z")
_PHONE_OK = re.compile(r"^\+[1-9][0-9]{5,14}\Z")
_SIGNUP_FIELDS = frozenset({"first_name", "member_code", "email", "phone"})
_PERSON_FIELDS = ("first_name", "email", "phone")


def _clean_name(value: Any, limit: int = 40) -> str:
    if not isinstance(value, str):
        raise _Failed("invalid-content", "name is not text")
    name = unicodedata.normalize("NFC", value)
    if not name or len(name) > limit or not _NAME_OK.match(name):
        raise _Failed("invalid-content", "name breaks the name rules")
    return name


def _check_contact(record: dict[str, Any]) -> None:
    email, phone = record.get("email"), record.get("phone")
    if email is not None and (not isinstance(email, str) or len(email) > 254 or not _EMAIL_OK.match(email)):
        raise _Failed("invalid-content", "e-mail address malformed")
    if phone is not None and (not isinstance(phone, str) or not _PHONE_OK.match(phone)):
        raise _Failed("invalid-content", "phone number is not E.164")
    if email is None and phone is None:
        raise _Failed("invalid-content", "no contact")


def _parse_signup(plain: bytes) -> tuple[str, dict[str, str]]:
    """The member code and the personal record (first name, e-mail, phone) from a sign-up's sealed JSON."""
    try:
        data = json.loads(plain.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise _Failed("not-json", "sealed content is not UTF-8 JSON") from None
    if not isinstance(data, dict):
        raise _Failed("not-json", "sealed content is not a JSON object")
    extra = set(data) - _SIGNUP_FIELDS
    if extra:
        raise _Failed("unexpected-fields", f"{len(extra)} unexpected field(s)")
    code = data.get("member_code")
    if not isinstance(code, str) or not member_code_is_valid(code):
        raise _Failed("invalid-content", "member code missing or invalid")
    record = {"first_name": _clean_name(data.get("first_name"))}
    for key in ("email", "phone"):
        if key in data:
            record[key] = data[key]
    _check_contact(record)
    return code, record


def _open_json(opening: OpeningKeys, vault_key: str, sealed: str) -> dict[str, Any]:
    """A sealed part of a reservation/survey/warranty, opened for an export (strings only)."""
    try:
        plain = opening.open(vault_key, sealed, MAX_PLAINTEXT * 4)
        data = json.loads(plain.decode("utf-8"))
    except OpenError as exc:
        return {"unreadable": exc.reason}
    except (UnicodeDecodeError, ValueError):
        return {"unreadable": "not-json"}
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        return {"unreadable": "unexpected-content"}
    return data


# -- engines and migrations ---------------------------------------------------------------------------------


def _sqlite_secure_delete(dbapi_conn: Any, _record: Any) -> None:
    # Zero freed bytes, so an erased record's ciphertext does not linger in free pages of the file.
    dbapi_conn.execute("PRAGMA secure_delete=ON")


def make_vault_engine(url: str) -> Engine:
    """An engine for the vault database: ``make_engine``'s, with secure delete on SQLite."""
    engine = make_engine(url, pool_size=2)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_secure_delete)
    return engine


def migrate_vault(engine: Engine, revision: str = "head") -> None:
    """Bring the vault's schema to ``revision`` (its own Alembic history and version table)."""
    run_migrations(engine, VAULT_MIGRATIONS, lock_id=7277350144, revision=revision, label="vault ")


def _sqlite_checkpoint(engine: Engine) -> None:
    """Fold the WAL into the file and truncate it, so old page images (with erased bytes) leave the disk."""
    if engine.dialect.name != "sqlite":
        return
    raw = engine.raw_connection()
    try:
        driver = raw.driver_connection
        assert driver is not None
        busy, _log, _done = driver.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy:
            log.warning(
                "%s: another connection holds the WAL; erased bytes stay in it until the next checkpoint",
                engine.url.database,
            )
    finally:
        raw.close()


# -- key resolution -----------------------------------------------------------------------------------------


def resolve_key_files(
    settings: Any,
    *,
    private_key_file: Path | None = None,
    data_key_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> tuple[Path | None, Path | None, str | None]:
    """Where the keys are: ``(private key file, data key file, inline data key)``; None where not found.

    Order: the explicit argument (a CLI option), then ``[vault] private_key_file`` / ``data_key_file`` once
    the settings have them, then ``KIOSK_VAULT_PRIVATE_KEY_FILE`` / ``KIOSK_VAULT_DATA_KEY_FILE``, then (data
    keys only) ``KIOSK_VAULT_DATA_KEY``, then ``vault.key`` / ``vault-data.key`` in the data directory if they
    exist (the embedded demo).
    """
    env = os.environ if environ is None else environ
    section = getattr(settings, "vault", None)
    data_dir = Path(settings.data.dir)

    def configured(explicit: Path | None, setting: str, env_name: str) -> Path | None:
        if explicit is not None:
            return explicit
        if value := getattr(section, setting, None):
            return Path(value)
        return Path(env[env_name]) if env.get(env_name) else None

    def default(name: str) -> Path | None:
        return data_dir / name if (data_dir / name).exists() else None

    private = configured(private_key_file, "private_key_file", ENV_PRIVATE_KEY_FILE) or default(
        PRIVATE_KEY_FILE
    )
    data = configured(data_key_file, "data_key_file", ENV_DATA_KEY_FILE)
    if data is not None:
        return private, data, None
    if env.get(ENV_DATA_KEY):
        return private, None, env[ENV_DATA_KEY]
    return private, default(DATA_KEY_FILE), None


def load_keys(
    private_file: Path | None, data_file: Path | None, inline_data_key: str | None
) -> tuple[OpeningKeys, DataKeyring]:
    """Read both kinds of key; ``VaultKeyError`` says which is missing or wrong (never its content)."""
    if private_file is None:
        raise VaultKeyError(
            f"no vault private key: give --private-key-file or set {ENV_PRIVATE_KEY_FILE} "
            f"('kiosk-central vault keygen' writes one)"
        )
    opening = OpeningKeys.load(private_file)
    if data_file is not None:
        ring = DataKeyring.load(data_file)
    elif inline_data_key:
        ring = DataKeyring.from_env(inline_data_key, ENV_DATA_KEY)
    else:
        raise VaultKeyError(
            f"no vault data key: give --data-key-file, or set {ENV_DATA_KEY_FILE} or {ENV_DATA_KEY} "
            f"('kiosk-central vault keygen' writes one)"
        )
    return opening, ring


def open_vault(
    settings: Any,
    ledger: Engine,
    *,
    url: str | None = None,
    private_key_file: Path | None = None,
    data_key_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> PiiVault:
    """The vault for ``settings`` (keys resolved by ``resolve_key_files``), migrated and key-checked."""
    private, data, inline = resolve_key_files(
        settings, private_key_file=private_key_file, data_key_file=data_key_file, environ=environ
    )
    opening, ring = load_keys(private, data, inline)
    return PiiVault.connect(url or settings.vault_url, ledger, opening, ring)


def open_vault_if_configured(settings: Any, ledger: Engine) -> PiiVault | None:
    """For ``kiosk-central run``: the vault if its private key is found, else None (sign-ups then wait,
    sealed, in the ledger until ``kiosk-central vault sync``). A key that is found but wrong is an error."""
    private, _data, _inline = resolve_key_files(settings)
    if private is None:
        log.warning(
            "no PII vault key configured: sign-ups stay sealed in the ledger until 'kiosk-central vault sync'"
        )
        return None
    return open_vault(settings, ledger)


# -- the vault ----------------------------------------------------------------------------------------------


class PiiVault:
    """The vault database plus the keys to open sealed data and to encrypt it at rest (see the module doc).

    ``ledger`` is the ledger database's engine: exports read it, erasures scrub it. Thread-safe (each call
    uses its own connections); ``absorb`` may run in the ingest worker while an operator exports.
    """

    def __init__(self, engine: Engine, ledger: Engine, opening: OpeningKeys, keyring: DataKeyring) -> None:
        self.engine = engine
        # writes take SQLite's write lock up front: reading the current data key and writing under it
        # cannot interleave with a rotation (PostgreSQL locks the state row instead)
        self._writer = engine.execution_options(**{IMMEDIATE: True})
        self.ledger = ledger
        self._opening = opening
        self._keyring = keyring

    def __repr__(self) -> str:
        return f"PiiVault({self.engine.url.render_as_string(hide_password=True)}, <keys hidden>)"

    @classmethod
    def connect(cls, url: str, ledger: Engine, opening: OpeningKeys, keyring: DataKeyring) -> PiiVault:
        """Open the vault at ``url``: refuse the ledger's own URL, migrate, check the data keys."""
        if url == ledger.url.render_as_string(hide_password=False):
            raise VaultError(
                "the vault must not share the ledger database: set vault.url to its own database or schema"
            )
        engine = make_vault_engine(url)
        try:
            migrate_vault(engine)
            vault = cls(engine, ledger, opening, keyring)
            vault.check_keys()
        except BaseException:
            engine.dispose()
            raise
        return vault

    def close(self) -> None:
        """Release the vault's connections (not the ledger's: the caller owns that engine)."""
        self.engine.dispose()

    # -- keys ----------------------------------------------------------------------------------------------
    def check_keys(self) -> None:
        """Make sure every data key the records use (and the current one) is in the key ring.

        A vault started with the wrong data key file fails here, with the ids it needs, instead of
        failing on the first record it reads.
        """
        with self._writer.begin() as conn:
            current = conn.execute(select(vault_state.c.data_key_id).where(vault_state.c.id == 1)).scalar()
            if current is None:  # a new vault: the key ring's first key encrypts
                conn.execute(
                    upsert(conn, vault_state).on_conflict_do_nothing(),
                    {"id": 1, "data_key_id": self._keyring.current.key_id, "updated_at": datetime.now(UTC)},
                )
                current = conn.execute(
                    select(vault_state.c.data_key_id).where(vault_state.c.id == 1)
                ).scalar_one()
            used = set(conn.execute(select(people.c.data_key_id).distinct()).scalars()) | {current}
        missing = []
        for key_id in sorted(used):
            try:
                self._keyring.get(key_id)
            except VaultKeyError:
                missing.append(key_id)
        if missing:
            raise VaultKeyError(
                f"the vault's records are encrypted under data key(s) {', '.join(missing)}, which the given "
                f"key ring ({', '.join(self._keyring.ids)}) does not hold: wrong data key file?"
            )

    def _write_key(self, conn: Connection) -> DataKey:
        """The key to encrypt under now, holding the state row so a rotation waits for this transaction."""
        stmt = select(vault_state.c.data_key_id).where(vault_state.c.id == 1)
        if conn.dialect.name == "postgresql":
            stmt = stmt.with_for_update(read=True)
        key_id = conn.execute(stmt).scalar_one()
        return self._keyring.get(key_id)

    def _decrypt_row(self, row: Any) -> dict[str, Any]:
        key = self._keyring.get(row.data_key_id)
        result: dict[str, Any] = json.loads(decrypt(key, row.nonce, row.ciphertext, _aad(row.member_code)))
        return result

    def _encrypt_record(self, key: DataKey, member_code: str, record: Mapping[str, Any]) -> dict[str, Any]:
        plain = json.dumps(record, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode()
        nonce, ciphertext = encrypt(key, plain, _aad(member_code))
        return {"data_key_id": key.key_id, "nonce": nonce, "ciphertext": ciphertext}

    # -- absorbing -------------------------------------------------------------------------------------------
    def absorb(self, docs: Sequence[Mapping[str, Any]], *, retry_failed: bool = False) -> AbsorbReport:
        """Take in committed events (envelope dicts): sign-ups and consent statements; other sealed events
        of an erased member are scrubbed from the ledger at once. Idempotent; never raises for bad content
        (recorded as failed), only for database errors (the caller catches up later)."""
        report = AbsorbReport()
        wanted: list[Mapping[str, Any]] = []
        sealed_docs: list[Mapping[str, Any]] = []
        tokens: set[str] = set()
        for doc in docs:
            body = doc.get("body")
            if not isinstance(body, Mapping) or not isinstance(doc.get("id"), str):
                continue
            etype = _event_type(doc)
            token = body.get("member_token")
            if isinstance(token, str):
                tokens.add(token)
            if etype == "signup" or (etype in ABSORBED_TYPES and "consent" in body):
                wanted.append(doc)
            elif etype in SEALED_TYPES and isinstance(token, str) and any(f in body for f in SEALED_FIELDS):
                sealed_docs.append(doc)
        if not wanted and not sealed_docs:
            return report
        now = datetime.now(UTC)
        to_scrub: list[str] = []
        with self._writer.begin() as conn:
            erased = self._erased_tokens(conn, sorted(tokens))
            to_scrub.extend(str(d["id"]) for d in sealed_docs if d["body"]["member_token"] in erased)
            if wanted:
                key = self._write_key(conn)
                ids = [str(d["id"]) for d in wanted]
                prior = dict(
                    conn.execute(
                        select(absorbed.c.event_id, absorbed.c.status).where(absorbed.c.event_id.in_(ids))
                    ).all()
                )
                for doc in wanted:
                    status = prior.get(str(doc["id"]))
                    if status is not None and not (retry_failed and status == "failed"):
                        report.duplicate += 1
                        continue
                    step = _Pass(conn, key, erased, now, report)
                    outcome, reason, detail = self._absorb_one(step, doc)
                    if outcome == "erased":
                        to_scrub.append(str(doc["id"]))
                    self._mark(step, doc, (outcome, reason, detail), retry=status is not None)
                    if outcome == "failed":
                        assert reason is not None
                        report.failed[reason] = report.failed.get(reason, 0) + 1
                        log.warning("vault: event %s not absorbed: %s", doc["id"], reason)
                    elif outcome == "stored":
                        report.stored += 1
                    elif outcome == "erased":
                        report.erased += 1
                    else:
                        report.duplicate += 1
        if to_scrub:
            with self.ledger.begin() as lconn:
                report.scrubbed += self._scrub_events(lconn, ledger_schema.events.c.id.in_(to_scrub))
        return report

    def on_commit(self, docs: Sequence[Mapping[str, Any]]) -> None:
        """``absorb`` for the ingest worker's post-commit consumers: never raises, so the consumers after
        it still run; whatever failed here (the vault database down) is absorbed by ``catch_up`` later."""
        try:
            self.absorb(docs)
        except Exception as exc:
            log.error(
                "vault: %d committed event(s) not absorbed now (%s); 'vault sync' catches up",
                len(docs),
                _describe(exc),
            )

    def start_catch_up(self) -> threading.Thread:
        """Run ``catch_up`` once in a daemon thread (at worker start: what the last run missed)."""

        def run() -> None:
            try:
                report = self.catch_up()
            except Exception as exc:
                log.error(
                    "vault: catch-up failed (%s); 'kiosk-central vault sync' retries it", _describe(exc)
                )
            else:
                log.info("vault: caught up with the ledger: %s", report.as_dict())

        thread = threading.Thread(target=run, name="vault-catch-up", daemon=True)
        thread.start()
        return thread

    def display_name(self, member_token: str) -> tuple[str, str] | None:
        """(member code, first name) for the tills' welcome (``MemberService``'s name source); None when
        the vault has no such member or cannot answer now (the till then shows no name)."""
        try:
            with self.engine.connect() as conn:
                row = conn.execute(select(people).where(people.c.member_token == member_token)).first()
            if row is None:
                return None
            return row.member_code, str(self._decrypt_row(row)["first_name"])
        except Exception as exc:
            log.error("vault: no first name for a member lookup (%s)", _describe(exc))
            return None

    def _mark(self, step: _Pass, doc: Mapping[str, Any], outcome: _Outcome, *, retry: bool) -> None:
        conn = step.conn
        status, reason, detail = outcome
        values = {"status": status, "reason": reason, "detail": (detail or None), "absorbed_at": step.now}
        if retry:
            conn.execute(update(absorbed).where(absorbed.c.event_id == str(doc["id"])).values(**values))
        else:
            conn.execute(
                upsert(conn, absorbed).on_conflict_do_nothing(index_elements=["event_id"]),
                {"event_id": str(doc["id"]), "event_type": _event_type(doc)[:32], **values},
            )

    def _absorb_one(self, step: _Pass, doc: Mapping[str, Any]) -> _Outcome:
        conn = step.conn
        raw = dict(doc["body"])
        if _event_type(doc) != "signup":
            return self._absorb_consent(step, doc, raw)
        if raw.get("erased") is True and "sealed" not in raw:
            return "erased", "scrubbed-in-ledger", None
        try:
            body = msgspec.convert(raw, SignupBody, strict=True)
        except msgspec.ValidationError as exc:
            return "failed", "schema", str(exc)[:200]
        if body.member_token in step.erased:
            return "erased", None, None
        try:
            given_at = _parse_ts(doc["ts"])
        except (KeyError, TypeError, ValueError):
            return "failed", "schema", "no valid ts"
        self._record_consent(step, str(doc["id"]), body.member_token, body.consent, given_at)
        try:
            plain = self._opening.open(body.vault_key, body.sealed, MAX_PLAINTEXT)
            code, record = _parse_signup(plain)
        except OpenError as exc:
            return "failed", exc.reason, None
        except _Failed as exc:
            return "failed", exc.reason, exc.detail
        if conn.execute(select(erasures.c.member_code).where(erasures.c.member_code == code)).first():
            return "erased", None, None
        existing = conn.execute(
            select(people.c.member_code, people.c.member_token).where(
                (people.c.member_code == code) | (people.c.member_token == body.member_token)
            )
        ).all()
        if existing:
            if all((c, t) == (code, body.member_token) for c, t in existing):
                return "duplicate", None, None
            return "failed", "member-code-conflict", "code or token already belongs to another member"
        record["language"] = body.language
        conn.execute(
            upsert(conn, people).on_conflict_do_nothing(),
            {
                "member_code": code,
                "member_token": body.member_token,
                "event_id": str(doc["id"]),
                "store": str(doc.get("store", ""))[:64],
                "node": str(doc.get("node", ""))[:64],
                "created_at": given_at,
                "updated_at": step.now,
                **self._encrypt_record(step.key, code, record),
            },
        )
        return "stored", None, None

    def _absorb_consent(self, step: _Pass, doc: Mapping[str, Any], raw: dict[str, Any]) -> _Outcome:
        """A later consent statement (a future ``consent`` event: ``member_token`` and ``consent``)."""
        token = raw.get("member_token")
        if not isinstance(token, str) or not re.fullmatch(r"[0-9a-f]{64}", token):
            return "failed", "schema", "member_token missing or malformed"
        if token in step.erased:
            return "erased", None, None
        try:
            consent = msgspec.convert(raw.get("consent"), Consent, strict=True)
            given_at = _parse_ts(doc["ts"])
        except (msgspec.ValidationError, KeyError, TypeError, ValueError) as exc:
            return "failed", "schema", str(exc)[:200]
        self._record_consent(step, str(doc["id"]), token, consent, given_at)
        return "stored", None, None

    def _record_consent(
        self, step: _Pass, event_id: str, token: str, consent: Consent, given_at: datetime
    ) -> None:
        rows = [
            {
                "member_token": token,
                "channel": channel,
                "granted": bool(getattr(consent, f"marketing_{channel}")),
                "given_at": given_at,
                "event_id": event_id,
                "notice_version": consent.notice_version,
                "recorded_at": step.now,
            }
            for channel in CHANNELS
        ]
        stmt = upsert(step.conn, consents).on_conflict_do_nothing(index_elements=["event_id", "channel"])
        step.report.consents += sum(step.conn.execute(stmt, row).rowcount or 0 for row in rows)

    def _erased_tokens(self, conn: Connection, tokens: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for chunk in _chunks(tokens):
            found.update(
                conn.execute(
                    select(erasures.c.member_token).where(erasures.c.member_token.in_(chunk))
                ).scalars()
            )
        return found

    def catch_up(self, *, retry_failed: bool = False) -> AbsorbReport:
        """Absorb what the ledger has and the vault has not (paged by event id), then re-apply erasures
        recorded in either database to the other (after a restore from backup). Idempotent."""
        report = AbsorbReport()
        events = ledger_schema.events
        last = ""
        while True:
            with self.ledger.connect() as lconn:
                ids = list(
                    lconn.execute(
                        select(events.c.id)
                        .where(events.c.type.in_(ABSORBED_TYPES), events.c.id > last)
                        .order_by(events.c.id)
                        .limit(_PAGE)
                    ).scalars()
                )
            if not ids:
                break
            last = ids[-1]
            with self.engine.connect() as conn:
                statuses = dict(
                    conn.execute(
                        select(absorbed.c.event_id, absorbed.c.status).where(absorbed.c.event_id.in_(ids))
                    ).all()
                )
            todo = [i for i in ids if i not in statuses or (retry_failed and statuses[i] == "failed")]
            if not todo:
                continue
            with self.ledger.connect() as lconn:
                rows = lconn.execute(select(events).where(events.c.id.in_(todo)).order_by(events.c.id)).all()
            docs = [
                {
                    "schema": f"retail.v1.{r.type}",
                    "id": r.id,
                    "store": r.store,
                    "node": r.node,
                    "seq": r.seq,
                    "ts": _iso(r.ts),
                    "body": r.body,
                }
                for r in rows
            ]
            report.add(self.absorb(docs, retry_failed=retry_failed))
        report.reconciled += self._reconcile_erasures(report)
        return report

    def _reconcile_erasures(self, report: AbsorbReport) -> int:
        """Erasures the ledger shows (scrubbed sign-ups) but the vault lost, and the other way round."""
        events = ledger_schema.events
        with self.ledger.connect() as lconn:
            scrubbed_tokens = sorted(
                t
                for t in lconn.execute(
                    select(events.c.body["member_token"].as_string()).where(
                        events.c.type == "signup", events.c.body["erased"].as_boolean().is_(True)
                    )
                ).scalars()
                if t
            )
        reapplied = 0
        now = datetime.now(UTC)
        with self._writer.begin() as conn:
            for chunk in _chunks(scrubbed_tokens):
                rows = conn.execute(
                    select(people.c.member_code, people.c.member_token).where(
                        people.c.member_token.in_(chunk)
                    )
                ).all()
                for code, token in rows:
                    self._erase_in_vault(conn, code, token, now)
                    reapplied += 1
            erased = sorted(conn.execute(select(erasures.c.member_token)).scalars())
        if reapplied:
            log.warning("vault: re-applied %d erasure(s) the ledger records (restored vault?)", reapplied)
        # one pass over the events that still carry a sealed part, matched against the erasure log
        erased_set, last = set(erased), ""
        stale: list[str] = []
        body = events.c.body
        while erased_set:
            with self.ledger.connect() as lconn:
                rows = lconn.execute(
                    select(events.c.id, body["member_token"].as_string())
                    .where(
                        events.c.type.in_(SEALED_TYPES),
                        events.c.id > last,
                        or_(*(body[f].as_string().is_not(None) for f in SEALED_FIELDS)),
                    )
                    .order_by(events.c.id)
                    .limit(_PAGE * 10)
                ).all()
            if not rows:
                break
            last = rows[-1][0]
            stale.extend(event_id for event_id, token in rows if token in erased_set)
        for chunk in _chunks(stale):
            with self.ledger.begin() as lconn:
                report.scrubbed += self._scrub_events(lconn, events.c.id.in_(chunk))
        if stale:
            log.warning("vault: scrubbed %d ledger event(s) of erased members (restored ledger?)", len(stale))
        return reapplied

    # -- reading ---------------------------------------------------------------------------------------------
    def _lookup(self, member_code: str) -> tuple[Any | None, Any | None]:
        with self.engine.connect() as conn:
            person = conn.execute(select(people).where(people.c.member_code == member_code)).first()
            erased = conn.execute(select(erasures).where(erasures.c.member_code == member_code)).first()
        return person, erased

    def _find(self, member_code: str) -> tuple[Any | None, Any | None]:
        """The people row and erasure-log row of ``member_code``; catches up once if neither is known."""
        person, erased = self._lookup(member_code)
        if person is None and erased is None:
            self.catch_up()
            person, erased = self._lookup(member_code)
        if person is None and erased is None:
            raise UnknownMember(f"no member {member_code} in the vault")
        return person, erased

    def member_token(self, member_code: str) -> str:
        """The pseudonymous token the ledger knows ``member_code`` by (UnknownMember / MemberErased)."""
        person, erased = self._find(_canonical(member_code))
        if person is None:
            assert erased is not None
            raise MemberErased(erased.member_code, erased.erased_at)
        return str(person.member_token)

    def personal_data(self, member_code: str) -> dict[str, Any]:
        """The decrypted record (first name, e-mail, phone, language) of ``member_code``."""
        person, erased = self._find(_canonical(member_code))
        if person is None:
            assert erased is not None
            raise MemberErased(erased.member_code, erased.erased_at)
        return self._decrypt_row(person)

    def _consents_of(self, conn: Connection, token: str) -> dict[str, Any]:
        rows = conn.execute(
            select(consents)
            .where(consents.c.member_token == token)
            .order_by(consents.c.given_at, consents.c.id)
        ).all()
        current: dict[str, Any] = {}
        for r in rows:  # ordered by given_at: the last statement per channel wins
            current[r.channel] = {
                "granted": r.granted,
                "given_at": _iso(r.given_at),
                "event_id": r.event_id,
                "notice_version": r.notice_version,
            }
        history = [
            {
                "channel": r.channel,
                "granted": r.granted,
                "given_at": _iso(r.given_at),
                "event_id": r.event_id,
                "notice_version": r.notice_version,
                "recorded_at": _iso(r.recorded_at),
            }
            for r in rows
        ]
        return {"current": current, "history": history}

    def export(self, member_code: str) -> dict[str, Any]:
        """Everything held on ``member_code`` (right of access), as JSON-ready data; see docs/privacy.md."""
        code = _canonical(member_code)
        person, erased = self._find(code)
        if person is None:
            assert erased is not None
            raise MemberErased(code, erased.erased_at)
        token = person.member_token
        with self.engine.connect() as conn:
            consent = self._consents_of(conn, token)
        doc: dict[str, Any] = {
            "format": "kiosk-central.privacy-export.v1",
            "generated_at": _iso(datetime.now(UTC)),
            "member_code": code,
            "member_token": token,
            "personal_data": self._decrypt_row(person),
            "vault_record": {
                "signup_event": person.event_id,
                "store": person.store,
                "node": person.node,
                "created_at": _iso(person.created_at),
                "updated_at": _iso(person.updated_at),
                "data_key_id": person.data_key_id,
            },
            "consents": consent,
        }
        doc.update(self._ledger_part(token))
        return doc

    def _ledger_part(self, token: str) -> dict[str, Any]:
        s = ledger_schema
        with self.ledger.connect() as conn:
            member = conn.execute(select(s.members).where(s.members.c.member_token == token)).first()
            cards = conn.execute(
                select(s.cards).where(s.cards.c.member_token == token).order_by(s.cards.c.token)
            ).all()
            tokens = sorted({token} | {c.token for c in cards})
            sale_rows = conn.execute(
                select(s.sales)
                .where((s.sales.c.account == token) | s.sales.c.customer_token.in_(tokens))
                .order_by(s.sales.c.sold_at, s.sales.c.event_id)
            ).all()
            lines: dict[str, list[dict[str, Any]]] = {}
            for chunk in _chunks([r.event_id for r in sale_rows]):
                for ln in conn.execute(
                    select(s.sale_lines)
                    .where(s.sale_lines.c.event_id.in_(chunk))
                    .order_by(s.sale_lines.c.line_no)
                ):
                    lines.setdefault(ln.event_id, []).append(
                        {
                            "line_no": ln.line_no,
                            "gtin": ln.gtin,
                            "sku": ln.sku,
                            "name": ln.name,
                            "quantity": ln.quantity,
                            "unit_price": ln.unit_price,
                            "category": ln.category,
                        }
                    )
            entries = conn.execute(
                select(s.ledger)
                .where(s.ledger.c.account.in_(tokens))
                .order_by(s.ledger.c.booked_at, s.ledger.c.id)
            ).all()
            linked = conn.execute(
                select(s.events)
                .where(
                    s.events.c.type.in_(SEALED_TYPES), s.events.c.body["member_token"].as_string() == token
                )
                .order_by(s.events.c.ts, s.events.c.id)
            ).all()
            taps = conn.execute(
                select(s.events.c.id, s.events.c.ts, s.events.c.store, s.events.c.node, s.events.c.body)
                .where(s.events.c.type == "identity", s.events.c.body["token"].as_string().in_(tokens))
                .order_by(s.events.c.ts)
            ).all()
        by_type: dict[str, list[dict[str, Any]]] = {t: [] for t in SEALED_TYPES}
        for ev in linked:
            body = dict(ev.body)
            # a sign-up's sealed part is the vault record above; the others are opened here
            opened = {
                name: _open_json(self._opening, str(body.get("vault_key", "")), str(body[name]))
                for name in SEALED_FIELDS
                if name in body and ev.type != "signup"
            }
            entry = {
                "event_id": ev.id,
                "ts": _iso(ev.ts),
                "store": ev.store,
                "node": ev.node,
                "body": {k: v for k, v in body.items() if k not in SEALED_FIELDS},
            }
            if opened:
                entry["personal"] = opened
            by_type[ev.type].append(entry)
        balance = sum(e.points for e in entries if e.account == token)
        return {
            "member": None
            if member is None
            else {
                "joined_at": _iso(member.joined_at),
                "store": member.store,
                "node": member.node,
                "language": member.language,
                "heard_via": member.heard_via,
                "marketing_email": member.marketing_email,
                "marketing_sms": member.marketing_sms,
                "notice_version": member.notice_version,
                "consent_at": _iso(member.consent_at),
                "tier": member.tier,
            },
            "cards": [
                {
                    "token": c.token,
                    "status": c.status,
                    "first_seen": _iso(c.first_seen),
                    "last_seen": _iso(c.last_seen),
                    "last_store": c.last_store,
                }
                for c in cards
            ],
            "sales": [
                {
                    "event_id": r.event_id,
                    "store": r.store,
                    "node": r.node,
                    "pos": r.pos,
                    "receipt": r.receipt,
                    "sold_at": _iso(r.sold_at),
                    "total": r.total,
                    "discount": r.discount,
                    "currency": r.currency,
                    "payment": r.payment,
                    "customer_token": r.customer_token,
                    "account": r.account,
                    "points": r.points,
                    "lines": lines.get(r.event_id, []),
                }
                for r in sale_rows
            ],
            "ledger": {
                "balance": balance,
                "entries": [
                    {
                        "account": e.account,
                        "event_id": e.event_id,
                        "kind": e.kind,
                        "points": e.points,
                        "booked_at": _iso(e.booked_at),
                        "store": e.store,
                    }
                    for e in entries
                ],
            },
            "signups": by_type["signup"],
            "reservations": by_type["reservation"],
            "surveys": by_type["survey"],
            "warranties": by_type["warranty"],
            "card_taps": [
                {
                    "event_id": t.id,
                    "ts": _iso(t.ts),
                    "store": t.store,
                    "node": t.node,
                    "source": t.body.get("source"),
                }
                for t in taps
            ],
        }

    def marketing(self, channel: Literal["email", "sms"]) -> Iterator[dict[str, Any]]:
        """Contacts of members whose *current* consent for ``channel`` is granted (and who have a contact)."""
        if channel not in CHANNELS:
            raise ValueError(f"channel must be one of {', '.join(CHANNELS)}")
        contact = "email" if channel == "email" else "phone"
        ranked = (
            select(
                consents.c.member_token,
                consents.c.granted,
                consents.c.given_at,
                func.row_number()
                .over(
                    partition_by=consents.c.member_token,
                    order_by=(consents.c.given_at.desc(), consents.c.id.desc()),
                )
                .label("rank"),
            )
            .where(consents.c.channel == channel)
            .subquery()
        )
        stmt = (
            select(people, ranked.c.given_at.label("consent_at"))
            .join(ranked, ranked.c.member_token == people.c.member_token)
            .where(ranked.c.rank == 1, ranked.c.granted.is_(True))
            .order_by(people.c.member_code)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).all()
        for row in rows:
            record = self._decrypt_row(row)
            if record.get(contact):
                yield {
                    "member_code": row.member_code,
                    "first_name": record["first_name"],
                    contact: record[contact],
                    "language": record.get("language"),
                    "consent_given_at": _iso(row.consent_at),
                }

    # -- erasure ---------------------------------------------------------------------------------------------
    def _erase_in_vault(self, conn: Connection, code: str, token: str, now: datetime) -> None:
        conn.execute(
            upsert(conn, erasures).on_conflict_do_nothing(),
            {"member_code": code, "member_token": token, "erased_at": now},
        )
        conn.execute(delete(people).where(people.c.member_code == code))
        conn.execute(delete(people).where(people.c.member_token == token))
        conn.execute(delete(consents).where(consents.c.member_token == token))

    def _scrub_events(self, lconn: Connection, where: Any) -> int:
        """Drop the sealed parts of the matching events (``erased: true`` marks them); returns how many."""
        events = ledger_schema.events
        if lconn.dialect.name == "sqlite":
            lconn.exec_driver_sql("PRAGMA secure_delete=ON")  # zero the old bytes in the file's pages
        rows = lconn.execute(
            select(events.c.id, events.c.body).where(events.c.type.in_(SEALED_TYPES), where)
        ).all()
        changed = 0
        for event_id, body in rows:
            if not isinstance(body, dict) or not any(f in body for f in SEALED_FIELDS):
                continue
            scrubbed = {k: v for k, v in body.items() if k not in SEALED_FIELDS}
            scrubbed["erased"] = True
            lconn.execute(update(events).where(events.c.id == event_id).values(body=scrubbed))
            changed += 1
        return changed

    def _scrub_tokens(self, lconn: Connection, tokens: Sequence[str]) -> int:
        return self._scrub_events(lconn, ledger_schema.events.c.body["member_token"].as_string().in_(tokens))

    def _scrub_dead_letters(self, lconn: Connection, tokens: Sequence[str]) -> int:
        """Dead letters that mention any of ``tokens`` lose their payload (it may hold a sealed box)."""
        dl = ledger_schema.dead_letters
        needles = [t.encode() for t in tokens]
        changed, last = 0, -1
        while True:
            rows = lconn.execute(
                select(dl.c.id, dl.c.payload).where(dl.c.id > last).order_by(dl.c.id).limit(_PAGE)
            ).all()
            if not rows:
                return changed
            last = rows[-1].id
            hits = [r.id for r in rows if r.payload and any(n in bytes(r.payload) for n in needles)]
            if hits:
                lconn.execute(
                    update(dl)
                    .where(dl.c.id.in_(hits))
                    .values(payload=b"", detail="payload removed by a privacy erasure")
                )
                changed += len(hits)

    def erase(self, member_code: str) -> Erasure:
        """Erase ``member_code``: vault row and consents deleted (erasure logged), sealed parts scrubbed from
        the ledger, marketing flags cleared; sales and points stay under the pseudonymous token.

        Idempotent: erasing an erased member re-scrubs (a no-op unless a restore brought data back) and
        returns the tokens again, so the nodes can be told again.
        """
        code = _canonical(member_code)
        person, logged = self._find(code)
        known = person if person is not None else logged
        assert known is not None  # _find raised otherwise
        token: str = known.member_token
        now = datetime.now(UTC)
        with self._writer.begin() as conn:
            self._erase_in_vault(conn, code, token, now)
            erased_at = conn.execute(
                select(erasures.c.erased_at).where(erasures.c.member_code == code)
            ).scalar_one()
        s = ledger_schema
        with self.ledger.begin() as lconn:
            scrubbed = self._scrub_tokens(lconn, [token])
            cards = sorted(
                lconn.execute(
                    select(s.cards.c.token).where(s.cards.c.member_token == token, s.cards.c.token != token)
                ).scalars()
            )
            dead = self._scrub_dead_letters(lconn, [token, *cards])
            lconn.execute(
                update(s.members)
                .where(s.members.c.member_token == token)
                .values(marketing_email=False, marketing_sms=False)
            )
        _sqlite_checkpoint(self.engine)
        _sqlite_checkpoint(self.ledger)
        log.info("vault: erased a member (%d ledger events and %d dead letters scrubbed)", scrubbed, dead)
        return Erasure(
            member_code=code,
            member_token=token,
            tokens=[token, *cards],
            erased_at=_utc(erased_at),
            already_erased=person is None,
            events_scrubbed=scrubbed,
            dead_letters_scrubbed=dead,
        )

    def record_notices(self, member_code: str, outcomes: Mapping[tuple[str, str], str]) -> None:
        """Remember which node was told of the erasure (``delivered``) and which not (the reason)."""
        if not outcomes:
            return
        now = datetime.now(UTC)
        with self._writer.begin() as conn:
            for (store, node), status in sorted(outcomes.items()):
                values = {
                    "status": status[:32],
                    "attempted_at": now,
                    "delivered_at": now if status == "delivered" else None,
                }
                stmt = upsert(conn, erasure_notices)
                stmt = stmt.on_conflict_do_update(
                    index_elements=["member_code", "store", "node"],
                    set_={
                        "status": stmt.excluded.status,
                        "attempted_at": stmt.excluded.attempted_at,
                        "delivered_at": func.coalesce(
                            stmt.excluded.delivered_at, erasure_notices.c.delivered_at
                        ),
                    },
                )
                conn.execute(stmt, {"member_code": member_code, "store": store, "node": node, **values})

    # -- rotation --------------------------------------------------------------------------------------------
    def rotate(self, key_file: Path | None, *, adopt: bool = False, keep_old: bool = False) -> Rotation:
        """Re-encrypt every record under a new data key, then drop the old keys from ``key_file``.

        Without ``adopt`` a fresh key is generated and put first in ``key_file``. With ``adopt`` the key
        ring's first key (one the operator put there, e.g. in ``KIOSK_VAULT_DATA_KEY``) becomes current.
        ``keep_old`` leaves the old keys in the file (other hosts still to be given the new one).
        """
        if not adopt:
            if key_file is None:
                raise VaultKeyError(
                    f"rotation writes the new key into the data key file; with {ENV_DATA_KEY} put the new "
                    f"key first yourself ('kiosk-central vault new-data-key') and use --adopt"
                )
            fresh = new_data_key()
            ring = DataKeyring.load(key_file)
            write_secret(
                key_file, DataKeyring([fresh, *(ring.get(i) for i in ring.ids)]).text(), replace=True
            )
            self._keyring = DataKeyring.load(key_file)
        target = self._keyring.current
        with self._writer.begin() as conn:
            stmt = select(vault_state.c.data_key_id).where(vault_state.c.id == 1)
            if conn.dialect.name == "postgresql":
                stmt = stmt.with_for_update()
            conn.execute(stmt).scalar_one()
            conn.execute(
                update(vault_state)
                .where(vault_state.c.id == 1)
                .values(data_key_id=target.key_id, updated_at=datetime.now(UTC))
            )
        re_encrypted = 0
        while True:
            with self._writer.begin() as conn:
                stmt = (
                    select(people)
                    .where(people.c.data_key_id != target.key_id)
                    .order_by(people.c.member_code)
                    .limit(_PAGE)
                )
                if conn.dialect.name == "postgresql":
                    stmt = stmt.with_for_update(skip_locked=False)
                rows = conn.execute(stmt).all()
                for row in rows:
                    record = self._decrypt_row(row)
                    conn.execute(
                        update(people)
                        .where(people.c.member_code == row.member_code)
                        .values(
                            updated_at=datetime.now(UTC),
                            **self._encrypt_record(target, row.member_code, record),
                        )
                    )
            re_encrypted += len(rows)
            if len(rows) < _PAGE:
                break
        retired: list[str] = []
        if not keep_old and key_file is not None:
            with self._writer.begin() as conn:
                stmt = select(vault_state.c.data_key_id).where(vault_state.c.id == 1)
                if conn.dialect.name == "postgresql":
                    stmt = stmt.with_for_update()
                current = conn.execute(stmt).scalar_one()
                left = conn.execute(
                    select(func.count()).select_from(people).where(people.c.data_key_id != current)
                ).scalar_one()
                if current != target.key_id or left:
                    raise VaultError(
                        "records were written under another key meanwhile; run the rotation again"
                    )
                retired = [i for i in self._keyring.ids if i != target.key_id]
                if retired:
                    write_secret(key_file, DataKeyring([target]).text(), replace=True)
                    self._keyring = DataKeyring.load(key_file)
        _sqlite_checkpoint(self.engine)
        log.info(
            "vault: %d record(s) now under data key %s; retired %s",
            re_encrypted,
            target.key_id,
            retired or "none",
        )
        return Rotation(target.key_id, re_encrypted, retired)


def _describe(exc: BaseException) -> str:
    """An error's class and first line: database errors go on to list statement parameters (tokens,
    ciphertext), which do not belong in a log."""
    first = str(exc).splitlines()[0] if str(exc) else ""
    return f"{exc.__class__.__name__}: {first}"[:300]


def _canonical(member_code: str) -> str:
    code = normalize_member_code(member_code)
    if code is None:
        raise VaultError("not a valid member code (M + 10 digits with a correct check digit)")
    return code
