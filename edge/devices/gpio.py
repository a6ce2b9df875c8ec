"""LEDs, buzzer and the assistance button on the Pi's GPIO header, through gpiozero.

gpiozero is imported only inside the functions of this module, so the node, its tests and its tools
run on machines without it (or without a usable pin driver): there the devices report ``absent`` and
every call becomes a no-op.

Default wiring (BCM numbers; a HAT-less Pi 4/5, each part to a free GPIO and a ground pin; every pin
is optional, ``None`` = not fitted):

=========  ====  ============  =====================================================
part       BCM   header pin    meaning
=========  ====  ============  =====================================================
green LED  17    11            online: events reach the broker
amber LED  27    13            offline: broker unreachable, events queued on the node
red LED    22    15            fault: a reader is missing or the outbox alarm is on
buzzer     23    16            active buzzer (on/off, no tone), high = sounding
button     24    18            to ground, internal pull-up: pressed = low
=========  ====  ============  =====================================================

Patterns are chosen so a cashier can tell them apart at a glance, and each is one of gpiozero's own
background blink/beep threads (``LED.blink``, ``Buzzer.beep``): this module starts no threads.

Pin factory: every constructor takes ``pin_factory`` (tests pass ``MockFactory()``); ``None`` means
gpiozero's own default selection (``GPIOZERO_PIN_FACTORY``, else lgpio → RPi.GPIO → pigpio → native).
Its fall-back warnings are collected and folded into one log line instead of being emitted, because a
node on a machine without GPIO is a normal, supported case and not worth a warning per driver.
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from edge.devices.base import ButtonHandler, DeviceState

if TYPE_CHECKING:
    from gpiozero.pins import Factory

log = logging.getLogger(__name__)

NodeStatus = Literal["online", "queueing", "fault", "starting"]
Signal = Literal["tap_ok", "unknown_card", "error", "assist"]
LedRole = Literal["led_green", "led_amber", "led_red"]

LED_ROLES: tuple[LedRole, ...] = ("led_green", "led_amber", "led_red")
#: The fields of ``GpioPins`` that name a pin, in report order.
PART_ROLES: tuple[str, ...] = (*LED_ROLES, "buzzer", "button")


@dataclass(frozen=True)
class Blink:
    """An LED blinking forever: seconds on, seconds off."""

    on_s: float
    off_s: float


@dataclass(frozen=True)
class Beep:
    """A buzzer pattern: ``n`` beeps of ``on_s`` seconds with ``off_s`` seconds between them."""

    on_s: float
    off_s: float
    n: int


LedPattern: TypeAlias = Literal["on", "off"] | Blink

#: What each LED does for each node status. Exactly one LED is ever active, so a single glance (or a
#: photo sent to support) says which state the node is in.
STATUS_PATTERNS: Mapping[NodeStatus, Mapping[LedRole, LedPattern]] = {
    # steady green: all is well
    "online": {"led_green": "on", "led_amber": "off", "led_red": "off"},
    # slow amber blink (1 Hz): not an error the cashier must act on, events are safe in the outbox
    "queueing": {"led_green": "off", "led_amber": Blink(0.5, 0.5), "led_red": "off"},
    # steady red: someone has to look at the node
    "fault": {"led_green": "off", "led_amber": "off", "led_red": "on"},
    # quick green flicker while the node comes up, so a booting node never looks dead or healthy
    "starting": {"led_green": Blink(0.15, 0.15), "led_amber": "off", "led_red": "off"},
}

#: The buzzer pattern of each signal. An active buzzer has one pitch, so signals differ by rhythm.
SIGNAL_PATTERNS: Mapping[Signal, Beep] = {
    "tap_ok": Beep(0.08, 0.0, 1),  # one short beep: card or code accepted
    "unknown_card": Beep(0.08, 0.08, 2),  # two short beeps: read, but not a card we know
    "error": Beep(0.4, 0.0, 1),  # one long beep: something went wrong, ask the cashier
    "assist": Beep(0.03, 0.03, 3),  # quick chirp: the assistance request went out
}


@dataclass(frozen=True)
class GpioPins:
    """Which BCM pins the parts are wired to (``None`` = not fitted) and how they are wired."""

    led_green: int | None = 17
    led_amber: int | None = 27
    led_red: int | None = 22
    buzzer: int | None = 23
    button: int | None = 24
    buzzer_active_high: bool = True
    #: True: the button connects the pin to ground (internal pull-up, pressed = low).
    button_pull_up: bool = True
    #: Contact bounce to ignore after a press, seconds.
    button_bounce_s: float = 0.05

    def __post_init__(self) -> None:
        # Catch wiring mistakes when the configuration is loaded, not when the first LED fails.
        if self.button_bounce_s < 0:
            raise ValueError(f"button_bounce_s must be >= 0, got {self.button_bounce_s}")
        seen: dict[int, str] = {}
        for role, pin in self.assigned().items():
            if pin < 0:
                raise ValueError(f"{role}: pin {pin} is not a BCM pin number")
            if pin in seen:
                raise ValueError(f"{role} and {seen[pin]} are both wired to GPIO{pin}")
            seen[pin] = role

    def assigned(self) -> dict[str, int]:
        """The fitted parts and their pins, by field name."""
        return {role: pin for role in PART_ROLES if (pin := getattr(self, role)) is not None}


# -- pin factory ---------------------------------------------------------------------------------------


def _resolve_factory(pin_factory: Factory | None) -> tuple[Any, str | None]:
    """The factory to use and, if there is none, gpiozero's reason in one line.

    gpiozero reports each driver it skips with a ``PinFactoryFallback`` warning; those are the useful
    part of the reason ("No module named 'lgpio'"), so they are recorded and joined here rather than
    emitted (pytest's filterwarnings=error, and operators, see one line instead of four warnings).
    ``catch_warnings`` swaps process-wide state: this runs once per device start, never per event.
    """
    if pin_factory is not None:
        return pin_factory, None
    try:
        from gpiozero import Device
    except ImportError as exc:
        return None, f"gpiozero is not installed ({exc})"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            Device.ensure_pin_factory()
        except Exception as exc:
            steps = "; ".join(str(w.message) for w in caught)
            return None, f"{exc}" + (f" ({steps})" if steps else "")
    for w in caught:  # e.g. NativePinFactoryFallback: works, but worth knowing
        log.info("GPIO: %s", w.message)
    return Device.pin_factory, None


def _describe(exc: BaseException) -> str:
    """gpiozero's exception as ``Name: message`` for one log line."""
    return f"{type(exc).__name__}: {exc}"


def _close_quietly(device: Any, what: str) -> None:
    """Close a gpiozero device; a failing close must not stop the others from being released."""
    try:
        device.close()
    except Exception:
        log.exception("GPIO: closing %s failed", what)


# -- LEDs and buzzer -------------------------------------------------------------------------------------


class GpioFeedback:
    """The status LEDs and the buzzer: ``show`` the node's status, ``signal`` a moment to the customer.

    ``show`` and ``signal`` are called from the relay and device threads: they take a lock, hand the
    pattern to gpiozero's background thread and return (a restart joins the previous blink thread,
    which wakes at once). Showing the status already shown does nothing, so callers may repeat it
    freely; a signal during a signal cuts the first short and starts the new one (no queue).
    """

    def __init__(
        self,
        pins: GpioPins | None = None,
        name: str = "gpio-feedback",
        *,
        pin_factory: Factory | None = None,
    ) -> None:
        self.name = name
        self.pins = pins if pins is not None else GpioPins()
        self._pin_factory = pin_factory
        self._lock = threading.Lock()
        self._state: DeviceState = "absent"
        self._leds: dict[LedRole, Any] = {}
        self._buzzer: Any = None
        self._active = False
        self._wanted: NodeStatus | None = None  # last status asked for, shown again after start()
        self._shown: NodeStatus | None = None

    @property
    def state(self) -> DeviceState:
        """``present`` while driving the pins; ``absent`` without GPIO or before start; ``error``."""
        return self._state

    @property
    def status(self) -> NodeStatus | None:
        """The status the LEDs currently show (``None``: not started, or nothing shown yet)."""
        return self._shown

    def start(self) -> None:
        """Claim the pins; without GPIO or with bad pins, log one line and carry on without them."""
        with self._lock:
            if self._active or self._state == "error":
                return
            wanted = {role: pin for role, pin in self.pins.assigned().items() if role != "button"}
            leds: dict[LedRole, int] = {
                role: pin for role in LED_ROLES if (pin := wanted.get(role)) is not None
            }
            if not wanted:
                log.info("%s: no LED or buzzer pins configured; status LEDs and buzzer are off", self.name)
                return
            factory, reason = _resolve_factory(self._pin_factory)
            if factory is None:
                log.warning("GPIO not available: %s; status LEDs and buzzer are off", reason)
                return
            from gpiozero import LED, Buzzer

            # All or nothing: a half-claimed set would show misleading patterns (no red, green off
            # reads as "starting"), so one bad pin releases the others and the state says "error".
            role = ""
            try:
                for role, pin in leds.items():
                    self._leds[role] = LED(pin, pin_factory=factory)
                if self.pins.buzzer is not None:
                    role = "buzzer"
                    self._buzzer = Buzzer(
                        self.pins.buzzer, active_high=self.pins.buzzer_active_high, pin_factory=factory
                    )
            except Exception as exc:
                # gpiozero's message is the whole story (pin in use, not a GPIO): no traceback
                log.error(
                    "%s: cannot use GPIO%s for %s (%s); status LEDs and buzzer are off",
                    self.name,
                    wanted[role],
                    role.replace("_", " "),
                    _describe(exc),
                )
                self._release()
                self._state = "error"
                return
            self._active = True
            self._state = "present"
            log.info(
                "%s: %s on %s",
                self.name,
                ", ".join(f"{r} GPIO{p}" for r, p in wanted.items()),
                type(factory).__name__,
            )
            if self._wanted is not None:
                self._apply(self._wanted)

    def close(self) -> None:
        """Switch everything off and release the pins; idempotent."""
        with self._lock:
            self._release()
            if self._state == "present":
                self._state = "absent"

    def show(self, status: NodeStatus) -> None:
        """Make the LEDs show ``status`` (a no-op without GPIO or when already shown)."""
        if status not in STATUS_PATTERNS:
            raise ValueError(f"unknown node status {status!r}")
        with self._lock:
            self._wanted = status
            if self._active and status != self._shown:
                self._apply(status)

    def signal(self, signal: Signal) -> None:
        """Sound ``signal`` on the buzzer, cutting short any signal still sounding."""
        pattern = SIGNAL_PATTERNS.get(signal)
        if pattern is None:
            raise ValueError(f"unknown signal {signal!r}")
        with self._lock:
            if not self._active or self._buzzer is None:
                return
            try:
                # off() first: it stops the previous beep thread *and* ends a beep in progress, so
                # the new pattern's first beep is its own, not the tail of the previous one.
                self._buzzer.off()
                self._buzzer.beep(pattern.on_s, pattern.off_s, n=pattern.n, background=True)
            except Exception as exc:
                self._fail(f"signal {signal}", exc)

    # -- internals (called with the lock held) -------------------------------------------------------

    def _apply(self, status: NodeStatus) -> None:
        patterns = STATUS_PATTERNS[status]
        try:
            # Everything that goes off first, so two LEDs are never lit together, even briefly.
            for role, led in self._leds.items():
                if patterns[role] == "off":
                    led.off()
            for role, led in self._leds.items():
                pattern = patterns[role]
                if pattern == "on":
                    led.on()
                elif isinstance(pattern, Blink):
                    led.blink(pattern.on_s, pattern.off_s, n=None, background=True)
        except Exception as exc:
            self._fail(f"show {status}", exc)
            return
        self._shown = status

    def _fail(self, what: str, exc: Exception) -> None:
        # A pin driver failing at run time (pin reclaimed by another process, driver error) must not
        # reach the relay or device thread that called us: log it once and stop driving the pins.
        log.error("%s: %s failed (%s); status LEDs and buzzer are off", self.name, what, _describe(exc))
        self._release()
        self._state = "error"

    def _release(self) -> None:
        devices: list[tuple[str, Any]] = list(self._leds.items())
        if self._buzzer is not None:
            devices.append(("buzzer", self._buzzer))
        for role, device in devices:
            try:
                device.off()  # leave nothing lit or sounding: close() alone just floats the pin
            except Exception:
                log.debug("%s: %s off() failed while closing", self.name, role, exc_info=True)
            _close_quietly(device, role)
        self._leds = {}
        self._buzzer = None
        self._active = False
        self._shown = None


# -- assistance button -----------------------------------------------------------------------------------


class AssistButton:
    """The customer's assistance button: each press calls ``on_press(name)`` once.

    Three filters stand between the switch and the event: gpiozero's ``bounce_time`` (done by the
    pin driver on a Pi), our own debounce on press edges (``pins.button_bounce_s``; it makes the
    behaviour the same on drivers that do not debounce, such as gpiozero's mock pins), and a minimum
    interval between accepted presses, so a customer hammering the button raises one request, not
    twenty. Holding the button sends nothing more: only the press edge counts.
    """

    def __init__(
        self,
        on_press: ButtonHandler,
        pins: GpioPins | None = None,
        name: str = "assist-button",
        *,
        min_interval_s: float = 2.0,
        pin_factory: Factory | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if min_interval_s < 0:
            raise ValueError(f"min_interval_s must be >= 0, got {min_interval_s}")
        self.name = name
        self.pins = pins if pins is not None else GpioPins()
        self.min_interval_s = min_interval_s
        self._on_press = on_press
        self._pin_factory = pin_factory
        self._clock = clock
        self._lock = threading.Lock()
        self._state: DeviceState = "absent"
        self._button: Any = None
        self._last_edge: float | None = None
        self._last_accepted: float | None = None
        self._accepted = 0
        self._ignored = 0

    @property
    def state(self) -> DeviceState:
        """``present`` while watching the pin; ``absent`` without GPIO or before start; ``error``."""
        return self._state

    @property
    def accepted_presses(self) -> int:
        """Presses passed on to ``on_press`` since construction."""
        return self._accepted

    @property
    def ignored_presses(self) -> int:
        """Presses dropped because they came within ``min_interval_s`` of the last accepted one."""
        return self._ignored

    def start(self) -> None:
        """Watch the button; without GPIO or with a bad pin, log one line and carry on without it."""
        with self._lock:
            if self._button is not None or self._state == "error":
                return
            pin = self.pins.button
            if pin is None:
                log.info("%s: no button pin configured; the assistance button is off", self.name)
                return
            factory, reason = _resolve_factory(self._pin_factory)
            if factory is None:
                log.warning("GPIO not available: %s; the assistance button is off", reason)
                return
            from gpiozero import Button

            try:
                button = Button(
                    pin,
                    pull_up=self.pins.button_pull_up,
                    bounce_time=self.pins.button_bounce_s or None,
                    pin_factory=factory,
                )
                button.when_pressed = self._pressed
            except Exception as exc:
                log.error(
                    "%s: cannot use GPIO%s for the assistance button (%s); the button is off",
                    self.name,
                    pin,
                    _describe(exc),
                )
                self._state = "error"
                return
            self._button = button
            self._state = "present"
            log.info("%s: GPIO%s on %s", self.name, pin, type(factory).__name__)

    def close(self) -> None:
        """Stop watching and release the pin; idempotent."""
        with self._lock:
            button, self._button = self._button, None
            if self._state == "present":
                self._state = "absent"
        # Outside the lock: closing may wait for gpiozero's event thread, which may be waiting in
        # _pressed for this lock; _pressed sees ``_button is None`` and drops a late press.
        if button is not None:
            _close_quietly(button, "assistance button")

    def _pressed(self) -> None:
        """gpiozero's ``when_pressed``: runs on its thread, so it filters, counts and never raises."""
        now = self._clock()
        with self._lock:
            if self._button is None:
                return
            last_edge, self._last_edge = self._last_edge, now
            if last_edge is not None and now - last_edge < self.pins.button_bounce_s:
                return  # contact bounce: the same press, seen again
            if self._last_accepted is not None and now - self._last_accepted < self.min_interval_s:
                self._ignored += 1
                log.debug(
                    "%s: press %.2f s after the last one ignored (minimum %.1f s; %d ignored so far)",
                    self.name,
                    now - self._last_accepted,
                    self.min_interval_s,
                    self._ignored,
                )
                return
            self._last_accepted = now
            self._accepted += 1
        try:
            self._on_press(self.name)
        except Exception:
            log.exception("%s: handling a press failed", self.name)


# -- doctor ----------------------------------------------------------------------------------------------


def gpio_report(pins: GpioPins, *, pin_factory: Factory | None = None) -> dict[str, Any]:
    """What ``kiosk-edge doctor`` shows: the pin factory (or why none) and whether each pin is free.

    Each configured pin is claimed as a plain GPIO device and released at once (on a Pi this
    briefly makes it an input, so a lit LED goes dark: run it with the node stopped, which is also
    the only way the node's own pins show as free). The result is plain JSON-able data.
    """
    factory, reason = _resolve_factory(pin_factory)
    report: dict[str, Any] = {
        "pin_factory": None if factory is None else type(factory).__name__,
        "board": None,
        "reason": reason,
        "pins": {},
    }
    if factory is not None:
        try:
            report["board"] = str(factory.board_info.model)
        except Exception as exc:
            report["board"] = f"unknown ({_describe(exc)})"
    for role in PART_ROLES:
        pin = getattr(pins, role)
        entry: dict[str, Any] = {"pin": pin}
        if pin is None:
            entry.update(ok=None, detail="not fitted")
        elif factory is None:
            entry.update(ok=None, detail="not checked: no GPIO")
        else:
            entry.update(_try_claim(pin, factory))
        report["pins"][role] = entry
    return report


def _try_claim(pin: int, factory: Any) -> dict[str, Any]:
    """Claim and release one pin; gpiozero's complaint, if any, is the detail."""
    from gpiozero import GPIODevice

    try:
        device = GPIODevice(pin, pin_factory=factory)
    except Exception as exc:
        return {"ok": False, "detail": _describe(exc)}
    _close_quietly(device, f"GPIO{pin}")
    return {"ok": True, "detail": "free"}
