"""``kiosk-edge doctor``: what the store IT person checks after plugging things in.

Each check says what it found and, when something is wrong, what to do about it, in one line. The
checks look at the machine (pcscd, input devices, GPIO, file modes), not at the running node, so they
work when the node is stopped too; when it runs, its own view of the devices is added.
"""

from __future__ import annotations

import stat
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from edge.config import Settings
from edge.keys import PSEUDONYM_KEY_FILE, SIGNING_KEY_FILE

Verdict = Literal["ok", "warn", "fail", "off"]


@dataclass(frozen=True, slots=True)
class Check:
    """One line of the report."""

    name: str
    verdict: Verdict
    detail: str

    def as_dict(self) -> dict[str, str]:
        """JSON-ready."""
        return asdict(self)


def _mode_check(name: str, path: Path, wanted: int, what: str) -> Check:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return Check(name, "warn", f"{path} does not exist yet ({what}; 'kiosk-edge keys init' creates it)")
    except OSError as exc:
        return Check(name, "fail", f"{path}: {exc.strerror or exc}")
    if mode & ~wanted & 0o077:
        return Check(
            name, "fail", f"{path} has mode {mode:03o}, expected {wanted:03o}: chmod {wanted:o} {path}"
        )
    return Check(name, "ok", f"{path} (mode {mode:03o})")


def check_files(settings: Settings) -> list[Check]:
    """Data directory and key files exist with modes that keep them private."""
    data = settings.data.dir
    checks = [_mode_check("data dir", data, 0o700, "the node's database and secrets")]
    checks.append(_mode_check("signing key", data / SIGNING_KEY_FILE, 0o600, "the node's signing key"))
    chain = settings.identity.pseudonym_key_file
    if chain is None:
        check = _mode_check("pseudonym key", data / PSEUDONYM_KEY_FILE, 0o600, "standalone pseudonym key")
        if check.verdict == "ok":
            check = Check(
                check.name,
                "warn",
                f"{check.detail}: standalone key, tokens will not match other stores "
                "(set identity.pseudonym_key_file to the chain's key)",
            )
        checks.append(check)
    else:
        checks.append(_mode_check("pseudonym key", chain, 0o640, "the chain's pseudonymisation key"))
    return checks


def check_nfc(settings: Settings) -> list[Check]:
    """pcscd answers and the configured readers are attached."""
    if not settings.nfc.enabled:
        return [Check("nfc reader", "off", "disabled in the configuration (nfc.enabled = false)")]
    from edge.devices.nfc import list_readers

    names, problem = list_readers()
    if problem is not None:
        return [Check("nfc reader", "fail", problem)]
    wanted = settings.nfc.reader_names
    matching = [n for n in names if not wanted or any(n == w or n.startswith(w) for w in wanted)]
    if not matching:
        seen = ", ".join(names) or "none"
        hint = (
            "plug in a PC/SC reader (ACR122U: blacklist the pn533 kernel modules, see docs/raspberry-pi.md)"
            if not names
            else f"none matches nfc.readers = {settings.nfc.readers!r}"
        )
        return [Check("nfc reader", "fail", f"readers attached: {seen}; {hint}")]
    return [Check("nfc reader", "ok", ", ".join(matching))]


def check_scanner(settings: Settings) -> list[Check]:
    """An input device matches the scanner settings and can be opened."""
    if not settings.scanner.enabled:
        return [Check("scanner", "off", "disabled in the configuration (scanner.enabled = false)")]
    from edge.devices.scanner import list_scanners
    from edge.node import scanner_match

    if not Path("/dev/input").is_dir():
        return [Check("scanner", "fail", "this machine has no /dev/input (no input devices at all)")]
    try:
        found = list_scanners(scanner_match(settings))
    except OSError as exc:
        return [Check("scanner", "fail", f"cannot list input devices: {exc.strerror or exc}")]
    matched = [f for f in found if f.matches]
    if matched:
        return [
            Check("scanner", "ok", ", ".join(f"{f.name} ({f.vendor_product}) at {f.path}" for f in matched))
        ]
    denied = [f for f in found if f.error]
    if denied:
        return [
            Check(
                "scanner",
                "fail",
                f"{len(denied)} input device(s) cannot be opened ({denied[0].error}): "
                "add the node's user to the 'input' group",
            )
        ]
    listing = "; ".join(f"{f.name} ({f.vendor_product})" for f in found) or "none"
    return [
        Check(
            "scanner",
            "fail",
            f"no input device matches scanner.usb_id / scanner.name_pattern / {settings.scanner.device}; "
            f"input devices: {listing}",
        )
    ]


def check_gpio(settings: Settings) -> list[Check]:
    """Which pin factory gpiozero would use, and whether the configured pins can be claimed."""
    if not settings.gpio.enabled:
        return [Check("gpio", "off", "disabled in the configuration (gpio.enabled = false)")]
    from edge.devices.gpio import gpio_report
    from edge.node import gpio_pins

    report = gpio_report(gpio_pins(settings))
    if report["pin_factory"] is None:
        return [
            Check("gpio", "off", f"GPIO not available here ({report['reason']}); LEDs, buzzer, button off")
        ]
    checks = [Check("gpio", "ok", f"pin factory {report['pin_factory']}")]
    for role, pin in report["pins"].items():
        verdict: Verdict = "ok" if pin["ok"] else "fail"
        checks.append(Check(f"gpio {role}", verdict, f"BCM {pin['pin']}: {pin['detail']}"))
    return checks


CHECKS: tuple[Callable[[Settings], list[Check]], ...] = (check_files, check_nfc, check_scanner, check_gpio)


def run_checks(settings: Settings) -> list[Check]:
    """Every check; one that crashes is reported as a failure of its own, not a crash of doctor."""
    results: list[Check] = []
    for check in CHECKS:
        try:
            results.extend(check(settings))
        except Exception as exc:  # doctor must always finish its report
            results.append(Check(check.__name__.removeprefix("check_"), "fail", f"check failed: {exc!r}"))
    return results


def summary(checks: list[Check]) -> dict[str, Any]:
    """Counts per verdict, for the JSON output and the exit code."""
    counts = dict.fromkeys(("ok", "warn", "fail", "off"), 0)
    for check in checks:
        counts[check.verdict] += 1
    return counts
