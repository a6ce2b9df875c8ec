"""The node registry: which nodes may send, with which public key (``kiosk-central nodes …``).

A node is registered with the one-line key ``kiosk-edge keys show`` prints. Registering the same node
again with the same key is a no-op (scripts may re-run); with another key it is refused unless the
operator says ``--replace`` (a re-imaged Pi), so a typo cannot silently lock a store out.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine, delete, select

from cloud_sync.central.schema import nodes
from cloud_sync.envelope import IDENT_RE, decode_public_key, encode_public_key
from cloud_sync.errors import CloudSyncError


class RegistryError(CloudSyncError, ValueError):
    """A registry change was refused; the message says why."""


@dataclass(frozen=True, slots=True)
class NodeEntry:
    """One registered node."""

    store: str
    node: str
    public_key: str
    added_at: datetime


def _check_ids(store: str, node: str) -> None:
    for name, value in (("store", store), ("node", node)):
        if not IDENT_RE.fullmatch(value):
            raise RegistryError(f"{name} id {value!r} must be 1-64 letters, digits, '.', '_' or '-'")


def add_node(engine: Engine, store: str, node: str, public_key: str, *, replace: bool = False) -> bool:
    """Register a node; True if something changed. RegistryError for bad ids, a bad key or a clash."""
    _check_ids(store, node)
    try:
        key_text = encode_public_key(decode_public_key(public_key))
    except ValueError as exc:
        raise RegistryError(f"public key: {exc}") from exc
    with engine.begin() as conn:
        current = conn.execute(
            select(nodes.c.public_key).where(nodes.c.store == store, nodes.c.node == node)
        ).scalar_one_or_none()
        if current == key_text:
            return False
        if current is not None and not replace:
            raise RegistryError(
                f"{store}/{node} is already registered with another key (use --replace for a re-imaged node)"
            )
        if current is not None:
            conn.execute(delete(nodes).where(nodes.c.store == store, nodes.c.node == node))
        conn.execute(
            nodes.insert().values(store=store, node=node, public_key=key_text, added_at=datetime.now(UTC))
        )
    return True


def remove_node(engine: Engine, store: str, node: str) -> bool:
    """Unregister a node (its later messages are dead-lettered as unknown); True if it was registered."""
    _check_ids(store, node)
    with engine.begin() as conn:
        result = conn.execute(delete(nodes).where(nodes.c.store == store, nodes.c.node == node))
    return bool(result.rowcount)


def list_nodes(engine: Engine) -> list[NodeEntry]:
    """Every registered node, by store and node id."""
    with engine.connect() as conn:
        rows = conn.execute(select(nodes).order_by(nodes.c.store, nodes.c.node)).all()
    return [NodeEntry(r.store, r.node, r.public_key, r.added_at) for r in rows]
