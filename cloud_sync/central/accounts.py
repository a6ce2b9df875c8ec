"""Binding identity tokens to members, shared by ingest (a sign-up binds its card) and operators
(``kiosk-central cards bind``: a replacement card).

A token is bound once: a card already bound to another member is never taken over (someone joining with a
card they picked up must not capture its owner's points). When an unbound card is bound, what it earned on
its own account — points, stamp-card units — moves to the member: the points as two ``transfer`` entries,
because the ledger is append-only.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, func, select

from cloud_sync.central.db import upsert
from cloud_sync.central.schema import cards, ledger, stamps


def add_stamps(conn: Connection, units: dict[tuple[str, str], int]) -> None:
    """Add stamp-card units per (account, card); negative for returns."""
    stmt = upsert(conn, stamps)
    stmt = stmt.on_conflict_do_update(
        index_elements=["account", "card"], set_={"units": stamps.c.units + stmt.excluded.units}
    )
    conn.execute(stmt, [{"account": a, "card": c, "units": n} for (a, c), n in sorted(units.items())])


def bind_token(
    conn: Connection,
    token: str,
    member_token: str,
    *,
    now: datetime,
    store: str,
    event_id: str | None = None,
    ref: str | None = None,
) -> bool:
    """Bind ``token`` to the member unless it belongs to someone else; True if it is now the member's."""
    stmt = upsert(conn, cards)
    stmt = stmt.on_conflict_do_update(
        index_elements=["token"],
        set_={"member_token": func.coalesce(cards.c.member_token, stmt.excluded.member_token)},
    )
    conn.execute(
        stmt,
        {
            "token": token,
            "member_token": member_token,
            "status": "active",
            "first_seen": now,
            "last_seen": now,
            "last_store": store,
        },
    )
    if token == member_token:
        return True
    owner = conn.execute(select(cards.c.member_token).where(cards.c.token == token)).scalar_one()
    if owner != member_token:
        return False
    for card_id, units in conn.execute(
        select(stamps.c.card, stamps.c.units).where(stamps.c.account == token)
    ).all():
        add_stamps(conn, {(member_token, card_id): units})
        conn.execute(stamps.delete().where(stamps.c.account == token, stamps.c.card == card_id))
    balance = conn.execute(
        select(func.coalesce(func.sum(ledger.c.points), 0)).where(ledger.c.account == token)
    ).scalar_one()
    if balance:
        entry = {"event_id": event_id, "ref": ref, "booked_at": now, "store": store}
        conn.execute(
            ledger.insert(),
            [
                {**entry, "account": token, "kind": "transfer", "points": -balance},
                {**entry, "account": member_token, "kind": "transfer", "points": balance},
            ],
        )
    return True
