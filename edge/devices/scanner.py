"""The USB barcode scanner back end: a keyboard-wedge HID device read with evdev, grabbed exclusively.

Why grab: a keyboard-wedge scanner is a keyboard to the kernel. Without ``EVIOCGRAB`` every scan would
also be typed into whatever has focus (the kiosk's Chromium, a console login). The grab is released
and the device closed in ``finally`` on every path, or the scanner stays dead for the rest of the
system until it is replugged.

One thread per scanner: it finds the device (its configured path or udev symlink first, else the first
input device whose USB vendor/product and name match), grabs it, and waits in ``select()`` on the
device and on a wake pipe, so :meth:`EvdevScanner.close` returns within milliseconds. When the scanner
is unplugged (``ENODEV``) or absent at start, the thread looks again every ``retry_interval`` seconds
(1 s) without busy-looping; plugging it back in resumes scanning with no restart.

evdev is imported only inside functions here, so the node imports this module on any machine. Scanned
text is never logged (it may be a loyalty code); callback exceptions are logged without their message
for the same reason.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import logging
import os
import select
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

from edge.devices import keymaps
from edge.devices.base import Device, DeviceState, ScanHandler
from edge.devices.scandecode import (
    DEFAULT_MAX_LENGTH,
    DEFAULT_TERMINATORS,
    DEFAULT_TIMEOUT,
    ScanDecoder,
    ScanResult,
)

log = logging.getLogger(__name__)

ScanErrorHandler = Callable[[str, str], object]
"""``on_error(reason, device_name)``: a rejected scan; the reason never contains scanned text."""

RETRY_INTERVAL: Final = 1.0
JOIN_TIMEOUT: Final = 2.0
_GONE_ERRNOS: Final = frozenset({errno.ENODEV, errno.ENOENT, errno.ENXIO})


class EventLike(Protocol):
    """What the loop reads from a device: the fields of ``evdev.InputEvent``."""

    @property
    def sec(self) -> int: ...
    @property
    def usec(self) -> int: ...
    @property
    def type(self) -> int: ...
    @property
    def code(self) -> int: ...
    @property
    def value(self) -> int: ...


class DeviceLike(Protocol):
    """The part of ``evdev.InputDevice`` the loop uses; tests inject a fake."""

    def fileno(self) -> int:
        """A descriptor select() can wait on."""
        ...

    def read(self) -> Iterable[EventLike]:
        """The pending events; BlockingIOError if none, OSError(ENODEV) once unplugged."""
        ...

    def grab(self) -> None:
        """Take the device exclusively (EVIOCGRAB)."""

    def ungrab(self) -> None:
        """Release the exclusive grab."""

    def close(self) -> None:
        """Close the descriptor."""


@dataclass(frozen=True, slots=True)
class ScannerMatch:
    """Which input device is the scanner; at least one criterion, or we would grab the keyboard.

    ``path`` (e.g. ``/dev/kiosk-scanner`` from our udev rule, or ``/dev/input/by-id/...``) is tried
    first and trusted as is. Otherwise every input device with an Enter key is checked against all the
    criteria given: ``vendor``/``product`` (USB ids) and ``name``, a case-insensitive glob.
    """

    vendor: int | None = None
    product: int | None = None
    name: str | None = None
    path: str | None = None

    def __post_init__(self) -> None:
        if self.vendor is None and self.product is None and self.name is None and self.path is None:
            raise ValueError("a scanner match needs a vendor/product id, a name pattern or a device path")
        for label, value in (("vendor", self.vendor), ("product", self.product)):
            if value is not None and not 0 <= value <= 0xFFFF:
                raise ValueError(f"scanner {label} id must be 0..0xffff, not {value!r}")

    @property
    def can_search(self) -> bool:
        """Whether the ids or name allow looking through all input devices (not just ``path``)."""
        return self.vendor is not None or self.product is not None or self.name is not None

    def matches(self, *, vendor: int, product: int, name: str) -> bool:
        """Whether a device with these ids and name is the scanner (``path`` is not considered)."""
        if not self.can_search:
            return False
        if self.vendor is not None and vendor != self.vendor:
            return False
        if self.product is not None and product != self.product:
            return False
        return self.name is None or fnmatch.fnmatchcase(name.casefold(), self.name.casefold())


@dataclass(frozen=True, slots=True)
class ScannerInfo:
    """One input device as ``doctor`` shows it."""

    path: str
    name: str
    vendor_product: str
    has_enter_key: bool
    matches: bool
    error: str | None = None


def _has_enter_key(device: Any) -> bool:
    """Keyboard-like: a scanner's keyboard interface has Enter; its consumer-control twin does not."""
    try:
        keys = device.capabilities().get(keymaps.EV_KEY, [])
    except OSError:
        return False
    return keymaps.KEY_ENTER in keys


def _same_file(a: str, b: str) -> bool:
    try:
        return Path(a).samefile(b)
    except OSError:
        return False


def find_device(
    match: ScannerMatch,
    *,
    list_devices: Callable[[], Iterable[str]] | None = None,
    open_path: Callable[[str], Any] | None = None,
) -> Any | None:
    """Open the matching evdev device, or None if there is none; OSError if it cannot be opened.

    ``list_devices`` and ``open_path`` default to evdev's ``list_devices`` and ``InputDevice``; tests
    pass fakes. A device that vanishes while we look is skipped.
    """
    if list_devices is None or open_path is None:
        import evdev

        list_devices = list_devices or evdev.list_devices
        open_path = open_path or evdev.InputDevice
    if match.path is not None:
        try:
            return open_path(match.path)
        except OSError as exc:
            if exc.errno not in _GONE_ERRNOS:
                raise
    if not match.can_search:
        return None
    for path in sorted(list_devices()):
        try:
            device = open_path(path)
        except OSError:
            continue  # gone meanwhile, or not ours to read (doctor shows which)
        if match.matches(
            vendor=device.info.vendor, product=device.info.product, name=device.name
        ) and _has_enter_key(device):
            return device
        device.close()
    return None


def list_scanners(
    match: ScannerMatch | None = None,
    *,
    list_devices: Callable[[], Iterable[str]] | None = None,
    open_path: Callable[[str], Any] | None = None,
) -> list[ScannerInfo]:
    """Every input device with its ids and whether ``match`` selects it: what ``doctor`` prints.

    Devices that cannot be opened (typically: the user is not in the ``input`` group) are listed with
    the error, since that is exactly what the installer needs to see.
    """
    if list_devices is None or open_path is None:
        import evdev

        list_devices = list_devices or evdev.list_devices
        open_path = open_path or evdev.InputDevice
    found: list[ScannerInfo] = []
    for path in sorted(list_devices()):
        try:
            device = open_path(path)
        except OSError as exc:
            found.append(ScannerInfo(path, "?", "?", False, False, exc.strerror or str(exc)))
            continue
        try:
            vendor, product, name = device.info.vendor, device.info.product, device.name
            enter = _has_enter_key(device)
            by_path = match is not None and match.path is not None and _same_file(match.path, path)
            by_ids = match is not None and match.matches(vendor=vendor, product=product, name=name) and enter
            found.append(ScannerInfo(path, name, f"{vendor:04x}:{product:04x}", enter, by_path or by_ids))
        finally:
            device.close()
    return found


class EvdevScanner:
    """The real scanner (Device protocol): one thread, one grabbed device, callbacks per scan.

    ``on_scan(text, name)`` gets every accepted scan, ``on_error(reason, name)`` every rejected one;
    both run on the scanner's thread, and an exception from them is logged and the loop goes on.
    ``open_device`` replaces the evdev search (tests inject fakes; it returns None while absent).
    ``clock`` must be the clock of the event timestamps: CLOCK_REALTIME (``time.time``) for evdev.
    """

    def __init__(
        self,
        on_scan: ScanHandler,
        on_error: ScanErrorHandler,
        *,
        match: ScannerMatch,
        layout: str = "us",
        name: str = "scanner",
        timeout: float = DEFAULT_TIMEOUT,
        max_length: int = DEFAULT_MAX_LENGTH,
        terminators: Iterable[int] = DEFAULT_TERMINATORS,
        retry_interval: float = RETRY_INTERVAL,
        open_device: Callable[[], DeviceLike | None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.match = match
        self._on_scan = on_scan
        self._on_error = on_error
        self._terminators = frozenset(terminators)
        # Build one decoder now so a bad layout or limit fails here, in configuration, not in the thread.
        ScanDecoder(layout, timeout=timeout, max_length=max_length, terminators=self._terminators)
        self._layout = layout
        self._timeout = timeout
        self._max_length = max_length
        self._retry = retry_interval
        self._open_device = open_device or (lambda: find_device(match))
        self._clock = clock
        self._state: DeviceState = "absent"
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._wake: tuple[int, int] | None = None
        self._lock = threading.Lock()

    @property
    def state(self) -> DeviceState:
        """``present`` while grabbed, ``absent`` while not found, ``error`` when it cannot be used."""
        return self._state

    def start(self) -> None:
        """Start the scanner thread (idempotent); never raises because the scanner is missing."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stopping.clear()
            read_end, write_end = os.pipe()
            os.set_blocking(write_end, False)
            self._wake = (read_end, write_end)
            self._thread = threading.Thread(
                target=self._run, args=(read_end,), name=f"scanner-{self.name}", daemon=True
            )
            self._thread.start()

    def close(self) -> None:
        """Stop the thread (ungrabbing the device) and wait for it; idempotent.

        A scan cut off by close() is dropped without a callback: the node is shutting down.
        """
        with self._lock:
            thread, wake = self._thread, self._wake
            self._thread = None
            self._wake = None
            self._stopping.set()
            if wake is not None:
                with contextlib.suppress(BlockingIOError):
                    os.write(wake[1], b"x")
            if thread is not None:
                thread.join(JOIN_TIMEOUT)
                if thread.is_alive():
                    # Leave the pipe open: the thread may still select() on it.
                    log.error("scanner %s: thread did not stop within %.0f s", self.name, JOIN_TIMEOUT)
                    self._state = "error"
                    return
            if wake is not None:
                os.close(wake[0])
                os.close(wake[1])
            self._state = "absent"

    def __enter__(self) -> EvdevScanner:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # the thread ----------------------------------------------------------------------------------

    def _run(self, wake_fd: int) -> None:
        reported: str | None = None  # what we last logged, so a long absence logs once

        def report(message: str, level: int) -> None:
            nonlocal reported
            if message != reported:
                log.log(level, "scanner %s: %s", self.name, message)
                reported = message

        while not self._stopping.is_set():
            try:
                device = self._open_device()
            except OSError as exc:
                self._state = "error"
                report(f"cannot open the device: {exc.strerror or exc}", logging.ERROR)
                self._stopping.wait(self._retry)
                continue
            except Exception as exc:
                self._state = "error"
                report(f"looking for the device failed: {type(exc).__name__}", logging.ERROR)
                self._stopping.wait(self._retry)
                continue
            if device is None:
                self._state = "absent"
                report(f"not found (looking every {self._retry:g} s)", logging.WARNING)
                self._stopping.wait(self._retry)
                continue
            outcome = self._serve(device, wake_fd)
            if outcome is not None:
                state, message, level = outcome
                self._state = state
                report(message, level)
            else:
                reported = None
            if not self._stopping.is_set():
                self._stopping.wait(self._retry)

    def _serve(self, device: DeviceLike, wake_fd: int) -> tuple[DeviceState, str, int] | None:
        """Grab, read until stopped or unplugged, always ungrab and close; returns what to report."""
        grabbed = False
        decoder = ScanDecoder(
            self._layout, timeout=self._timeout, max_length=self._max_length, terminators=self._terminators
        )
        try:
            device.grab()
            grabbed = True
            self._state = "present"
            log.info("scanner %s: device grabbed", self.name)
            self._pump(device, decoder, wake_fd)
            return None
        except OSError as exc:
            if exc.errno in _GONE_ERRNOS:
                self._deliver(decoder.reset("scanner disconnected in the middle of a scan"))
                return "absent", "disconnected", logging.WARNING
            if not grabbed and exc.errno == errno.EBUSY:
                return "error", "grabbed by another process (EBUSY)", logging.ERROR
            return "error", f"device error: {exc.strerror or exc}", logging.ERROR
        except Exception as exc:  # a bug must not kill the thread silently
            log.exception("scanner %s: unexpected %s in the read loop", self.name, type(exc).__name__)
            return "error", "read loop failed", logging.ERROR
        finally:
            if grabbed:
                try:
                    device.ungrab()
                except OSError as exc:  # expected once unplugged
                    log.debug("scanner %s: ungrab: %s", self.name, exc)
            try:
                device.close()
            except OSError as exc:
                log.debug("scanner %s: close: %s", self.name, exc)

    def _pump(self, device: DeviceLike, decoder: ScanDecoder, wake_fd: int) -> None:
        """Read and decode until close() wakes us; OSError when the device goes away."""
        fd = device.fileno()
        feed = decoder.feed
        while not self._stopping.is_set():
            deadline = decoder.deadline
            wait = None if deadline is None else max(0.0, deadline - self._clock()) + 0.001
            readable, _, _ = select.select([fd, wake_fd], [], [], wait)
            if wake_fd in readable:
                return
            if fd in readable:
                try:
                    for event in device.read():
                        results = feed(event.type, event.code, event.value, event.sec + event.usec / 1e6)
                        if results:
                            self._deliver(results)
                except BlockingIOError:
                    pass
            results = decoder.flush(self._clock())
            if results:
                self._deliver(results)

    def _deliver(self, results: list[ScanResult]) -> None:
        for result in results:
            try:
                if result.text is not None:
                    self._on_scan(result.text, self.name)
                else:
                    self._on_error(result.error or "rejected", self.name)
            except Exception as exc:
                # The message may quote the scanned code: log the type and where, never the text.
                where = "".join(traceback.format_tb(exc.__traceback__))
                log.error(
                    "scanner %s: %s callback raised %s (message withheld: it may contain the scan)\n%s",
                    self.name,
                    "on_scan" if result.text is not None else "on_error",
                    type(exc).__name__,
                    where,
                )


if TYPE_CHECKING:

    def _implements_device(scanner: EvdevScanner) -> Device:
        return scanner  # mypy checks here that EvdevScanner satisfies the Device protocol
