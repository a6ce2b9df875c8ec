"""What ``kiosk-central stats`` reports: ingest per type, duplicates, dead letters, per-node progress."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import Engine, func, select

from cloud_sync.central.schema import counters, dead_letters, events, node_progress


class NodeStats(msgspec.Struct):
    """One node's sequence numbers as seen centrally; ``missing`` counts seqs never received."""

    store: str
    node: str
    first_seq: int
    last_seq: int
    events: int
    missing: int
    last_seen: str


class Stats(msgspec.Struct):
    """The whole report (the JSON form is this struct)."""

    ingested: dict[str, int]
    duplicates: dict[str, int]
    dead_letters: dict[str, int]
    nodes: list[NodeStats]


def _iso(value: datetime) -> str:
    return value.isoformat(timespec="seconds").replace("+00:00", "Z")


def collect(engine: Engine) -> Stats:
    """Read the figures in one read-only pass."""
    with engine.connect() as conn:
        ingested: dict[str, int] = dict(
            conn.execute(select(events.c.type, func.count()).group_by(events.c.type)).all()
        )
        duplicates = {
            name.removeprefix("duplicates:"): value
            for name, value in conn.execute(
                select(counters.c.name, counters.c.value).where(counters.c.name.like("duplicates:%"))
            ).all()
        }
        dead: dict[str, int] = dict(
            conn.execute(select(dead_letters.c.reason, func.count()).group_by(dead_letters.c.reason)).all()
        )
        progress = conn.execute(
            select(node_progress).order_by(node_progress.c.store, node_progress.c.node)
        ).all()
    return Stats(
        ingested={k: int(v) for k, v in sorted(ingested.items())},
        duplicates={k: int(v) for k, v in sorted(duplicates.items())},
        dead_letters={k: int(v) for k, v in sorted(dead.items())},
        nodes=[
            NodeStats(
                store=row.store,
                node=row.node,
                first_seq=row.first_seq,
                last_seq=row.highest_seq,
                events=row.events,
                missing=row.highest_seq - row.first_seq + 1 - row.events,
                last_seen=_iso(row.last_seen),
            )
            for row in progress
        ],
    )


def as_table(stats: Stats) -> str:
    """A plain-text rendering for operators at a terminal."""
    lines: list[str] = []

    def section(title: str, rows: list[tuple[Any, ...]], header: tuple[str, ...]) -> None:
        lines.append(title)
        if not rows:
            lines.append("  (none)")
            return
        widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
        for row in (header, *rows):
            lines.append(
                "  " + "  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=False)).rstrip()
            )

    types = sorted(set(stats.ingested) | set(stats.duplicates))
    section(
        "events",
        [(t, stats.ingested.get(t, 0), stats.duplicates.get(t, 0)) for t in types],
        ("type", "ingested", "duplicates absorbed"),
    )
    section("dead letters", sorted(stats.dead_letters.items()), ("reason", "count"))
    section(
        "nodes",
        [(n.store, n.node, n.last_seq, n.events, n.missing, n.last_seen) for n in stats.nodes],
        ("store", "node", "last seq", "events", "missing seqs", "last seen"),
    )
    return "\n".join(lines)
