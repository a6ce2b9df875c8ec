"""The POS benchmark's baseline: a bare Flask endpoint on the node's own WSGI server that commits one row.

``python -m bench.pos_baseline PORT DB_PATH`` serves ``POST /commit`` until SIGTERM. Same server class,
same thread count and the same SQLite durability settings as the node's outbox (WAL,
``synchronous=FULL``), one connection per server thread, one INSERT + COMMIT (one fsync) per request and
no validation, signing, idempotency or customer lookup: what "accept a sale durably over HTTP" costs with
nothing of ours in it.
"""

from __future__ import annotations

import signal
import sqlite3
import sys
import threading
import time
from pathlib import Path

from flask import Flask, Response, jsonify, request

from edge.httpserver import WsgiServer


def create_app(db: Path) -> Flask:
    """One endpoint, one durable row per request."""
    app = Flask("pos_baseline")
    local = threading.local()
    setup = sqlite3.connect(db)
    setup.execute("PRAGMA journal_mode=WAL")
    setup.execute("CREATE TABLE IF NOT EXISTS sales (id INTEGER PRIMARY KEY, at REAL, body BLOB)")
    setup.close()

    def conn() -> sqlite3.Connection:
        c: sqlite3.Connection | None = getattr(local, "conn", None)
        if c is None:
            c = sqlite3.connect(db, timeout=30.0)
            c.execute("PRAGMA synchronous=FULL")
            local.conn = c
        return c

    @app.post("/commit")
    def commit() -> Response:
        c = conn()
        cursor = c.execute("INSERT INTO sales (at, body) VALUES (?, ?)", (time.time(), request.get_data()))
        c.commit()
        response = jsonify({"id": cursor.lastrowid})
        response.status_code = 201
        return response

    return app


def main() -> None:
    """Serve until SIGTERM."""
    port, db = int(sys.argv[1]), Path(sys.argv[2])
    server = WsgiServer(create_app(db), "127.0.0.1", port, name="baseline", setting="port", threads=8)
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print("ready", flush=True)
    stop.wait()
    server.stop()


if __name__ == "__main__":
    main()
