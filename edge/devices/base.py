"""The small protocols every device back end implements (gpiozero's pin-factory habit).

Devices never know about events or MQTT: they report what happened to a callback and the node's
intake turns that into business events. Real back ends (pyscard, evdev, gpiozero) arrive with the
device issue; the simulated ones below let the node run and be tested on any machine.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, Protocol

DeviceState = Literal["present", "absent", "simulated", "error"]

TapHandler = Callable[[bytes, str], object]
ScanHandler = Callable[[str, str], object]
ButtonHandler = Callable[[str], object]


class Device(Protocol):
    """Anything with a lifecycle and a state the status page can show."""

    name: str

    def start(self) -> None:
        """Begin watching the device; must not raise when the hardware is missing."""

    def close(self) -> None:
        """Stop and release the device; idempotent."""

    @property
    def state(self) -> DeviceState:
        """What the status page and ``doctor`` report."""
        ...
