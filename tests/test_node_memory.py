"""What the long-running node keeps out of its memory (the Pi budget is 60 MB during a drain)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloud_sync.store import HEAD_REVISION, MigrationFailed, migrate_in_child, schema_revision
from tests.support.broker import free_port
from tests.support.node import NodeProcess


def test_a_first_start_migrates_in_a_child_and_maps_no_sqlalchemy_or_cryptography(tmp_path: Path) -> None:
    with NodeProcess(tmp_path / "node", f"mqtt://127.0.0.1:{free_port()}") as node:
        assert node.proc is not None
        maps = Path(f"/proc/{node.proc.pid}/maps").read_text()
        assert "schema migrated" in node.log_text()  # it was a first start
    assert schema_revision(node.data_dir / "outbox.sqlite3") == HEAD_REVISION
    assert "/sqlalchemy/" not in maps and "/alembic/" not in maps
    assert "/cryptography/" not in maps  # the signing key is read through PyNaCl


def test_a_failed_migration_names_the_reason(tmp_path: Path) -> None:
    target = tmp_path / "outbox.sqlite3"
    target.mkdir()  # not a database file
    with pytest.raises(MigrationFailed, match=r"migrating .*outbox\.sqlite3 failed: .+"):
        migrate_in_child(target)
