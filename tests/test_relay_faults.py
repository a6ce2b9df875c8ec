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
                ready_before = collector.ready_count
                broker.kill()
                time.sleep(random.uniform(0.1, 0.5))
                broker.start()
                kills += 1
                # A SIGKILLed Mosquitto loses whatever it held in memory for a subscriber that had not
                # reconnected yet (TESTING-NOTES): that would be the broker's loss, not the node's. So the
                # next kill waits until our subscriber is back; the node keeps streaming meanwhile.
                assert collector.wait_ready(timeout=10, min_count=ready_before + 1)
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


def test_node_sigkilled_ten_times_during_a_5000_event_stream_loses_nothing_accepted(tmp_path: Path) -> None:
    with Mosquitto(tmp_path / "broker") as broker, Collector(broker.url, EVENTS) as collector:
        node = NodeProcess(tmp_path / "node", broker.url)
        accepted: list[dict[str, object]] = []
        kills = 0
        offset = 0
        rng = random.Random(20261123)
        while kills < 10 or len(accepted) < 5000:
            node.start()
            if kills >= 10:  # all kills done: finish the stream on a healthy node
                batch, errors = tap_many(node, 5000 - len(accepted), start=offset)
                assert errors == []
                accepted += batch
                break
            killer = threading.Timer(rng.uniform(0.05, 0.6), node.kill)
            killer.start()
            batch, _ = tap_many(node, 5000, start=offset, stop_on_error=True)
            killer.join()
            node.kill()  # no-op if the timer already did it
            kills += 1
            accepted += batch
            offset += 5000
        wanted = {str(a["id"]) for a in accepted}
        ok = collector.wait_for(lambda m: wanted <= {i for _, i in _ids(collector)}, timeout=60)
        got = _ids(collector)
        assert ok, f"{len(wanted - {i for _, i in got})} accepted events never arrived"
        by_seq: dict[int, set[str]] = {}
        for seq, event_id in got:
            by_seq.setdefault(seq, set()).add(event_id)
        assert all(len(ids) == 1 for ids in by_seq.values()), "a seq was reused for a different event"
        assert node.stop() == 0
        assert kills == 10 and node.starts == 11


def test_outbox_bound_refuses_protected_evicts_low_value_and_raises_the_alarm(tmp_path: Path) -> None:
    broker, collector = _persistent_broker_and_collector(tmp_path / "broker")
    presence = Collector(broker.url, "retail/v1/store-7/till-1/status", persistent=True, client_id="presence")
    try:
        broker.restart()  # persist the presence subscriber's session too
        broker.stop()
        node = NodeProcess(tmp_path / "node", broker.url, OUTBOX__MAX_ROWS="40", STATUS__INTERVAL="1")
        with node:
            deadline = time.monotonic() + 10
            while node.status()["outbox"]["by_type"].get("status", 0) < 3 and time.monotonic() < deadline:
                time.sleep(0.1)
            queued_status = node.status()["outbox"]["by_type"].get("status", 0)
            assert queued_status >= 3
            accepted, errors = tap_many(node, 60, threads=1)
            assert len(accepted) == 40 and len(errors) == 20  # every status event made way for a tap
            assert all(e.startswith("507") and "outbox full" in e and "outbox_full" in e for e in errors)
            cli = node.cli("sim", "tap", "04AABBCCDDEEFF")
            assert cli.returncode == 1 and "outbox full" in cli.stderr and "Traceback" not in cli.stderr
            status = node.status()
            assert status["alarms"] == ["outbox_full"] and status["state"] == "degraded"
            assert status["outbox"]["by_type"] == {"identity": 40}
            assert status["outbox"]["evicted"]["status"] >= 3
            assert status["outbox"]["refused"]["identity"] == 21
            _, metrics = node.request("GET", "/metrics")
            assert "kiosk_edge_outbox_full 1.0" in metrics
            assert 'kiosk_edge_outbox_evicted_total{type="status"}' in metrics
            text = node.cli("status").stdout
            assert "alarms:   outbox_full" in text
            time.sleep(1.5)  # a heartbeat arrives while full: dropped, counted, logged
            assert node.status()["outbox"]["refused"].get("status", 0) >= 1
            broker.start()
            wanted = {str(a["id"]) for a in accepted}
            assert collector.wait_for(lambda m: wanted <= {i for _, i in _ids(collector)}, timeout=30)
            # presence told central about the alarm on connect, and again when the drain cleared it
            assert presence.wait_for(
                lambda msgs: any(json.loads(m.payload)["body"]["alarms"] == [] for m in msgs[1:]), timeout=10
            )
            bodies = [json.loads(m.payload)["body"] for m in presence.messages()]
            assert any(b["alarms"] == ["outbox_full"] and b["state"] == "online" for b in bodies)
            deadline = time.monotonic() + 5
            while node.status()["alarms"] and time.monotonic() < deadline:
                time.sleep(0.05)
            assert node.status()["alarms"] == []
        log = node.log_text()
        assert "ALARM outbox_full" in log and "evicted" in log and "refused the new identity event" in log
        assert "dropped a status event" in log and "alarm outbox_full cleared" in log
        assert "Traceback" not in log
    finally:
        presence.stop()
        collector.stop()
        broker.stop()
