"""POS benchmark: durable sales/s with concurrent tills, and latency at a till's peak and at saturation.

One run, one machine, one fresh Mosquitto (so the relay publishes while the sales arrive):

(a) **baseline**: a bare Flask endpoint on the node's WSGI server that commits one row per request
    (``bench.pos_baseline``), driven by ``CLIENTS`` concurrent keep-alive clients;
(b) **throughput**: the real ``kiosk-edge run`` node, the same clients sending real sales (auth, strict
    validation, idempotency receipt, customer lookup, points, signed event committed before the answer);
(c) **peak latency**: one till at a steady 5 sales/s (absolute schedule), a member attached before every
    other sale, p50/p99;
then every sale is checked to have reached the broker (a ``mosquitto_sub``-free check: the node's
``/status`` acknowledged counter).

Targets (issue #5): p99 <= 50 ms at 5 sales/s; throughput >= 0.5 x the baseline in the same run.
Run: ``.venv/bin/python -m bench.pos`` (about 1.5 min) or ``--quick`` (about 25 s).
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.relay import BenchError, NodeProcess, percentile
from cloud_sync.codes import make_member_code
from edge.pos.pairing import Pairing
from edge.pos.possim import make_basket
from tests.support.broker import HOST, Mosquitto, free_port

CLIENTS = 8
PEAK_RATE = 5.0
P99_TARGET_MS = 50.0
RATIO_TARGET = 0.5


@dataclass(frozen=True)
class Sizes:
    """How much each phase sends."""

    baseline: int
    throughput: int
    peak_seconds: float


FULL = Sizes(baseline=6000, throughput=6000, peak_seconds=60.0)
QUICK = Sizes(baseline=1200, throughput=1200, peak_seconds=10.0)


class Client:
    """One keep-alive HTTP connection, like one till's integration."""

    def __init__(self, port: int, token: str | None = None) -> None:
        self._conn = http.client.HTTPConnection(HOST, port, timeout=30)
        self._auth = {"Authorization": f"Bearer {token}"} if token else {}

    def post(self, path: str, body: bytes, **headers: str) -> tuple[int, bytes]:
        self._conn.request(
            "POST", path, body=body, headers={"Content-Type": "application/json", **self._auth, **headers}
        )
        reply = self._conn.getresponse()
        return reply.status, reply.read()

    def close(self) -> None:
        self._conn.close()


def _baskets(count: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    return [json.dumps(make_basket(rng)).encode() for _ in range(count)]


def hammer(
    count: int, send: Callable[[Client, int], int], make_client: Callable[[], Client]
) -> dict[str, Any]:
    """``CLIENTS`` threads share ``count`` requests; each request's latency is recorded."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    next_index = iter(range(count))
    errors: list[BaseException] = []
    go = threading.Barrier(CLIENTS + 1)

    def worker() -> None:
        client = make_client()
        mine: list[float] = []
        seen: dict[int, int] = {}
        go.wait()
        try:
            while True:
                with lock:
                    i = next(next_index, None)
                if i is None:
                    break
                began = time.perf_counter()
                status = send(client, i)
                mine.append((time.perf_counter() - began) * 1000)
                seen[status] = seen.get(status, 0) + 1
        except BaseException as exc:  # reported after the join
            errors.append(exc)
        finally:
            client.close()
            with lock:
                latencies.extend(mine)
                for k, v in seen.items():
                    statuses[k] = statuses.get(k, 0) + v

    threads = [threading.Thread(target=worker) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    go.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise BenchError(f"a client failed: {errors[0]!r}")
    latencies.sort()
    return {
        "requests": count,
        "seconds": elapsed,
        "rate": count / elapsed,
        "p50_ms": percentile(latencies, 0.50),
        "p99_ms": percentile(latencies, 0.99),
        "max_ms": latencies[-1],
        "statuses": statuses,
    }


def measure_baseline(workdir: Path, count: int) -> dict[str, Any]:
    """(a) the bare commit endpoint, in its own process on the node's server class."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.pos_baseline", str(port), str(workdir / "baseline.sqlite3")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if b"ready" not in line:
            raise BenchError(f"the baseline server did not start: {line!r}")
        bodies = _baskets(count, 1)
        return hammer(count, lambda c, i: c.post("/commit", bodies[i])[0], lambda: Client(port))
    finally:
        proc.terminate()
        proc.wait(10)


def _pair(node: NodeProcess, data_dir: Path, pos_port: int) -> str:
    pairing = Pairing(data_dir / "local.sqlite3")
    try:
        code = pairing.new_code().code
    finally:
        pairing.close()
    client = Client(pos_port)
    try:
        status, body = client.post(
            "/pos/v1/pair", json.dumps({"code": code, "pos_id": "bench-till", "name": "bench"}).encode()
        )
    finally:
        client.close()
    if status != 201:
        raise BenchError(f"pairing failed: {status} {body!r}\n{node.log_tail()}")
    return str(json.loads(body)["token"])


def measure_throughput(pos_port: int, token: str, count: int) -> dict[str, Any]:
    """(b) the real sale path at saturation."""
    bodies = _baskets(count, 2)
    keys = [f"RC-{uuid.uuid4().hex[:20]}" for _ in range(count)]
    result = hammer(
        count,
        lambda c, i: c.post("/pos/v1/sales", bodies[i], **{"Idempotency-Key": keys[i]})[0],
        lambda: Client(pos_port, token),
    )
    if result["statuses"] != {201: count}:
        raise BenchError(f"not every sale was recorded: {result['statuses']}")
    return result


def measure_peak(pos_port: int, token: str, seconds: float) -> dict[str, Any]:
    """(c) one till at 5 sales/s; a member attached before every other sale (not timed)."""
    count = int(seconds * PEAK_RATE)
    bodies = _baskets(count, 3)
    client = Client(pos_port, token)
    latencies: list[float] = []
    try:
        started = time.monotonic()
        for i in range(count):
            delay = started + i / PEAK_RATE - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if i % 2 == 0:
                code = make_member_code(i + 1)
                status, _ = client.post("/pos/v1/till/customer", json.dumps({"member_code": code}).encode())
                if status != 200:
                    raise BenchError(f"attaching a member failed: {status}")
            began = time.perf_counter()
            status, body = client.post("/pos/v1/sales", bodies[i], **{"Idempotency-Key": f"RC-PEAK-{i:06d}"})
            latencies.append((time.perf_counter() - began) * 1000)
            if status != 201:
                raise BenchError(f"a peak sale failed: {status} {body!r}")
    finally:
        client.close()
    latencies.sort()
    return {
        "sales": count,
        "rate": PEAK_RATE,
        "p50_ms": percentile(latencies, 0.50),
        "p99_ms": percentile(latencies, 0.99),
        "max_ms": latencies[-1],
    }


def run(sizes: Sizes, workdir: Path) -> dict[str, Any]:
    """Every phase against one broker and one node."""
    figures: dict[str, Any] = {}
    print("  baseline ...", file=sys.stderr, flush=True)
    figures["baseline"] = measure_baseline(workdir, sizes.baseline)
    with Mosquitto(workdir / "broker") as broker:
        data_dir = workdir / "node-data"
        node = NodeProcess(workdir, data_dir, broker.url, "bench-pos")
        pos_port = int(node.env["KIOSK_EDGE_POS__PORT"])
        node.start()
        try:
            deadline = time.monotonic() + 20
            while (status := node.status()) is None or not status["broker"]["connected"]:
                node.check_alive()
                if time.monotonic() > deadline:
                    raise BenchError(f"the node did not come up:\n{node.log_tail()}")
                time.sleep(0.1)
            token = _pair(node, data_dir, pos_port)
            print("  throughput ...", file=sys.stderr, flush=True)
            figures["throughput"] = measure_throughput(pos_port, token, sizes.throughput)
            print("  peak latency ...", file=sys.stderr, flush=True)
            figures["peak"] = measure_peak(pos_port, token, sizes.peak_seconds)
            expected = sizes.throughput + figures["peak"]["sales"]
            deadline = time.monotonic() + 60
            while (node.status() or {}).get("outbox", {}).get("by_type", {}).get("sale", 0):
                if time.monotonic() > deadline:
                    raise BenchError("the sales did not drain to the broker within 60 s")
                time.sleep(0.2)
            figures["delivered_sales"] = expected
            figures["node_rss_kb"], figures["node_hwm_kb"] = node.memory_kb()
        finally:
            figures["node_exit"] = node.stop()
    return figures


def report(figures: dict[str, Any], quick: bool) -> None:
    """The table, with ratios against the same run's baseline."""
    base, thr, peak = figures["baseline"], figures["throughput"], figures["peak"]
    ratio = thr["rate"] / base["rate"]
    rows = [
        (
            "(a) baseline: bare Flask commit, 8 clients",
            f"{base['rate']:,.0f} req/s",
            "baseline",
            "n/a",
            f"p50 {base['p50_ms']:.1f} / p99 {base['p99_ms']:.1f} ms",
        ),
        (
            "(b) sales: 8 clients, durable, end to end",
            f"{thr['rate']:,.0f} sales/s",
            f">= {RATIO_TARGET} x (a)",
            "PASS" if ratio >= RATIO_TARGET else "FAIL",
            f"{ratio:.2f} x (a); saturation p50 {thr['p50_ms']:.1f} / p99 {thr['p99_ms']:.1f} ms",
        ),
        (
            f"(c) latency at {PEAK_RATE:g} sales/s, p99",
            f"{peak['p99_ms']:.2f} ms",
            f"<= {P99_TARGET_MS:g} ms",
            "PASS" if peak["p99_ms"] <= P99_TARGET_MS else "FAIL",
            f"p50 {peak['p50_ms']:.2f} ms, max {peak['max_ms']:.2f} ms, {peak['sales']} sales",
        ),
    ]
    print(f"\nkiosk-edge POS benchmark{' (--quick)' if quick else ''}, {CLIENTS} clients")
    print(f"{'figure':<46} {'value':>14}  {'target':<14} {'result':<7} note")
    print("-" * 100)
    for name, value, target, verdict, note in rows:
        print(f"{name:<46} {value:>14}  {target:<14} {verdict:<7} {note}")
    print(
        f"\nall {figures['delivered_sales']:,} sales left the outbox for the broker; node RSS at the end "
        f"{figures['node_rss_kb'] / 1024:.1f} MB (peak {figures['node_hwm_kb'] / 1024:.1f} MB); "
        f"node exit code {figures['node_exit']}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pos", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="about a fifth of the sizes: a smoke run")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    with tempfile.TemporaryDirectory(prefix="bench-pos-") as tmp:
        try:
            figures = run(sizes, Path(tmp))
        except BenchError as exc:
            print(f"bench.pos: {exc}", file=sys.stderr)
            return 2
    report(figures, args.quick)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
