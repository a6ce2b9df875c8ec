"""Dead letters: list them, and replay them once the cause is fixed (``kiosk-central deadletters …``).

A message is dead-lettered with its exact bytes, so nothing is lost: a node that sent before it was
registered, say, has every event waiting here. Replaying re-ingests the bytes through the same checks and
the same exactly-once insert; a letter that now goes in (or turns out to be a duplicate) is removed, one
that fails again stays with its new reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, delete, select, update

from cloud_sync.central.ingest import Incoming, Ingestor
from cloud_sync.central.schema import dead_letters


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One dead-lettered message (without its bytes)."""

    id: int
    received_at: datetime
    topic: str
    reason: str
    detail: str
    size: int


def list_letters(engine: Engine, *, reason: str | None = None, limit: int = 100) -> list[DeadLetter]:
    """The oldest dead letters first, optionally of one reason."""
    query = select(dead_letters).order_by(dead_letters.c.id).limit(limit)
    if reason is not None:
        query = query.where(dead_letters.c.reason == reason)
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    return [DeadLetter(r.id, r.received_at, r.topic, r.reason, r.detail, len(r.payload)) for r in rows]


@dataclass(frozen=True, slots=True)
class Replayed:
    """What became of one replayed letter."""

    id: int
    status: str  # "stored", "duplicate" or "dead"
    reason: str | None


def replay(
    engine: Engine, ingestor: Ingestor, ids: list[int] | None = None, *, reason: str | None = None
) -> Iterator[Replayed]:
    """Re-ingest letters (by id, or all of a reason); the ones that go in are removed from the table."""
    query = select(dead_letters.c.id, dead_letters.c.topic, dead_letters.c.payload).order_by(
        dead_letters.c.id
    )
    if ids is not None:
        query = query.where(dead_letters.c.id.in_(ids))
    if reason is not None:
        query = query.where(dead_letters.c.reason == reason)
    with engine.connect() as conn:
        letters = conn.execute(query).all()
    for letter_id, topic, payload in letters:
        # the ingest writes a fresh dead letter if it fails again; keep the old row instead
        [outcome] = ingestor.ingest([Incoming(topic, bytes(payload))], dead_letter=False)
        with engine.begin() as conn:
            if outcome.status == "dead":
                conn.execute(
                    update(dead_letters)
                    .where(dead_letters.c.id == letter_id)
                    .values(reason=outcome.reason, detail=outcome.detail or "")
                )
            else:
                conn.execute(delete(dead_letters).where(dead_letters.c.id == letter_id))
        yield Replayed(letter_id, outcome.status, outcome.reason)
