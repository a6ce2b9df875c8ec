"""Debian's Chromium driven by Playwright's sync API, for the kiosk tests.

Facts this relies on (see shared/TESTING-NOTES.md, "Chromium + Playwright"): Playwright's own browser
downloads are never used (no ``playwright install``); Debian's ``/usr/bin/chromium`` is launched through
``executable_path`` with the flags below, headless. A launch takes well under a second, so a test module
shares one browser (``chromium()`` in a module-scoped fixture) and gives every test a fresh context
(``touch_context()``: its own cookies, so its own kiosk session).

Typical use in a test module::

    @pytest.fixture(scope="module")
    def browser() -> Iterator[Browser]:
        with chromium() as b:
            yield b

    @pytest.fixture
    def page(browser: Browser) -> Iterator[Page]:
        with touch_context(browser) as context:
            yield context.new_page()

``PageWatch`` records what a page must never do (console errors, uncaught exceptions, CSP violations,
requests to anything but the kiosk); ``screenshot`` writes ``docs/screenshots/<name>.png``;
``axe_violations`` runs the axe-core bundled with axe-playwright-python.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, Request, sync_playwright

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "docs" / "screenshots"

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
)

#: A 10" touch monitor beside the till, and the official Raspberry Pi 7" display.
TOUCH_SCREEN = {"width": 1280, "height": 800}
PI_DISPLAY = {"width": 800, "height": 480}

# Runs before any page script in every document (through CDP, so the page's CSP does not apply to it):
# the page's own CSP violations are recorded where PageWatch can read them.
_CSP_RECORDER = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  const where = `${e.sourceFile}:${e.lineNumber}`;
  window.__cspViolations.push(`${e.violatedDirective} ${e.blockedURI || "inline"} ${where}`);
});
"""

_axe = Axe()


@contextlib.contextmanager
def chromium(*, headless: bool = True) -> Iterator[Browser]:
    """Launch Debian's Chromium; closed (and Playwright's driver stopped) on exit."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=headless, args=list(CHROMIUM_ARGS)
        )
        try:
            yield browser
        finally:
            browser.close()


@contextlib.contextmanager
def touch_context(
    browser: Browser, viewport: dict[str, int] | None = None, *, locale: str = "en-US"
) -> Iterator[BrowserContext]:
    """A touch-screen-like context (touch events, no mouse hover assumptions); closed with its pages."""
    size = viewport or TOUCH_SCREEN
    context = browser.new_context(
        viewport={"width": size["width"], "height": size["height"]},
        screen={"width": size["width"], "height": size["height"]},
        has_touch=True,
        locale=locale,
        timezone_id="Europe/Amsterdam",
        service_workers="block",
    )
    context.set_default_timeout(5_000)
    context.add_init_script(_CSP_RECORDER)
    try:
        yield context
    finally:
        context.close()


@dataclass
class PageWatch:
    """What went wrong in a page that no assertion on its content would notice."""

    origin: str
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    foreign_requests: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    csp_violations: list[str] = field(default_factory=list)

    @classmethod
    def attach(cls, page: Page, origin: str) -> PageWatch:
        """Start recording on ``page``; ``origin`` is the only scheme://host:port it may talk to."""
        watch = cls(origin.rstrip("/"))

        def on_console(message: ConsoleMessage) -> None:
            if message.type == "error":
                watch.console_errors.append(f"{message.text} @ {message.location.get('url', '')}")

        def on_request(request: Request) -> None:
            parts = urlsplit(request.url)
            if parts.scheme in ("data", "blob", "about"):
                return
            if f"{parts.scheme}://{parts.netloc}" != watch.origin:
                watch.foreign_requests.append(request.url)

        def on_dialog(dialog: Any) -> None:
            watch.dialogs.append(f"{dialog.type}: {dialog.message}")
            dialog.dismiss()

        page.on("console", on_console)
        page.on("pageerror", lambda exc: watch.page_errors.append(str(exc)))
        page.on("request", on_request)
        page.on("dialog", on_dialog)
        return watch

    def collect_csp(self, page: Page) -> list[str]:
        """Add the current document's CSP violations (call before leaving a page you care about)."""
        found = list(page.evaluate("() => window.__cspViolations || []"))
        self.csp_violations.extend(v for v in found if v not in self.csp_violations)
        return found

    def problems(self) -> dict[str, list[str]]:
        """Every non-empty record, for an assertion message."""
        records = {
            "console errors": self.console_errors,
            "uncaught exceptions": self.page_errors,
            "requests leaving the kiosk": self.foreign_requests,
            "dialogs": self.dialogs,
            "CSP violations": self.csp_violations,
        }
        return {name: values for name, values in records.items() if values}

    def assert_clean(self, page: Page | None = None) -> None:
        """Fail with everything recorded; with ``page``, the current document's CSP report is read first."""
        if page is not None and not page.is_closed():
            self.collect_csp(page)
        assert not self.problems(), self.problems()


def screenshot(page: Page, name: str, *, full_page: bool = False) -> Path:
    """Save what the screen shows as ``docs/screenshots/<name>.png``; returns the path."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page, animations="disabled", caret="hide")
    return path


def axe_violations(page: Page, impacts: tuple[str, ...] = ("serious", "critical")) -> list[dict[str, Any]]:
    """axe-core's violations on the current page with one of ``impacts``, summarised for an assert.

    Each entry: ``id``, ``impact``, ``help`` and the ``targets`` (CSS selectors) of the offending nodes.
    axe is injected through CDP, so the page's CSP does not stop it (and it changes nothing on the page).
    """
    results = _axe.run(page)
    return [
        {
            "id": v["id"],
            "impact": v["impact"],
            "help": v["help"],
            "targets": [", ".join(map(str, node["target"])) for node in v["nodes"]],
        }
        for v in results.response["violations"]
        if v.get("impact") in impacts
    ]
