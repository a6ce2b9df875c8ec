"""LEDs, buzzer and assistance button over gpiozero, checked on gpiozero's own MockFactory.

Every test gets a fresh ``MockFactory`` passed per device (never ``Device.pin_factory``), and the
fixtures close the devices and reset the factory afterwards, so no test leaks a ``GPIOPinInUse``.
Blink and beep patterns are read back from the mock pins' recorded ``states`` (each entry: seconds
since the previous change, new level) and compared with a tolerance, never exact timing.
"""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import pytest
from gpiozero import LED, Button, Device
from gpiozero.pins.mock import MockFactory

from edge.devices.gpio import (
    SIGNAL_PATTERNS,
    STATUS_PATTERNS,
    AssistButton,
    GpioFeedback,
    GpioPins,
    NodeStatus,
    Signal,
    gpio_report,
)

GREEN, AMBER, RED, BUZZER, BUTTON = 17, 27, 22, 23, 24
LEDS = {"led_green": GREEN, "led_amber": AMBER, "led_red": RED}
LOGGER = "edge.devices.gpio"
TOL = 0.06  # seconds of scheduling slack allowed on any one period


# -- fixtures and helpers -------------------------------------------------------------------------------


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    f = MockFactory()
    yield f
    f.reset()


@pytest.fixture
def closing() -> Iterator[list[Any]]:
    """Devices to close at teardown (before the factory is reset), even when the test failed."""
    devices: list[Any] = []
    yield devices
    for device in reversed(devices):
        device.close()


@pytest.fixture(autouse=True)
def _log_everything(caplog: pytest.LogCaptureFixture) -> None:
    """Capture the module's INFO and DEBUG lines too, so "one log line" means one line at any level."""
    caplog.set_level(logging.DEBUG, logger=LOGGER)


@pytest.fixture
def no_gpio(monkeypatch: pytest.MonkeyPatch) -> None:
    """gpiozero's default selection with a factory name that does not exist: no GPIO at all."""
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "no-such-factory")
    monkeypatch.setattr(Device, "pin_factory", None)  # restored afterwards; nothing set globally


def feedback(factory: MockFactory, closing: list[Any], pins: GpioPins | None = None) -> GpioFeedback:
    fb = GpioFeedback(pins or GpioPins(), pin_factory=factory)
    closing.append(fb)
    fb.start()
    assert fb.state == "present"
    return fb


def periods(states: list[Any]) -> list[tuple[bool, float]]:
    """Completed (level, seconds) periods from a mock pin's recorded states; the ongoing one is left out."""
    return [(bool(states[i].state), states[i + 1].timestamp) for i in range(len(states) - 1)]


def on_periods(states: list[Any]) -> list[float]:
    return [d for level, d in periods(states) if level]


def levels(factory: MockFactory) -> dict[str, bool]:
    return {role: bool(factory.pin(pin).state) for role, pin in LEDS.items()}


def clear(factory: MockFactory, *pins: int) -> None:
    for pin in pins:
        factory.pin(pin).clear_states()


def gpio_records(caplog: pytest.LogCaptureFixture, level: int = logging.INFO) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and r.levelno >= level]


# -- configuration --------------------------------------------------------------------------------------


def test_default_wiring_matches_the_documented_pins() -> None:
    pins = GpioPins()
    assert pins.assigned() == {
        "led_green": 17,
        "led_amber": 27,
        "led_red": 22,
        "buzzer": 23,
        "button": 24,
    }
    assert (pins.buzzer_active_high, pins.button_pull_up, pins.button_bounce_s) == (True, True, 0.05)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"buzzer": 17}, "buzzer and led_green are both wired to GPIO17"),
        ({"led_red": -1}, "led_red: pin -1"),
        ({"button_bounce_s": -0.1}, "button_bounce_s must be >= 0"),
    ],
)
def test_wiring_mistakes_are_rejected_with_a_clear_message(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GpioPins(**kwargs)


def test_importing_the_backend_does_not_import_gpiozero() -> None:
    # The rest of the project must run where gpiozero is missing: only start() and friends import it.
    code = "import sys, edge.devices.gpio, edge.node; assert 'gpiozero' not in sys.modules, 'imported'"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr


# -- LEDs -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "lit"),
    [("online", "led_green"), ("fault", "led_red")],
)
def test_steady_statuses_light_exactly_one_led(
    factory: MockFactory, closing: list[Any], status: NodeStatus, lit: str
) -> None:
    fb = feedback(factory, closing)
    fb.show("queueing")  # start from a blinking state: the new status must stop it
    time.sleep(0.1)
    fb.show(status)
    assert fb.status == status
    assert levels(factory) == {role: role == lit for role in LEDS}
    clear(factory, GREEN, AMBER, RED)
    time.sleep(0.6)  # longer than an amber blink period: a leftover blink thread would show here
    assert levels(factory) == {role: role == lit for role in LEDS}
    for pin in LEDS.values():
        assert len(factory.pin(pin).states) == 1, f"GPIO{pin} changed while the status was steady"


def test_queueing_blinks_amber_slowly_and_nothing_else(factory: MockFactory, closing: list[Any]) -> None:
    fb = feedback(factory, closing)
    fb.show("online")
    fb.show("queueing")
    clear(factory, GREEN, RED)
    time.sleep(1.3)
    amber = periods(factory.pin(AMBER).states)[1:]  # [0] is the off time before show()
    assert [level for level, _ in amber][:2] == [True, False]
    for _, seconds in amber:
        assert math.isclose(seconds, 0.5, abs_tol=TOL), amber
    assert not factory.pin(GREEN).state and not factory.pin(RED).state
    assert len(factory.pin(GREEN).states) == 1 and len(factory.pin(RED).states) == 1


def test_starting_flickers_green_quickly(factory: MockFactory, closing: list[Any]) -> None:
    fb = feedback(factory, closing)
    clear(factory, GREEN, AMBER, RED)
    fb.show("starting")
    time.sleep(0.7)
    green = periods(factory.pin(GREEN).states)[1:]
    assert len(green) >= 3, green  # several blinks in 0.7 s: a quick flicker, unlike queueing
    for _, seconds in green:
        assert math.isclose(seconds, 0.15, abs_tol=TOL), green
    assert len(factory.pin(AMBER).states) == 1 and len(factory.pin(RED).states) == 1


def test_every_status_has_a_distinct_pattern() -> None:
    assert set(STATUS_PATTERNS) == set(get_args(NodeStatus))
    shapes = {tuple(sorted(patterns.items(), key=lambda kv: kv[0])) for patterns in STATUS_PATTERNS.values()}
    assert len(shapes) == len(STATUS_PATTERNS)


def test_showing_the_same_status_again_does_not_restart_the_blink(
    factory: MockFactory, closing: list[Any]
) -> None:
    fb = feedback(factory, closing)
    fb.show("queueing")
    time.sleep(0.7)  # amber is in its off half (0.5 - 1.0 s)
    assert not factory.pin(AMBER).state
    fb.show("queueing")  # a restarted blink would switch amber on right now
    time.sleep(0.1)
    assert not factory.pin(AMBER).state


def test_status_asked_for_before_start_is_shown_on_start(factory: MockFactory, closing: list[Any]) -> None:
    fb = GpioFeedback(GpioPins(), pin_factory=factory)
    closing.append(fb)
    fb.show("fault")
    shown_before_start = fb.status
    fb.start()
    assert shown_before_start is None
    assert fb.status == "fault"
    assert levels(factory) == {"led_green": False, "led_amber": False, "led_red": True}


def test_missing_parts_are_skipped(factory: MockFactory, closing: list[Any]) -> None:
    fb = feedback(factory, closing, GpioPins(led_amber=None, buzzer=None, button=None))
    fb.show("online")
    fb.show("queueing")  # amber not fitted: nothing lit, nothing raised
    fb.signal("tap_ok")
    assert not factory.pin(GREEN).state and not factory.pin(RED).state
    assert AMBER not in {info.name for info in factory.pins}  # never claimed
    assert fb.state == "present"


def test_unknown_status_or_signal_is_a_caller_bug(factory: MockFactory, closing: list[Any]) -> None:
    fb = feedback(factory, closing)
    with pytest.raises(ValueError, match="unknown node status"):
        fb.show("sleeping")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown signal"):
        fb.signal("fanfare")  # type: ignore[arg-type]


# -- buzzer ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("signal", "beeps", "on_s"),
    [("tap_ok", 1, 0.08), ("unknown_card", 2, 0.08), ("error", 1, 0.4), ("assist", 3, 0.03)],
)
def test_each_signal_beeps_its_rhythm(
    factory: MockFactory, closing: list[Any], signal: Signal, beeps: int, on_s: float
) -> None:
    fb = feedback(factory, closing)
    clear(factory, BUZZER)
    fb.signal(signal)
    time.sleep(beeps * 0.1 + on_s * beeps + 0.2)
    ons = on_periods(factory.pin(BUZZER).states)
    assert len(ons) == beeps, factory.pin(BUZZER).states
    for seconds in ons:
        assert math.isclose(seconds, on_s, abs_tol=TOL), ons
    assert not factory.pin(BUZZER).state  # silent afterwards
    gaps = [d for level, d in periods(factory.pin(BUZZER).states)[1:] if not level]
    for seconds in gaps[: beeps - 1]:
        assert math.isclose(seconds, SIGNAL_PATTERNS[signal].off_s, abs_tol=TOL), gaps


def test_every_signal_has_a_distinct_rhythm() -> None:
    assert set(SIGNAL_PATTERNS) == set(get_args(Signal))
    assert len(set(SIGNAL_PATTERNS.values())) == len(SIGNAL_PATTERNS)


def test_a_signal_during_a_signal_restarts_the_pattern(factory: MockFactory, closing: list[Any]) -> None:
    fb = feedback(factory, closing)
    clear(factory, BUZZER)
    fb.signal("error")  # 0.4 s
    time.sleep(0.1)
    fb.signal("tap_ok")  # cuts the long beep short, then one 80 ms beep of its own
    time.sleep(0.35)
    ons = on_periods(factory.pin(BUZZER).states)
    assert len(ons) == 2, factory.pin(BUZZER).states
    assert math.isclose(ons[0], 0.1, abs_tol=TOL), ons  # not the full 0.4 s
    assert math.isclose(ons[1], 0.08, abs_tol=TOL), ons
    assert not factory.pin(BUZZER).state


def test_buzzer_wired_active_low(factory: MockFactory, closing: list[Any]) -> None:
    feedback(factory, closing, GpioPins(buzzer_active_high=False)).signal("tap_ok")
    time.sleep(0.2)
    lows = [d for level, d in periods(factory.pin(BUZZER).states) if not level]
    assert any(math.isclose(d, 0.08, abs_tol=TOL) for d in lows), factory.pin(BUZZER).states
    assert factory.pin(BUZZER).state  # idle high = silent


def test_show_and_signal_from_many_threads(factory: MockFactory, closing: list[Any]) -> None:
    fb = feedback(factory, closing)
    errors: list[BaseException] = []
    statuses: list[NodeStatus] = ["online", "queueing", "fault", "starting"]
    signals: list[Signal] = ["tap_ok", "unknown_card", "error", "assist"]

    def hammer(i: int) -> None:
        try:
            for j in range(60):
                fb.show(statuses[(i + j) % 4])
                fb.signal(signals[(i * j) % 4])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not errors
    assert fb.state == "present"
    fb.show("fault")
    assert levels(factory) == {"led_green": False, "led_amber": False, "led_red": True}
    time.sleep(0.6)  # all earlier patterns are gone: no blink or beep thread left behind
    assert levels(factory) == {"led_green": False, "led_amber": False, "led_red": True}
    assert not factory.pin(BUZZER).state


# -- feedback lifecycle ---------------------------------------------------------------------------------


def test_close_switches_off_releases_the_pins_and_is_idempotent(
    factory: MockFactory, closing: list[Any]
) -> None:
    fb = feedback(factory, closing)
    fb.show("fault")
    fb.signal("error")
    fb.close()
    fb.close()
    assert fb.state == "absent"
    assert not any(levels(factory).values()) and not factory.pin(BUZZER).state
    fb.show("online")  # no-op after close
    fb.signal("tap_ok")
    assert not factory.pin(GREEN).state
    for pin in (*LEDS.values(), BUZZER):
        led = LED(pin, pin_factory=factory)  # would raise GPIOPinInUse if a pin were still held
        closing.append(led)


def test_start_is_idempotent(factory: MockFactory, closing: list[Any]) -> None:
    fb = feedback(factory, closing)
    fb.start()  # a second claim of the same pins would fail with GPIOPinInUse -> "error"
    assert fb.state == "present"


def test_pin_in_use_is_an_error_not_a_crash(
    factory: MockFactory, closing: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    closing.append(LED(RED, pin_factory=factory))
    fb = GpioFeedback(GpioPins(), pin_factory=factory)
    closing.append(fb)
    fb.start()
    assert fb.state == "error"
    [record] = gpio_records(caplog, logging.ERROR)
    assert "GPIO22" in record.getMessage() and "GPIOPinInUse" in record.getMessage()
    fb.show("online")
    fb.signal("tap_ok")
    assert not factory.pin(GREEN).state
    # all or nothing: the pins claimed before the failure were released again
    closing.append(LED(GREEN, pin_factory=factory))
    closing.append(LED(AMBER, pin_factory=factory))


def test_invalid_pin_number_is_an_error_not_a_crash(
    factory: MockFactory, closing: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    fb = GpioFeedback(GpioPins(led_red=99), pin_factory=factory)
    closing.append(fb)
    fb.start()
    assert fb.state == "error"
    [record] = gpio_records(caplog, logging.ERROR)
    assert "GPIO99" in record.getMessage() and "PinInvalidPin" in record.getMessage()


@pytest.mark.usefixtures("no_gpio")
def test_no_gpio_means_absent_no_ops_and_one_log_line(caplog: pytest.LogCaptureFixture) -> None:
    fb = GpioFeedback(GpioPins())
    fb.start()
    assert fb.state == "absent"
    fb.show("fault")
    fb.signal("error")
    fb.close()
    fb.close()
    [record] = gpio_records(caplog)
    assert record.levelno == logging.WARNING
    assert record.getMessage().startswith("GPIO not available: ")
    assert "no-such-factory" in record.getMessage()  # gpiozero's own reason
    assert Device.pin_factory is None


def test_no_pi_at_all_is_absent_without_warnings(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # gpiozero's real default chain (lgpio, RPi.GPIO, pigpio, native) warns once per driver it
    # skips; under filterwarnings=error any escaping warning fails this test.
    if Path("/proc/device-tree/model").exists():
        pytest.skip("this machine may be a Raspberry Pi: the default chain would find real GPIO")
    monkeypatch.delenv("GPIOZERO_PIN_FACTORY", raising=False)
    monkeypatch.setattr(Device, "pin_factory", None)
    button = AssistButton(lambda name: None, GpioPins())
    button.start()
    assert button.state == "absent"
    [record] = gpio_records(caplog)
    message = record.getMessage()
    assert "Unable to load any default pin factory" in message
    assert "Falling back from lgpio" in message and "assistance button is off" in message


# -- assistance button ----------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def assist_button(factory: MockFactory, closing: list[Any], calls: list[str], **kwargs: Any) -> AssistButton:
    pins = kwargs.pop("pins", GpioPins())
    button = AssistButton(calls.append, pins, pin_factory=factory, **kwargs)
    closing.append(button)
    button.start()
    assert button.state == "present"
    return button


def press(factory: MockFactory, pin: int = BUTTON, *, pull_up: bool = True) -> None:
    if pull_up:
        factory.pin(pin).drive_low()
        factory.pin(pin).drive_high()
    else:
        factory.pin(pin).drive_high()
        factory.pin(pin).drive_low()


def test_one_press_calls_on_press_once_with_the_name(factory: MockFactory, closing: list[Any]) -> None:
    calls: list[str] = []
    button = AssistButton(calls.append, GpioPins(), name="till-3-assist", pin_factory=factory)
    closing.append(button)
    button.start()
    assert button.min_interval_s == 2.0
    factory.pin(BUTTON).drive_low()
    assert calls == ["till-3-assist"]
    factory.pin(BUTTON).drive_high()  # the release sends nothing
    assert calls == ["till-3-assist"]
    assert button.accepted_presses == 1


def test_button_wired_to_3v3_with_pull_down(factory: MockFactory, closing: list[Any]) -> None:
    calls: list[str] = []
    assist_button(factory, closing, calls, pins=GpioPins(button_pull_up=False))
    factory.pin(BUTTON).drive_low()  # idle level: nothing
    assert calls == []
    press(factory, pull_up=False)
    assert calls == ["assist-button"]


def test_holding_the_button_does_not_repeat(factory: MockFactory, closing: list[Any]) -> None:
    calls: list[str] = []
    assist_button(factory, closing, calls, min_interval_s=0)
    factory.pin(BUTTON).drive_low()
    time.sleep(1.2)  # past gpiozero's hold time (1 s)
    factory.pin(BUTTON).drive_high()
    assert calls == ["assist-button"]


def test_contact_bounce_gives_one_call(factory: MockFactory, closing: list[Any]) -> None:
    calls: list[str] = []
    clock = FakeClock()
    button = assist_button(factory, closing, calls, min_interval_s=0, clock=clock)
    for _ in range(4):  # the switch chatters for 40 ms, edges 10 ms apart
        press(factory)
        clock.now += 0.01
    assert calls == ["assist-button"]
    assert button.ignored_presses == 0  # bounce is not a customer press
    clock.now += 0.2  # a real second press, after the contacts settled
    press(factory)
    assert calls == ["assist-button", "assist-button"]


def test_presses_within_the_minimum_interval_are_ignored_and_counted(
    factory: MockFactory, closing: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[str] = []
    clock = FakeClock()
    button = assist_button(factory, closing, calls, clock=clock)  # default 2 s
    press(factory)
    for _ in range(3):
        clock.now += 0.5
        press(factory)
    assert calls == ["assist-button"]
    assert (button.accepted_presses, button.ignored_presses) == (1, 3)
    ignored = [r for r in gpio_records(caplog, logging.DEBUG) if "ignored" in r.getMessage()]
    assert len(ignored) == 3 and all(r.levelno == logging.DEBUG for r in ignored)
    clock.now += 0.6  # 2.1 s after the accepted press
    press(factory)
    assert calls == ["assist-button", "assist-button"]
    assert button.accepted_presses == 2


def test_a_failing_handler_is_logged_and_the_button_keeps_working(
    factory: MockFactory, closing: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    attempts: list[str] = []

    def on_press(name: str) -> None:
        attempts.append(name)
        if len(attempts) == 1:
            raise RuntimeError("outbox full")

    clock = FakeClock()
    button = AssistButton(on_press, GpioPins(), pin_factory=factory, clock=clock)
    closing.append(button)
    button.start()
    press(factory)  # must not raise into gpiozero's (here: our) thread
    [record] = gpio_records(caplog, logging.ERROR)
    assert record.exc_info is not None and "outbox full" in str(record.exc_info[1])
    clock.now += 3
    press(factory)
    assert attempts == ["assist-button", "assist-button"]
    assert button.state == "present"


def test_button_pin_in_use_is_an_error_not_a_crash(
    factory: MockFactory, closing: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    closing.append(Button(BUTTON, pin_factory=factory))
    calls: list[str] = []
    button = AssistButton(calls.append, GpioPins(), pin_factory=factory)
    closing.append(button)
    button.start()
    assert button.state == "error"
    [record] = gpio_records(caplog, logging.ERROR)
    assert "GPIO24" in record.getMessage() and "GPIOPinInUse" in record.getMessage()
    press(factory)
    assert calls == []


def test_button_close_releases_the_pin_and_is_idempotent(factory: MockFactory, closing: list[Any]) -> None:
    calls: list[str] = []
    button = assist_button(factory, closing, calls)
    button.close()
    button.close()
    assert button.state == "absent"
    other: list[str] = []
    again = Button(BUTTON, pin_factory=factory)  # would raise GPIOPinInUse if still held
    closing.append(again)
    again.when_pressed = lambda: other.append("pressed")
    factory.pin(BUTTON).drive_low()
    assert calls == [] and other == ["pressed"]


def test_no_button_pin_is_absent(factory: MockFactory, caplog: pytest.LogCaptureFixture) -> None:
    button = AssistButton(lambda name: None, GpioPins(button=None), pin_factory=factory)
    button.start()
    assert button.state == "absent"
    assert "no button pin configured" in gpio_records(caplog)[0].getMessage()
    assert not factory.pins  # nothing claimed


@pytest.mark.usefixtures("no_gpio")
def test_button_without_gpio_is_absent_with_one_log_line(caplog: pytest.LogCaptureFixture) -> None:
    button = AssistButton(lambda name: None, GpioPins())
    button.start()
    button.close()
    assert button.state == "absent"
    [record] = gpio_records(caplog)
    assert record.getMessage().startswith("GPIO not available: ")


# -- doctor ---------------------------------------------------------------------------------------------


def test_report_with_mock_factory_claims_nothing(factory: MockFactory, closing: list[Any]) -> None:
    report = gpio_report(GpioPins(buzzer=None), pin_factory=factory)
    assert report["pin_factory"] == "MockFactory" and report["board"] == "3B" and report["reason"] is None
    assert report["pins"]["buzzer"] == {"pin": None, "ok": None, "detail": "not fitted"}
    for role in ("led_green", "led_amber", "led_red", "button"):
        assert report["pins"][role]["ok"] is True, report
    json.dumps(report)
    for pin in (*LEDS.values(), BUTTON):  # every pin is free again afterwards
        closing.append(LED(pin, pin_factory=factory))


def test_report_names_a_pin_in_use(factory: MockFactory, closing: list[Any]) -> None:
    closing.append(LED(GREEN, pin_factory=factory))
    report = gpio_report(GpioPins(led_red=99), pin_factory=factory)
    green, red = report["pins"]["led_green"], report["pins"]["led_red"]
    assert green["ok"] is False and "GPIOPinInUse" in green["detail"]
    assert red["ok"] is False and "PinInvalidPin" in red["detail"]
    assert report["pins"]["led_amber"]["ok"] is True


@pytest.mark.usefixtures("no_gpio")
def test_report_without_gpio_says_why() -> None:
    report = gpio_report(GpioPins())
    assert report["pin_factory"] is None
    assert "no-such-factory" in report["reason"]
    assert {entry["detail"] for entry in report["pins"].values()} == {"not checked: no GPIO"}
    assert Device.pin_factory is None
