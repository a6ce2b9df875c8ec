"""Relay benchmark: every figure of the issue in ONE run against ONE fresh Mosquitto.

Run from the repository root::

    .venv/bin/python -m bench.relay [--quick] [--json PATH]

Why one run: absolute rates on these machines drift up to ~1.8x between runs (shared/TESTING-NOTES.md),
so the targets are ratios against a ceiling measured by the same process, against the same broker, a
few seconds apart. The ceiling is measured twice (before the drain and after the idle phase) and the
better run is used, so a transient slow-down of the machine cannot make the relay look better than it is.

Figures (see bench/README.md):

(a) ceiling  raw paho-mqtt QoS 1, window 100, 300-byte payloads, no storage.
(b) drain    a pre-filled 100,000-event outbox relayed by the real ``kiosk-edge run`` process.
(c) live     8 in-process producers, each ``accept`` durable before it returns, relayed end to end.
(d) latency  accept -> PUBACK at a steady 200 events/s.
(e) idle     the node process's CPU while connected and idle.

Every phase has a ``mosquitto_sub`` (C, separate process) subscribed to its topics at QoS 1, so the
broker does the same fan-out work in every phase and we can check that the events really arrived.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import logging
import math
import os
import platform
import re
import resource
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import paho.mqtt
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from cloud_sync.envelope import SignedMessage, Signer
from cloud_sync.messages import validate_body
from cloud_sync.outbox import Outbox
from cloud_sync.relay import Relay, RelayOptions, client_id_for
from edge.keys import init_keys, load_signing_key
from edge.node import OUTBOX_FILE
from tests.support.broker import HOST, Mosquitto, free_port, publish

TOPIC_ROOT = "retail/v1"  # the node's default mqtt.topic_root
STORE = "bench-store"
WINDOW = 100
CEILING_PAYLOAD = 300
PROBE = b"bench-probe"
DRAIN_POLL_FAST = 0.02  # /status poll interval around the drain's start and end (timing precision)
DRAIN_POLL_SLOW = 0.1  # in between (each poll costs the node CPU)
SEQ_RE = re.compile(rb'"seq":(\d+)')

# targets from the issue
DRAIN_RATIO_TARGET = 0.7
LIVE_RATIO_TARGET = 0.3
P99_TARGET_MS = 5.0
RSS_TARGET_MB = 60.0
IDLE_CPU_TARGET = 1.0
OTHER_CPU_WARN = 10.0  # % of one core used by processes not ours, averaged over the run


@dataclass(frozen=True, slots=True)
class Sizes:
    """How much work each phase does; ``--quick`` is about a tenth, for a smoke run."""

    ceiling: int
    drain: int
    live: int
    producers: int
    latency_rate: float
    latency_seconds: float
    idle_seconds: float
    settle_seconds: float


FULL = Sizes(100_000, 100_000, 50_000, 8, 200.0, 10.0, 30.0, 2.0)
QUICK = Sizes(10_000, 10_000, 5_000, 8, 200.0, 2.0, 5.0, 1.0)


class BenchError(RuntimeError):
    """A phase could not produce its figure (as opposed to producing a figure that misses its target)."""


def identity_body() -> dict[str, Any]:
    """A card tap as the intake produces it: a pseudonymised 64-hex token, never a raw UID."""
    return {"source": "nfc", "token": secrets.token_hex(32), "device": "bench"}


def event_topic(node: str) -> str:
    """The subscription filter for one (store, node)'s events, as the outbox builds topics."""
    return f"{TOPIC_ROOT}/{STORE}/{node}/event/#"


def percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list (no interpolation: a real observed value)."""
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process so far (all its threads), in seconds, from /proc/PID/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rpartition(")")[2].split()  # the command name may contain spaces: skip past it
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU use of a few processes over a phase, as % of one core: tells CPU-bound from waiting.

    A Python process near 100 % is bound by its GIL (one core), whatever the machine has.
    """

    def __init__(self, **pids: int) -> None:
        self.pids = pids
        self.start = {name: cpu_seconds(pid) for name, pid in pids.items()}
        self.began = time.perf_counter()

    def percent(self) -> dict[str, float]:
        """% of one core each process used since construction."""
        wall = time.perf_counter() - self.began
        return {
            f"{name}_cpu_percent": 100 * (cpu_seconds(pid) - self.start[name]) / wall
            for name, pid in self.pids.items()
        }


def machine_busy_seconds() -> float:
    """CPU time the whole machine has spent busy (user, nice, system, irq, softirq), in seconds."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]
    user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in fields)
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU time of this process and its reaped children (node, broker, subscribers), in seconds."""
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


# --------------------------------------------------------------------------------------------------
# the verifying subscriber


class Subscriber:
    """``mosquitto_sub`` at QoS 1 writing one payload per line to a file.

    A separate C process, so it costs the measured Python processes no GIL time; it flushes after each
    message, so the file shows what has arrived. Ready once a probe message published to its own filter
    has come through (the SUBACK is otherwise invisible from outside).
    """

    def __init__(self, broker: Mosquitto, topic: str, path: Path) -> None:
        self.broker = broker
        self.topic = topic
        self.path = path
        self.available = shutil.which("mosquitto_sub") is not None
        self._proc: subprocess.Popen[bytes] | None = None
        self._out: IO[bytes] | None = None
        self._offset = 0
        self._lines = 0

    def start(self, timeout: float = 5.0) -> Subscriber:
        """Start and wait until the subscription demonstrably delivers."""
        if not self.available:
            return self
        self._out = self.path.open("wb")
        self._proc = subprocess.Popen(
            ["mosquitto_sub", "-h", HOST, "-p", str(self.broker.port), "-q", "1", "-t", self.topic],
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )
        probe_topic = self.topic.rstrip("#").rstrip("/") + "/probe"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            publish(self.broker.url, probe_topic, PROBE)
            wait_until = time.monotonic() + 0.2
            while time.monotonic() < wait_until:
                if PROBE in self.path.read_bytes():
                    return self
                time.sleep(0.01)
        raise BenchError(f"mosquitto_sub on {self.topic} never received its probe")

    def count(self) -> int:
        """Data lines received so far (probes excluded); reads only what is new since the last call."""
        with self.path.open("rb") as handle:
            handle.seek(self._offset)
            chunk = handle.read()
        complete = chunk.rfind(b"\n") + 1
        self._offset += complete
        lines = chunk[:complete].split(b"\n")[:-1]
        self._lines += sum(1 for line in lines if line != PROBE)
        return self._lines

    def wait_for(self, count: int, timeout: float) -> int:
        """Wait (bounded) until ``count`` data lines arrived; returns how many did."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.count()
            if got >= count or time.monotonic() >= deadline:
                return got
            time.sleep(0.05)

    def distinct_seqs(self) -> int:
        """Distinct envelope ``seq`` values received: QoS 1 may duplicate, it must not lose."""
        return len(set(SEQ_RE.findall(self.path.read_bytes())))

    def stop(self) -> None:
        """Terminate the process and close the file. Idempotent."""
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.terminate()
                try:
                    self._proc.wait(5)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
            self._proc = None
        if self._out is not None:
            self._out.close()
            self._out = None

    def __enter__(self) -> Subscriber:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------------------------------
# (a) the ceiling


class _WindowedPublisher:
    """A competent raw paho client: one thread, paho's external-loop API, a window of ``WINDOW``.

    The same shape as the relay (select + loop_read/loop_write, publish while the window has room), but
    with no storage, so the gap between the two is what the outbox and the node cost. A prototype of the
    threaded alternative (loop_start + a semaphore in the main thread) reached only ~55 % of this here:
    the two threads fight over the GIL on every PUBACK.
    """

    def __init__(self, port: int, topic: str, payload: bytes) -> None:
        self.port = port
        self.topic = topic
        self.payload = payload
        self.connected = False
        self.acked = 0
        self.failed = 0
        self.inflight = 0

    def on_connect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
        self.connected = not reason.is_failure

    def on_publish(self, _c: mqtt.Client, _u: Any, _mid: int, reason: ReasonCode, _p: Any) -> None:
        self.inflight -= 1
        self.acked += 1
        if reason.is_failure:
            self.failed += 1

    def run(self, count: int, timeout: float = 120.0) -> float:
        """Publish ``count`` messages; returns seconds from the first publish to the last PUBACK."""
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"bench-ceiling-{os.getpid()}", protocol=mqtt.MQTTv5
        )
        client.max_inflight_messages_set(WINDOW)
        client.max_queued_messages_set(0)
        client.on_connect = self.on_connect
        client.on_publish = self.on_publish
        client.connect(HOST, self.port, keepalive=60)
        sock = client.socket()
        assert sock is not None
        try:
            deadline = time.monotonic() + 5.0
            while not self.connected:
                self._step(client, sock)
                if time.monotonic() > deadline:
                    raise BenchError("ceiling client got no CONNACK within 5 s")
            sent = 0
            started = time.perf_counter()
            deadline = time.monotonic() + timeout
            next_misc = time.monotonic() + 1.0
            while self.acked < count:
                while self.inflight < WINDOW and sent < count:
                    info = client.publish(self.topic, self.payload, qos=1)
                    if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                        raise BenchError(f"ceiling publish failed: {mqtt.error_string(info.rc)}")
                    self.inflight += 1
                    sent += 1
                self._step(client, sock)
                now = time.monotonic()
                if now >= next_misc:
                    next_misc = now + 1.0
                    client.loop_misc()
                if now > deadline:
                    raise BenchError(f"ceiling: only {self.acked}/{count} PUBACKs after {timeout:.0f} s")
            elapsed = time.perf_counter() - started
        finally:
            client.disconnect()
            with contextlib.suppress(Exception):
                client.loop_write()
            sock.close()
        if self.failed:
            raise BenchError(f"ceiling: the broker refused {self.failed} publishes")
        return elapsed

    def _step(self, client: mqtt.Client, sock: Any) -> None:
        wants = [sock] if client.want_write() else []
        readable, writable, _ = select.select([sock], wants, [], 1.0)
        if readable and client.loop_read(max_packets=WINDOW + 8) != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise BenchError("ceiling client lost its connection")
        if writable:
            client.loop_write()


def measure_ceiling(broker: Mosquitto, workdir: Path, count: int, label: str) -> dict[str, Any]:
    """One ceiling run with its verifying subscriber; msg/s = messages / time until the last PUBACK."""
    node = f"bench-ceiling-{label}"
    topic = f"{TOPIC_ROOT}/{STORE}/{node}/event/identity"
    payload = secrets.token_hex(CEILING_PAYLOAD)[:CEILING_PAYLOAD].encode()
    with Subscriber(broker, event_topic(node), workdir / f"sub-ceiling-{label}.txt") as sub:
        assert broker.pid is not None
        meter = CpuMeter(bench=os.getpid(), broker=broker.pid)
        elapsed = _WindowedPublisher(broker.port, topic, payload).run(count)
        cpu = meter.percent()
        received = sub.wait_for(count, 30.0) if sub.available else None
    return {
        "messages": count,
        "seconds": elapsed,
        "rate": count / elapsed,
        "subscriber_received": received,
        **cpu,
    }


# --------------------------------------------------------------------------------------------------
# (b) drain and (e) idle: the real node process


def fill_outbox(data_dir: Path, node: str, count: int) -> dict[str, Any]:
    """Create the node's keys and queue ``count`` identity events in its outbox, as an outage would.

    Uses ``submit`` in chunks so the writer's group commit fills hundreds of rows per fsync: this is
    preparation, not a measured figure, and accept-per-event would spend ~15 s on fsyncs.
    """
    init_keys(data_dir, None)
    signer = Signer(load_signing_key(data_dir), STORE, node)
    started = time.perf_counter()
    total = 0
    with Outbox(data_dir / OUTBOX_FILE, signer, TOPIC_ROOT) as box:
        for first in range(0, count, 5000):
            futures = [box.submit("identity", identity_body()) for _ in range(min(5000, count - first))]
            total += sum(len(future.result().payload) for future in futures)
        depth = box.stats().depth
    if depth != count:
        raise BenchError(f"outbox holds {depth} events after filling, expected {count}")
    return {"events": count, "mean_payload": total / count, "fill_seconds": time.perf_counter() - started}


def _kiosk_edge_bin() -> str:
    beside = Path(sys.executable).with_name("kiosk-edge")
    return str(beside) if beside.exists() else (shutil.which("kiosk-edge") or "kiosk-edge")


class NodeProcess:
    """``kiosk-edge run`` as a subprocess, configured only through ``KIOSK_EDGE_*`` env vars."""

    def __init__(self, workdir: Path, data_dir: Path, broker_url: str, node: str) -> None:
        self.admin_port = free_port()
        self.log_path = workdir / "node.log"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("KIOSK_EDGE_")}
        self.env.update(
            KIOSK_EDGE_DATA__DIR=str(data_dir),
            KIOSK_EDGE_MQTT__URL=broker_url,
            KIOSK_EDGE_ADMIN__PORT=str(self.admin_port),
            KIOSK_EDGE_KIOSK__PORT=str(free_port()),
            KIOSK_EDGE_POS__HOST="127.0.0.1",
            KIOSK_EDGE_POS__PORT=str(free_port()),
            KIOSK_EDGE_NODE__STORE=STORE,
            KIOSK_EDGE_NODE__ID=node,
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._conn: http.client.HTTPConnection | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        """Spawn the node (it connects and starts draining on its own)."""
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [_kiosk_edge_bin(), "run"],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def check_alive(self) -> None:
        """Raise with the node's log tail if it exited."""
        if self.proc is not None and self.proc.poll() is not None:
            raise BenchError(f"node exited with {self.proc.returncode}:\n{self.log_tail()}")

    def status(self, timeout: float = 2.0) -> dict[str, Any] | None:
        """``GET /status`` over a kept-alive connection; None while the endpoint is not up yet."""
        try:
            if self._conn is None:
                self._conn = http.client.HTTPConnection(HOST, self.admin_port, timeout=timeout)
            self._conn.request("GET", "/status")
            response = self._conn.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException):
            self.close_conn()
            return None
        if response.status != 200:
            return None
        result: dict[str, Any] = json.loads(body)
        return result

    def close_conn(self) -> None:
        """Drop the kept-alive admin connection (so the idle phase has no client attached)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def memory_kb(self) -> tuple[int, int]:
        """(VmRSS, VmHWM) in kB from /proc: current and lifetime-peak resident set."""
        values = {"VmRSS": 0, "VmHWM": 0}
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                key, _, rest = line.partition(":")
                if key in values:
                    values[key] = int(rest.split()[0])
        return values["VmRSS"], values["VmHWM"]

    def cpu_seconds(self) -> float:
        """utime + stime of the node process so far (its threads included), in seconds."""
        return cpu_seconds(self.pid)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM (the node finishes in-flight publishes and closes its database), SIGKILL if stuck."""
        self.close_conn()
        rc: int | None = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    rc = self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            else:
                rc = self.proc.returncode
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
        return rc

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the node's log, for error messages."""
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""


def measure_drain(node: NodeProcess, count: int, broker_pid: int, timeout: float = 180.0) -> dict[str, Any]:
    """Start the node and poll /status until ``broker.acknowledged`` reaches ``count``.

    The clock starts at the first poll that shows ``broker.connected`` and stops at the first that
    shows ``acknowledged >= count``. Both ends are polled every 20 ms; in between every 100 ms, because
    each poll costs the GIL-bound node ~1.5 ms of CPU (~8 % of its core at 50 polls/s), which would
    otherwise be charged to the drain. The node starts draining the instant it connects, so the first
    poll may already see some events acknowledged: the rate is taken over the measured window only,
    (count - acknowledged at t0) / (t1 - t0). ``acknowledged`` moves in steps of up to 256 events, so
    this is exact to within a few hundred events. RSS is sampled from /proc every 20 ms throughout
    (that costs the node nothing).
    """
    node.start()
    samples: list[tuple[float, int]] = []  # (time, acknowledged) for the steady-state rate
    poll_seconds: list[float] = []
    peak_rss = 0
    t0: float | None = None
    ack0 = 0
    status: dict[str, Any] | None = None
    next_poll = 0.0
    deadline = time.monotonic() + timeout
    give_up_connecting = time.monotonic() + 15.0
    while True:
        tick = time.perf_counter()
        node.check_alive()
        rss, _hwm = node.memory_kb()
        peak_rss = max(peak_rss, rss)
        if tick >= next_poll:
            status = node.status()
            now = time.perf_counter()
            next_poll = now + DRAIN_POLL_FAST
            if status is not None:
                poll_seconds.append(now - tick)
                broker, acked = status["broker"], int(status["broker"]["acknowledged"])
                if t0 is None and broker["connected"]:
                    t0, ack0 = now, acked
                    meter = CpuMeter(node=node.pid, broker=broker_pid)
                if t0 is not None:
                    samples.append((now, acked))
                    if acked >= count:
                        break
                    done = acked - ack0
                    eta = (count - acked) * (now - t0) / done if done > 0 else 0.0
                    if eta > 2 * DRAIN_POLL_SLOW or (done == 0 and now - t0 < DRAIN_POLL_SLOW):
                        next_poll = now + DRAIN_POLL_SLOW
                if t0 is None and broker["last_error"] and time.monotonic() > give_up_connecting:
                    raise BenchError(f"node cannot reach the broker: {broker['last_error']}")
        if time.monotonic() > deadline:
            raise BenchError(f"drain did not finish within {timeout:.0f} s:\n{node.log_tail()}")
        time.sleep(max(0.0, DRAIN_POLL_FAST - (time.perf_counter() - tick)))
    assert t0 is not None and status is not None
    t1 = samples[-1][0]
    cpu = meter.percent()
    rss, hwm = node.memory_kb()
    peak_rss = max(peak_rss, rss)
    return {
        "events": count,
        "seconds": t1 - t0,
        "rate": (count - ack0) / (t1 - t0) if t1 > t0 else math.nan,
        "acknowledged_at_start": ack0,
        "steady_rate": _steady_rate(samples, count),
        "peak_rss_mb": peak_rss / 1024,
        "hwm_rss_mb": hwm / 1024,
        "depth_after": int(status["outbox"]["depth"]),
        "status_polls": len(poll_seconds),
        "status_poll_ms_median": 1000 * sorted(poll_seconds)[len(poll_seconds) // 2],
        **cpu,
    }


def _steady_rate(samples: list[tuple[float, int]], count: int) -> float:
    """Rate between the polls nearest 10 % and 90 % acknowledged: free of start-up and tail effects."""
    low = next((s for s in samples if s[1] >= 0.1 * count), None)
    high = next((s for s in samples if s[1] >= 0.9 * count), None)
    if low is None or high is None or high[0] <= low[0]:
        return math.nan
    return (high[1] - low[1]) / (high[0] - low[0])


def measure_idle(node: NodeProcess, seconds: float, settle: float) -> dict[str, Any]:
    """CPU% of the connected, empty node over ``seconds`` with nobody polling it."""
    node.close_conn()
    time.sleep(settle)  # let the last acknowledgements and the WAL checkpoint finish
    node.check_alive()
    cpu0, t0 = node.cpu_seconds(), time.perf_counter()
    time.sleep(seconds)
    cpu1, t1 = node.cpu_seconds(), time.perf_counter()
    status = None
    for _ in range(5):  # a busy machine can delay the first answer on a fresh connection
        status = node.status(timeout=5.0)
        if status is not None:
            break
        node.check_alive()
        time.sleep(0.5)
    if status is None:
        raise BenchError("node's /status did not answer at the end of the idle phase")
    if not status["broker"]["connected"]:
        raise BenchError(
            f"node was not connected at the end of the idle phase (reconnects "
            f"{status['broker']['reconnects']}, last error {status['broker']['last_error']!r})"
        )
    return {
        "seconds": t1 - t0,
        "cpu_seconds": cpu1 - cpu0,
        "cpu_percent": 100 * (cpu1 - cpu0) / (t1 - t0),
        "tick_seconds": 1 / os.sysconf("SC_CLK_TCK"),
    }


# --------------------------------------------------------------------------------------------------
# (c) live and (d) latency: Outbox + Relay in this process


class Deliveries:
    """``on_delivered`` sink: the first PUBACK time of each seq; signals when ``expected`` distinct seqs."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.times: dict[int, float] = {}
        self.done = threading.Event()
        self.done_at: float | None = None

    def __call__(self, seq: int) -> None:
        # runs in the relay thread, inside paho's on_publish: keep it to a dict insert
        now = time.perf_counter()
        if seq not in self.times:
            self.times[seq] = now
            if len(self.times) >= self.expected and self.done_at is None:
                self.done_at = now
                self.done.set()


@contextlib.contextmanager
def in_process_relay(
    broker: Mosquitto, data_dir: Path, node: str, on_delivered: Callable[[int], None]
) -> Iterator[Outbox]:
    """A fresh outbox and a connected relay, composed as ``edge.node.Node`` does (minus HTTP/devices)."""
    init_keys(data_dir, None)
    signer = Signer(load_signing_key(data_dir), STORE, node)
    outbox = Outbox(data_dir / OUTBOX_FILE, signer, TOPIC_ROOT)
    try:

        def presence(state: str, reason: str) -> SignedMessage:
            body = {"state": state, "reason": reason, "version": "bench", "alarms": []}
            return outbox.seal_presence(validate_body("presence", body))

        options = RelayOptions(
            host=HOST,
            port=broker.port,
            client_id=client_id_for(STORE, node),
            status_topic=f"{TOPIC_ROOT}/{STORE}/{node}/status",
            window=WINDOW,
            display_url=broker.url,
        )
        relay = Relay(options, outbox, presence, on_delivered=on_delivered)
        relay.start()
        try:
            deadline = time.monotonic() + 10.0
            while not relay.status().connected:
                if time.monotonic() > deadline:
                    raise BenchError(f"in-process relay did not connect: {relay.status().last_error}")
                time.sleep(0.01)
            yield outbox
        finally:
            relay.stop()
    finally:
        outbox.close()


def measure_live(broker: Mosquitto, workdir: Path, count: int, producers: int) -> dict[str, Any]:
    """``producers`` threads call ``accept`` (durable on return) while the relay publishes behind them."""
    node = "bench-live"
    deliveries = Deliveries(count)
    share = [count // producers + (1 if i < count % producers else 0) for i in range(producers)]
    bodies = [[identity_body() for _ in range(n)] for n in share]  # made up front: not what we measure
    errors: list[BaseException] = []
    go = threading.Event()
    sub = Subscriber(broker, event_topic(node), workdir / "sub-live.txt")
    with sub, in_process_relay(broker, workdir / "live", node, deliveries) as outbox:

        def produce(mine: list[dict[str, Any]]) -> None:
            go.wait()
            try:
                for body in mine:
                    outbox.accept("identity", body)
            except BaseException as exc:  # reported after the join, not lost in a thread
                errors.append(exc)

        threads = [
            threading.Thread(target=produce, args=(b,), name=f"producer-{i}") for i, b in enumerate(bodies)
        ]
        for thread in threads:
            thread.start()
        assert broker.pid is not None
        meter = CpuMeter(bench=os.getpid(), broker=broker.pid)
        started = time.perf_counter()
        go.set()
        for thread in threads:
            thread.join()
        intake_done = time.perf_counter()
        if errors:
            raise BenchError(f"producer failed: {errors[0]!r}")
        if not deliveries.done.wait(120.0):
            raise BenchError(f"live: only {len(deliveries.times)}/{count} delivered after 120 s")
        assert deliveries.done_at is not None
        cpu = meter.percent()
        received = sub.wait_for(count, 30.0) if sub.available else None
        distinct = sub.distinct_seqs() if sub.available else None
    elapsed = deliveries.done_at - started
    return {
        "events": count,
        "producers": producers,
        "seconds": elapsed,
        "rate": count / elapsed,
        "intake_seconds": intake_done - started,
        "intake_rate": count / (intake_done - started),
        "subscriber_received": received,
        "subscriber_distinct": distinct,
        **cpu,
    }


def measure_latency(broker: Mosquitto, workdir: Path, rate: float, seconds: float) -> dict[str, Any]:
    """One producer on an absolute schedule (i / rate), so a slow accept does not stretch the test."""
    node = "bench-latency"
    count = round(rate * seconds)
    deliveries = Deliveries(count)
    bodies = [identity_body() for _ in range(count)]
    accepted: dict[int, tuple[float, float]] = {}  # seq -> (before accept, after accept)
    sub = Subscriber(broker, event_topic(node), workdir / "sub-latency.txt")
    with sub, in_process_relay(broker, workdir / "latency", node, deliveries) as outbox:
        outbox.accept("identity", identity_body())  # warm-up (first statement, first publish): not counted
        deliveries.expected = count + 1
        time.sleep(0.1)
        start = time.perf_counter() + 0.01
        behind = 0
        for i, body in enumerate(bodies):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            else:
                behind += 1
            before = time.perf_counter()
            message = outbox.accept("identity", body)
            accepted[message.seq] = (before, time.perf_counter())
        if not deliveries.done.wait(30.0):
            raise BenchError(f"latency: only {len(deliveries.times)}/{count + 1} delivered after 30 s")
        received = sub.wait_for(count + 1, 10.0) if sub.available else None
    latencies = sorted(1000 * (deliveries.times[seq] - before) for seq, (before, _) in accepted.items())
    accepts = sorted(1000 * (after - before) for before, after in accepted.values())
    return {
        "events": count,
        "rate": rate,
        "p50_ms": percentile(latencies, 0.50),
        "p99_ms": percentile(latencies, 0.99),
        "max_ms": latencies[-1],
        "accept_p50_ms": percentile(accepts, 0.50),
        "accept_p99_ms": percentile(accepts, 0.99),
        "accept_max_ms": accepts[-1],
        "late_starts": behind,
        "subscriber_received": received,
    }


# --------------------------------------------------------------------------------------------------
# orchestration and report


def run(sizes: Sizes, workdir: Path) -> dict[str, Any]:
    """All phases against one broker; a failed phase is recorded as an error and the others still run."""
    figures: dict[str, Any] = {"errors": {}}
    # Other work on this 2-vCPU machine skews every absolute figure (a test suite running nodes
    # alongside halved the ceiling once): measure how much CPU was not ours.
    busy0, own0, began = machine_busy_seconds(), own_cpu_seconds(), time.perf_counter()
    broker = Mosquitto(workdir / "broker")  # persistence off (the default)
    broker.start()
    node: NodeProcess | None = None
    try:
        version = re.search(r"mosquitto version (\S+) running", broker.log_text())
        figures["mosquitto"] = version.group(1) if version else "?"
        assert broker.pid is not None
        broker_pid = broker.pid

        def phase(name: str, action: Callable[[], dict[str, Any]]) -> None:
            print(f"  {name} ...", flush=True)
            began = time.perf_counter()
            try:
                figures[name] = action()
            except Exception as exc:
                figures["errors"][name] = f"{type(exc).__name__}: {exc}"
                print(f"  {name} FAILED: {exc}", flush=True)
            else:
                print(f"  {name} done in {time.perf_counter() - began:.1f} s", flush=True)

        # Preparation first, so the ceiling run just before the drain sees the machine as the drain will.
        data_dir = workdir / "node-data"
        phase("fill", lambda: fill_outbox(data_dir, "bench-node", sizes.drain))
        phase("ceiling_1", lambda: measure_ceiling(broker, workdir, sizes.ceiling, "1"))
        if "fill" in figures:
            node = drain_node = NodeProcess(workdir, data_dir, broker.url, "bench-node")
            with Subscriber(broker, event_topic("bench-node"), workdir / "sub-drain.txt") as sub:
                phase("drain", lambda: measure_drain(drain_node, sizes.drain, broker_pid))
                if "drain" in figures and sub.available:
                    figures["drain"]["subscriber_received"] = sub.wait_for(sizes.drain, 30.0)
                    figures["drain"]["subscriber_distinct"] = sub.distinct_seqs()
            if "drain" in figures:
                phase("idle", lambda: measure_idle(drain_node, sizes.idle_seconds, sizes.settle_seconds))
            figures["node_exit_code"] = drain_node.stop()
            node = None
        phase("ceiling_2", lambda: measure_ceiling(broker, workdir, sizes.ceiling, "2"))
        phase("live", lambda: measure_live(broker, workdir, sizes.live, sizes.producers))
        phase("latency", lambda: measure_latency(broker, workdir, sizes.latency_rate, sizes.latency_seconds))
    finally:
        if node is not None:
            node.stop()
        broker.stop()
    wall = time.perf_counter() - began
    other = (machine_busy_seconds() - busy0) - (own_cpu_seconds() - own0)
    figures["other_cpu_percent"] = max(0.0, 100 * other / wall)
    runs = [figures[k]["rate"] for k in ("ceiling_1", "ceiling_2") if k in figures]
    if runs:
        figures["ceiling"] = {"rate": max(runs), "runs": runs, "payload": CEILING_PAYLOAD}
    return figures


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "FAIL")


def report(figures: dict[str, Any], sizes: Sizes, quick: bool, wall: float) -> list[dict[str, Any]]:
    """Print the table; returns the judged rows (also written to --json)."""
    ceiling = figures.get("ceiling", {}).get("rate")
    drain, live, lat, idle = (figures.get(k) for k in ("drain", "live", "latency", "idle"))
    rows: list[dict[str, Any]] = []

    def row(label: str, value: str, target: str, ok: bool | None, note: str = "") -> None:
        rows.append({"figure": label, "value": value, "target": target, "result": _verdict(ok), "note": note})

    if ceiling:
        runs = " / ".join(f"{r:,.0f}" for r in figures["ceiling"]["runs"])
        row(
            "(a) ceiling: raw paho QoS 1, window 100",
            f"{ceiling:,.0f} msg/s",
            "baseline",
            None,
            f"runs {runs}",
        )

    def ratio_row(label: str, rate: float, wanted: float, extra: str = "") -> None:
        """A rate judged as a multiple of the ceiling measured in the same run."""
        target = wanted * ceiling if ceiling else None
        ratio = rate / ceiling if ceiling else None
        row(
            label,
            f"{rate:,.0f} ev/s",
            f">= {wanted} x (a) = {target:,.0f}" if target else "-",
            None if ratio is None else ratio >= wanted,
            f"{ratio:.2f} x (a){extra}" if ratio else "",
        )

    if drain:
        ratio_row(
            f"(b) drain: {drain['events']:,} backlog, node process",
            drain["rate"],
            DRAIN_RATIO_TARGET,
            f"; steady 10-90 % {drain['steady_rate']:,.0f} ev/s",
        )
        row(
            "    node RSS during drain (VmHWM)",
            f"{drain['hwm_rss_mb']:.1f} MB",
            f"<= {RSS_TARGET_MB:.0f} MB",
            drain["hwm_rss_mb"] <= RSS_TARGET_MB,
            f"sampled VmRSS peak {drain['peak_rss_mb']:.1f} MB",
        )
    if live:
        ratio_row(
            f"(c) live: {live['producers']} producers, durable, end to end", live["rate"], LIVE_RATIO_TARGET
        )
        row("    intake only (all accepts returned)", f"{live['intake_rate']:,.0f} ev/s", "-", None)
    if lat:
        row(
            f"(d) latency accept->PUBACK @ {lat['rate']:.0f}/s, p99",
            f"{lat['p99_ms']:.2f} ms",
            f"<= {P99_TARGET_MS:.0f} ms",
            lat["p99_ms"] <= P99_TARGET_MS,
            f"p50 {lat['p50_ms']:.2f} ms, max {lat['max_ms']:.2f} ms; accept alone p50 "
            f"{lat['accept_p50_ms']:.2f} / p99 {lat['accept_p99_ms']:.2f} / max "
            f"{lat['accept_max_ms']:.2f} ms",
        )
    if idle:
        row(
            f"(e) node idle CPU over {idle['seconds']:.0f} s",
            f"{idle['cpu_percent']:.2f} %",
            f"<= {IDLE_CPU_TARGET:.0f} %",
            idle["cpu_percent"] <= IDLE_CPU_TARGET,
            f"{idle['cpu_seconds']:.2f} s CPU (tick {idle['tick_seconds'] * 1000:.0f} ms)",
        )

    print()
    print(
        f"kiosk-edge relay benchmark{' (--quick)' if quick else ''}: mosquitto {figures.get('mosquitto')}, "
        f"paho-mqtt {paho.mqtt.__version__}, Python {platform.python_version()}, {os.cpu_count()} CPUs"
    )
    header = {"figure": "figure", "value": "value", "target": "target", "result": "result", "note": "note"}
    widths = {k: max(len(r[k]) for r in [header, *rows]) for k in ("figure", "value", "target", "result")}

    def fmt(r: dict[str, Any]) -> str:
        return (
            f"{r['figure']:<{widths['figure']}}  {r['value']:>{widths['value']}}  "
            f"{r['target']:<{widths['target']}}  {r['result']:<{widths['result']}}  {r['note']}"
        )

    print(fmt(header))
    print("-" * len(fmt(header)))
    for r in rows:
        print(fmt(r))
    print()
    fill = figures.get("fill")
    if fill:
        print(
            f"payloads: drain/live/latency mean {fill['mean_payload']:.1f} B (signed identity envelope), "
            f"ceiling {CEILING_PAYLOAD} B"
        )
    if drain:
        print(
            f"drain detail: {drain['seconds']:.2f} s from the first 'connected' poll "
            f"({drain['acknowledged_at_start']} already acknowledged then); outbox depth after "
            f"{drain['depth_after']}; {drain['status_polls']} status polls, "
            f"median {drain['status_poll_ms_median']:.1f} ms each"
        )
    checks = []
    for name, expected in (
        ("ceiling_1", sizes.ceiling),
        ("ceiling_2", sizes.ceiling),
        ("drain", sizes.drain),
        ("live", sizes.live),
        ("latency", None),
    ):
        got = figures.get(name, {}).get("subscriber_received")
        if got is None:
            continue
        distinct = figures[name].get("subscriber_distinct")
        want = expected if expected is not None else figures[name]["events"] + 1
        text = f"{name} {got:,}/{want:,}"
        if distinct is not None:
            text += f" ({distinct:,} distinct seq)"
        checks.append(text)
    if checks:
        print("subscriber (mosquitto_sub, QoS 1) received: " + "; ".join(checks))
    cpu = []
    for name, procs in (
        ("ceiling_1", ("bench", "broker")),
        ("drain", ("node", "broker")),
        ("live", ("bench", "broker")),
    ):
        if name in figures:
            cpu.append(name + " " + " / ".join(f"{p} {figures[name][p + '_cpu_percent']:.0f}" for p in procs))
    if cpu:
        print("CPU, % of one core: " + "; ".join(cpu))
    other = figures["other_cpu_percent"]
    print(
        f"other processes on the machine used {other:.0f} % of one core on average during the run"
        + ("  <- BUSY MACHINE: figures are skewed, run again" if other > OTHER_CPU_WARN else "")
    )
    if "node_exit_code" in figures:
        print(f"node stopped with exit code {figures['node_exit_code']}")
    for name, error in figures["errors"].items():
        print(f"ERROR in {name}: {error}")
    print(f"total wall time {wall:.0f} s")
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit 0 whatever the verdicts (it is a measurement), 2 if a phase broke."""
    parser = argparse.ArgumentParser(prog="python -m bench.relay", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="about a tenth of the sizes: a smoke run")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    # Relay/outbox warnings in (c)/(d) matter (a reconnect would explain a figure); the "standalone
    # node: generated a random pseudonymisation key" notice for each scratch data dir does not.
    logging.basicConfig(level=logging.WARNING, format="  [%(name)s] %(levelname)s %(message)s")
    logging.getLogger("edge.keys").setLevel(logging.ERROR)
    began = time.perf_counter()
    print(f"relay benchmark{' --quick' if args.quick else ''}: {sizes}", flush=True)
    with tempfile.TemporaryDirectory(prefix="kiosk-bench-") as tmp:
        figures = run(sizes, Path(tmp))
    wall = time.perf_counter() - began
    rows = report(figures, sizes, args.quick, wall)
    if args.json:
        figures.update(rows=rows, sizes=asdict(sizes), quick=args.quick, wall_seconds=wall)
        args.json.write_text(json.dumps(figures, indent=2, default=str) + "\n")
        print(f"figures written to {args.json}")
    return 2 if figures["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
