"""The relay under faults, with a real node process and real Mosquitto brokers."""

from __future__ import annotations

import json
import random
import threading
import time
from pathlib import Path

from tests.support.broker import Collector, Mosquitto
from tests.support.node import NodeProcess, tap_many

EVENTS = "retail/v1/store-7/till-1/event/#"


def _ids(collector: Collector) -> list[tuple[int, str]]:
    out = []
    for payload in collector.payloads(EVENTS):
        doc = json.loads(payload)
        out.append((doc["seq"], doc["id"]))
    return out


def _persistent_broker_and_collector(workdir: Path) -> tuple[Mosquitto, Collector]:
    """A broker that keeps a persistent subscriber's session across restarts.

    The subscriber subscribes, then the broker is stopped gracefully once so the session is on disk:
    from then on, even after a SIGKILL, the restarted broker queues events for the subscriber
    whether or not it has reconnected yet.
    """
    broker = Mosquitto(workdir, persistence=True).start()
    collector = Collector(broker.url, EVENTS, persistent=True, client_id="central-test")
    before = collector.ready_count
    broker.restart()
    assert collector.wait_ready(timeout=10, min_count=before + 1)
    return broker, collector


def test_broker_down_at_start_then_1000_events_arrive_in_seq_order(tmp_path: Path) -> None:
    broker, collector = _persistent_broker_and_collector(tmp_path / "broker")
    try:
        broker.stop()
        with NodeProcess(tmp_path / "node", broker.url) as node:
            accepted, errors = tap_many(node, 1000)
            assert not errors and len(accepted) == 1000
            status = node.status()
            assert status["broker"]["connected"] is False and status["broker"]["last_error"]
            assert status["outbox"]["depth"] == 1000
            out = node.cli("outbox")
            assert "depth:    1000 event(s)" in out.stdout and "identity" in out.stdout
            broker.start()
            assert collector.wait_for(lambda m: len({s for s, _ in _ids(collector)}) >= 1000, timeout=30)
            got = _ids(collector)
            seqs = [s for s, _ in got]
            assert seqs == sorted(seqs), "events were published out of seq order"
            assert {a["id"] for a in accepted} == {i for _, i in got}
            deadline = time.monotonic() + 5
            while node.status()["outbox"]["depth"] and time.monotonic() < deadline:
                time.sleep(0.05)
            assert node.status()["outbox"]["depth"] == 0
    finally:
        collector.stop()
        broker.stop()


def test_10000_events_while_the_broker_is_killed_three_times(tmp_path: Path) -> None:
    broker, collector = _persistent_broker_and_collector(tmp_path / "broker")
    try:
        with NodeProcess(tmp_path / "node", broker.url) as node:
            result: dict[str, object] = {}

            def stream() -> None:
                result["accepted"], result["errors"] = tap_many(node, 10_000)

            producer = threading.Thread(target=stream)
            producer.start()
            kills = 0
            while producer.is_alive() and kills < 3:
                time.sleep(random.uniform(0.4, 1.2))
                broker.kill()
                time.sleep(random.uniform(0.1, 0.5))
                broker.start()
                kills += 1
            producer.join()
            assert kills == 3, "the stream finished before three kills; make it longer"
            accepted = result["accepted"]
            assert result["errors"] == [] and isinstance(accepted, list) and len(accepted) == 10_000
            wanted = {a["id"] for a in accepted}
            assert collector.wait_for(lambda m: wanted <= {i for _, i in _ids(collector)}, timeout=60), (
                f"missing {len(wanted - {i for _, i in _ids(collector)})} of 10000"
            )
            assert node.status()["broker"]["reconnects"] >= 3
    finally:
        collector.stop()
        broker.stop()
