"""``kiosk-central run``: composes the database, the ingestor, the MQTT worker and the metrics endpoint.

SIGTERM and SIGINT stop it gracefully: the batch being committed finishes and is acknowledged, nothing
uncommitted is acknowledged, and the process exits 0.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

import msgspec

from cloud_sync.central.config import CentralSettings
from cloud_sync.central.db import make_engine, migrate
from cloud_sync.central.ingest import Ingestor
from cloud_sync.central.members import MemberService
from cloud_sync.central.metrics import registry_for
from cloud_sync.central.responder import Outgoing, Responder
from cloud_sync.central.vault import open_vault_if_configured
from cloud_sync.central.worker import IngestWorker
from cloud_sync.loyalty import earn_rules_topic

log = logging.getLogger(__name__)


def run(settings: CentralSettings, *, ready: threading.Event | None = None) -> int:
    """Run one worker until a signal; returns the exit code."""
    engine = make_engine(settings.db_url)
    migrate(engine)
    # the PII vault (None when no vault key is configured: sign-ups then wait, sealed, in the ledger)
    vault = open_vault_if_configured(settings, engine)
    program = settings.loyalty
    consumers: list[Callable[[list[dict[str, Any]]], None]] = []
    if vault is not None:
        consumers.append(vault.on_commit)  # first, so the push after a sign-up already knows the first name

    def after_commit(docs: Sequence[dict[str, Any]]) -> None:
        for consume in consumers:
            consume(list(docs))

    ingestor = Ingestor(engine, settings.mqtt.topic_root, program=program, on_commit=after_commit)
    members = MemberService(engine, program, names=vault)
    responder = Responder(members, ingestor.keys, settings.mqtt.topic_root, program.request_max_age)
    # the nodes compute the till's provisional points with the same rules (cloud_sync.loyalty)
    rules = Outgoing(earn_rules_topic(settings.mqtt.topic_root), msgspec.json.encode(program.earn_rules))
    worker = IngestWorker(settings.mqtt, ingestor, responder, retained=[rules])
    consumers.append(worker.schedule_push)
    if vault is not None:
        vault.start_catch_up()  # what the vault missed while this worker (or its database) was down
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("%s: stopping after the current batch", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    server = None
    try:
        if settings.metrics.port:
            from prometheus_client import start_wsgi_server

            server, _thread = start_wsgi_server(
                settings.metrics.port, settings.metrics.host, registry_for(worker, engine)
            )
            log.info("metrics on http://%s:%d/metrics", settings.metrics.host, settings.metrics.port)
        worker.start()
        log.info(
            "central worker %s ingesting into %s",
            settings.mqtt.client_id,
            engine.url.render_as_string(hide_password=True),
        )
        if ready is not None:
            ready.set()
        stop.wait()
    finally:
        worker.stop()
        if server is not None:
            server.shutdown()
            server.server_close()
        if vault is not None:
            vault.close()
        engine.dispose()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    outcomes = worker.counters.outcomes
    log.info(
        "stopped: %d stored, %d duplicates absorbed, %d dead-lettered, %d left unacknowledged for redelivery",
        sum(n for (status, _), n in outcomes.items() if status == "stored"),
        sum(n for (status, _), n in outcomes.items() if status == "duplicate"),
        sum(n for (status, _), n in outcomes.items() if status == "dead"),
        worker.queued,
    )
    return 0
