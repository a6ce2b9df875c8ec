"""Prometheus metrics of a central worker, computed at scrape time (nothing global, no hot-path cost).

Worker figures come from its plain counters; the per-node sequence figures (last seq, missing seqs, last
seen) come from the shared database, so every worker of the chain reports the same, chain-wide values.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from sqlalchemy import Engine, select

from cloud_sync.central.schema import node_progress
from cloud_sync.central.worker import IngestWorker


class CentralCollector:
    """prometheus_client's custom-collector protocol over one worker and the ledger database."""

    def __init__(self, worker: IngestWorker, engine: Engine) -> None:
        self._worker = worker
        self._engine = engine

    def collect(self) -> Iterator[Any]:
        """Yield the metric families."""
        c = self._worker.counters
        messages = CounterMetricFamily(
            "kiosk_central_messages",
            "Messages this worker committed, by outcome and event type (or dead-letter reason)",
            labels=["outcome", "kind"],
        )
        for (status, kind), count in sorted(c.outcomes.items()):
            messages.add_metric([status, kind], count)
        yield messages
        yield CounterMetricFamily("kiosk_central_batches", "Transactions committed", value=c.batches)
        yield CounterMetricFamily(
            "kiosk_central_batch_seconds", "Time spent ingesting committed batches", value=c.batch_seconds
        )
        yield CounterMetricFamily(
            "kiosk_central_db_errors", "Batches that failed to commit (retried)", value=c.db_errors
        )
        yield CounterMetricFamily("kiosk_central_acks", "PUBACKs sent after commit", value=c.acked)
        yield GaugeMetricFamily("kiosk_central_broker_connected", "1 while connected", value=int(c.connected))
        yield GaugeMetricFamily(
            "kiosk_central_queued", "Messages received, not yet committed", value=self._worker.queued
        )
        yield GaugeMetricFamily(
            "kiosk_central_requests_queued",
            "Requests and member pushes waiting for the request thread",
            value=self._worker.requests_queued,
        )
        yield CounterMetricFamily("kiosk_central_pushes", "Member summaries pushed to nodes", value=c.pushes)
        yield CounterMetricFamily("kiosk_central_replies", "Requests answered", value=c.replies)
        yield CounterMetricFamily(
            "kiosk_central_request_errors",
            "Requests or pushes that failed (the till times out)",
            value=c.request_errors,
        )
        last_seq = GaugeMetricFamily(
            "kiosk_central_node_last_seq", "Highest seq seen", labels=["store", "node"]
        )
        missing = GaugeMetricFamily(
            "kiosk_central_node_missing_seqs",
            "Sequence numbers between a node's first and highest never received (gaps)",
            labels=["store", "node"],
        )
        seen = GaugeMetricFamily(
            "kiosk_central_node_last_seen_seconds",
            "Unix time of a node's last event",
            labels=["store", "node"],
        )
        try:
            with self._engine.connect() as conn:
                rows = conn.execute(select(node_progress)).all()
        except Exception:  # the database being down must not break the scrape of the worker figures
            rows = []
        for row in rows:
            labels = [row.store, row.node]
            last_seq.add_metric(labels, row.highest_seq)
            missing.add_metric(labels, row.highest_seq - row.first_seq + 1 - row.events)
            seen.add_metric(labels, row.last_seen.timestamp())
        yield last_seq
        yield missing
        yield seen


def registry_for(worker: IngestWorker, engine: Engine) -> CollectorRegistry:
    """A registry holding only this worker's collector (no process-global default registry)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CentralCollector(worker, engine))
    return registry
