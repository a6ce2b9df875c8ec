"""Simulated devices: the control endpoint injects what a real reader, scanner or button would report."""

from __future__ import annotations

from edge.devices.base import ButtonHandler, DeviceState, ScanHandler, TapHandler


class SimCardReader:
    """Stands in for the NFC reader; ``tap`` reports a card UID as the real back end would."""

    def __init__(self, on_tap: TapHandler, name: str = "sim-reader") -> None:
        self.name = name
        self._on_tap = on_tap
        self._open = False

    def start(self) -> None:
        """Ready to take injected taps."""
        self._open = True

    def close(self) -> None:
        """No further taps are delivered."""
        self._open = False

    @property
    def state(self) -> DeviceState:
        """Always ``simulated`` while open."""
        return "simulated" if self._open else "absent"

    def tap(self, uid: bytes) -> object:
        """Deliver one card tap; returns what the intake returned (the accepted event)."""
        if not self._open:
            raise RuntimeError("the simulated reader is closed")
        return self._on_tap(uid, self.name)


class SimScanner:
    """Stands in for the USB barcode scanner."""

    def __init__(self, on_scan: ScanHandler, name: str = "sim-scanner") -> None:
        self.name = name
        self._on_scan = on_scan
        self._open = False

    def start(self) -> None:
        """Ready to take injected scans."""
        self._open = True

    def close(self) -> None:
        """No further scans are delivered."""
        self._open = False

    @property
    def state(self) -> DeviceState:
        """Always ``simulated`` while open."""
        return "simulated" if self._open else "absent"

    def scan(self, code: str) -> object:
        """Deliver one decoded scan."""
        if not self._open:
            raise RuntimeError("the simulated scanner is closed")
        return self._on_scan(code, self.name)


class SimButton:
    """Stands in for the assistance button on the GPIO header."""

    def __init__(self, on_press: ButtonHandler, name: str = "sim-button") -> None:
        self.name = name
        self._on_press = on_press
        self._open = False

    def start(self) -> None:
        """Ready to take injected presses."""
        self._open = True

    def close(self) -> None:
        """No further presses are delivered."""
        self._open = False

    @property
    def state(self) -> DeviceState:
        """Always ``simulated`` while open."""
        return "simulated" if self._open else "absent"

    def press(self) -> object:
        """Deliver one press."""
        if not self._open:
            raise RuntimeError("the simulated button is closed")
        return self._on_press(self.name)


class MissingDevice:
    """A device whose real back end is not available on this machine: reported absent, never fails."""

    def __init__(self, name: str) -> None:
        self.name = name

    def start(self) -> None:
        """Nothing to watch."""

    def close(self) -> None:
        """Nothing to release."""

    @property
    def state(self) -> DeviceState:
        """Always ``absent``."""
        return "absent"
