"""Scan decode benchmark: how many 13-digit barcode scans per second the key-event decoder handles.

Run from the repository root::

    .venv/bin/python -m bench.scan_decode [--scans N] [--repeat R] [--json PATH]

Each scan is the stream a real keyboard-wedge scanner sends for a GTIN-13 and Enter: per key
``EV_MSC/MSC_SCAN``, ``EV_KEY`` down, ``EV_SYN``, ``EV_MSC/MSC_SCAN``, ``EV_KEY`` up, ``EV_SYN`` (the
kernel sends one SYN_REPORT per HID report, so down and up each get their own MSC_SCAN and SYN), 84
events per scan. The events are built before the clock starts; only decoding is timed. Two figures:

(a) ``ScanDecoder.feed`` called with (type, code, value, timestamp) tuples: the decoder alone.
(b) the device loop's inner step on ``evdev.InputEvent`` objects: attribute reads, the timestamp
    computed from sec/usec, and ``feed``; what the scanner thread really costs per event.

The best of ``--repeat`` runs counts (the least disturbed by the rest of the machine). Every decoded
scan is checked against the code that was typed, so a fast but wrong decoder cannot pass. Exit code 0
whatever the verdict (it is a measurement), 2 if the decoder produced wrong results.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from evdev import InputEvent, ecodes

from edge.devices.scandecode import ScanDecoder

TARGET_SCANS_PER_S = 10_000
DIGIT_KEYS = [ecodes.KEY_0, ecodes.KEY_1, ecodes.KEY_2, ecodes.KEY_3, ecodes.KEY_4]
DIGIT_KEYS += [ecodes.KEY_5, ecodes.KEY_6, ecodes.KEY_7, ecodes.KEY_8, ecodes.KEY_9]
HID_USAGE = {code: 0x70000 | (0x27 if d == 0 else 0x1E + d - 1) for d, code in enumerate(DIGIT_KEYS)}
HID_USAGE[ecodes.KEY_ENTER] = 0x70028
RawEvent = tuple[int, int, int, int, int]
KEY_GAP_US = 1_000  # 1 ms between key events, within the decoder's 50 ms timeout
EVENTS_PER_SCAN = 14 * 2 * 3  # 13 digits + Enter, down and up, each MSC_SCAN + EV_KEY + SYN


def gtin13(rng: random.Random) -> str:
    """A random GTIN-13 with a correct check digit."""
    body = "".join(rng.choice("0123456789") for _ in range(12))
    total = sum((3 if i % 2 else 1) * int(d) for i, d in enumerate(body))
    return body + str((10 - total) % 10)


def scan_events(codes: list[str]) -> Iterator[RawEvent]:
    """The events of ``codes`` as (sec, usec, type, code, value), as the kernel delivers them."""
    now_us = 1_700_000_000 * 1_000_000
    for code in codes:
        keys = [DIGIT_KEYS[int(d)] for d in code] + [ecodes.KEY_ENTER]
        for key in keys:
            for value in (1, 0):
                sec, usec = divmod(now_us, 1_000_000)
                yield (sec, usec, ecodes.EV_MSC, ecodes.MSC_SCAN, HID_USAGE[key])
                yield (sec, usec, ecodes.EV_KEY, key, value)
                yield (sec, usec, ecodes.EV_SYN, ecodes.SYN_REPORT, 0)
                now_us += KEY_GAP_US
        now_us += 200_000  # 200 ms between scans


def prepare_tuples(events: Iterable[RawEvent]) -> list[tuple[int, int, int, float]]:
    """(a)'s input: the (type, code, value, timestamp) arguments of feed()."""
    return [(t, c, v, s + u / 1e6) for s, u, t, c, v in events]


def prepare_input_events(events: Iterable[RawEvent]) -> list[InputEvent]:
    """(b)'s input: what ``InputDevice.read()`` yields."""
    return [InputEvent(*e) for e in events]


def run_tuples(prepared: list[tuple[int, int, int, float]]) -> tuple[float, list[str | None]]:
    """(a): feed() on prepared tuples; returns seconds and the decoded texts."""
    decoded: list[str | None] = []
    feed = ScanDecoder("us").feed
    began = time.perf_counter()
    for event_type, code, value, timestamp in prepared:
        results = feed(event_type, code, value, timestamp)
        if results:
            decoded.extend(r.text for r in results)
    return time.perf_counter() - began, decoded


def run_input_events(objects: list[InputEvent]) -> tuple[float, list[str | None]]:
    """(b): the scanner thread's inner step on evdev.InputEvent objects."""
    decoded: list[str | None] = []
    feed = ScanDecoder("us").feed
    began = time.perf_counter()
    for event in objects:
        results = feed(event.type, event.code, event.value, event.sec + event.usec / 1e6)
        if results:
            decoded.extend(r.text for r in results)
    return time.perf_counter() - began, decoded


def main(argv: list[str] | None = None) -> int:
    """Measure, print the table, optionally write JSON; exit 2 only if decoding was wrong."""
    parser = argparse.ArgumentParser(prog="python -m bench.scan_decode", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scans", type=int, default=20_000, help="scans per run (default 20,000)")
    parser.add_argument("--repeat", type=int, default=5, help="runs per figure; the best counts (default 5)")
    parser.add_argument("--seed", type=int, default=1, help="random seed for the GTINs")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures as JSON")
    args = parser.parse_args(argv)

    rng = random.Random(args.seed)
    codes = [gtin13(rng) for _ in range(args.scans)]
    n_events = args.scans * EVENTS_PER_SCAN
    print(
        f"scan decode benchmark: {args.scans:,} GTIN-13 scans, {n_events:,} events "
        f"({EVENTS_PER_SCAN} per scan), best of {args.repeat}; Python {platform.python_version()}",
        flush=True,
    )
    figures: dict[str, Any] = {"scans": args.scans, "events": n_events, "repeat": args.repeat}
    wrong = False
    rows = []
    for key, label, prepare, runner in (
        ("tuples", "(a) ScanDecoder.feed on tuples", prepare_tuples, run_tuples),
        ("input_events", "(b) device-loop step on evdev.InputEvent", prepare_input_events, run_input_events),
    ):
        prepared: Any = prepare(scan_events(codes))  # built before the clock starts
        assert len(prepared) == n_events
        times = []
        for _ in range(args.repeat):
            seconds, decoded = runner(prepared)
            if decoded != codes:
                wrong = True
                print(f"ERROR: {label} decoded {len(decoded)} scans, not the {len(codes)} typed", flush=True)
            times.append(seconds)
        del prepared
        best = min(times)
        rate = args.scans / best
        verdict = "PASS" if rate >= TARGET_SCANS_PER_S and not wrong else "FAIL"
        figures[key] = {
            "scans_per_s": rate,
            "events_per_s": n_events / best,
            "us_per_scan": best / args.scans * 1e6,
            "runs_s": times,
            "result": verdict,
        }
        rows.append((label, f"{rate:,.0f} scans/s", f">= {TARGET_SCANS_PER_S:,} scans/s", verdict))
        rows.append(("    per event", f"{best / n_events * 1e9:,.0f} ns", "", ""))

    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    print()
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    print()
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
        print(f"figures written to {args.json}")
    return 2 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
