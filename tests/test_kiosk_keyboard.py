"""The kiosk's on-screen keyboard (kiosk_ui/static/keyboard.js, keyboard.css) in Debian's Chromium.

A tiny Flask app serves a join-like form under a strict CSP with the real kiosk.css plus the keyboard,
and Playwright taps keys with touch input on an 800x480 screen (the Pi touch display). Every test
fails on a console error, an uncaught exception, a CSP violation or a request leaving the server.
"""

# ruff: noqa: RUF001, RUF003  # the dotless ı is the point of the Turkish tests

from __future__ import annotations

import gc
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, Response, request
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright
from werkzeug.serving import make_server

ROOT = Path(__file__).resolve().parents[1]
STATIC = ROOT / "kiosk_ui" / "static"
SCREENSHOT = ROOT / "docs" / "screenshots" / "kiosk-keyboard-800x480.png"
CSP = "default-src 'self'; script-src 'self'; style-src 'self'"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]

PAGE = """<!doctype html>
<html lang="{lang}">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Keyboard</title>
  <link rel="stylesheet" href="/static/kiosk.css">
  <link rel="stylesheet" href="/static/keyboard.css">
  <script src="/static/keyboard.js" defer></script>{extra}
</head>
<body>
  <header class="bar"><a class="home" href="/">Corner Shop</a></header>
  <main id="join" class="page">
    <div id="content">
      <h1 id="title">Join our loyalty programme</h1>
      <form id="join-form" method="post" action="/submitted" novalidate>
        <div class="field"><label for="name">First name</label>
          <input id="name" name="first_name" type="text" maxlength="40" autocapitalize="words"></div>
        <div class="field"><label for="email">E-mail</label>
          <input id="email" name="email" type="email" maxlength="254" inputmode="email"></div>
        <div class="field"><label for="phone">Mobile phone</label>
          <input id="phone" name="phone" type="tel" maxlength="32" inputmode="tel"></div>
        <p><button class="button" type="submit" name="action" value="join">Join</button></p>
      </form>
      <section>
        <input id="plain" type="text" aria-label="Plain">
        <input id="short" type="text" maxlength="5" aria-label="Short">
        <input id="pin" type="text" inputmode="numeric" aria-label="PIN">
        <input id="off" type="text" data-osk="off" aria-label="No keyboard">
        <input id="agree" type="checkbox" aria-label="Agree">
        <textarea id="notes" aria-label="Notes"></textarea>
      </section>
    </div>
  </main>
</body>
</html>
"""

# In the page, through CDP (so not subject to the page's CSP): what the assertions look at.
INIT_SCRIPT = """
window.__csp = [];
window.__inputs = [];
window.__changes = [];
document.addEventListener("securitypolicyviolation", (e) => __csp.push(e.violatedDirective));
window.addEventListener("input", (e) => __inputs.push([e.target.id, e.inputType, e.data, e.isTrusted]));
window.addEventListener("change", (e) => __changes.push(e.target.id));
"""


def _app() -> Flask:
    app = Flask(__name__, static_folder=str(STATIC), static_url_path="/static")

    @app.get("/")
    def form() -> str:
        lang = "tr" if request.args.get("lang") == "tr" else "en"
        extra = '\n  <script src="/static/keyboard.js" defer></script>' if request.args.get("twice") else ""
        return PAGE.format(lang=lang, extra=extra)

    @app.post("/submitted")
    def submitted() -> str:
        return f'<p id="result">{json.dumps(request.form.to_dict(), sort_keys=True)}</p>'

    @app.get("/favicon.ico")
    def favicon() -> Response:
        return Response(status=204)

    @app.after_request
    def headers(response: Response) -> Response:
        response.headers["Content-Security-Policy"] = CSP
        response.headers["Cache-Control"] = "no-store"
        return response

    return app


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    server = make_server("127.0.0.1", 0, _app(), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()
    thread.join(5)
    gc.collect()  # surface a leaked handler socket here, in this module, not at the end of the run


@pytest.fixture(scope="module")
def browser(base_url: str) -> Iterator[Browser]:
    # Depends on the server so it closes first: its kept-alive connections end before the server's
    # handler threads are abandoned (an open one surfaced as an unclosed-socket warning at exit).
    del base_url
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser, base_url: str) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 800, "height": 480}, has_touch=True)
    tab = context.new_page()
    problems: list[str] = []
    tab.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    tab.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    tab.on(
        "request",
        lambda r: None if r.url.startswith(base_url + "/") else problems.append(f"external request {r.url}"),
    )
    tab.add_init_script(INIT_SCRIPT)
    tab.goto(base_url + "/")
    yield tab
    if not tab.is_closed() and tab.url.startswith(base_url + "/"):
        problems += [f"CSP violation: {v}" for v in tab.evaluate("window.__csp || []")]
    context.close()
    assert problems == []


# --- helpers ------------------------------------------------------------------------------------


def keyboard(page: Page) -> Locator:
    return page.locator(".osk")


def key(page: Page, name: str) -> Locator:
    """A key of the layout on screen, by its accessible name (hidden layouts are not in the tree)."""
    return keyboard(page).get_by_role("button", name=name, exact=True)


def tap(page: Page, *names: str) -> None:
    for name in names:
        key(page, name).tap()


def focused(page: Page) -> str:
    active: str = page.evaluate("document.activeElement.id")
    return active


def value(page: Page, field: str) -> str:
    return page.locator(f"#{field}").input_value()


def set_field(page: Page, field: str, text: str, caret: int) -> None:
    page.evaluate(
        "([id, text, caret]) => { const f = document.getElementById(id); f.value = text;"
        " f.setSelectionRange(caret, caret); }",
        [field, text, caret],
    )


def inputs(page: Page) -> list[list[Any]]:
    """[target id, inputType, data, isTrusted] of every input event that reached window."""
    events: list[list[Any]] = page.evaluate("window.__inputs")
    return events


def hold(page: Page, target: Locator, ms: int) -> None:
    """Touch and hold (CDP touch events: Playwright's tap has no duration)."""
    box = target.bounding_box()
    assert box is not None
    point = {"x": box["x"] + box["width"] / 2, "y": box["y"] + box["height"] / 2}
    cdp = page.context.new_cdp_session(page)
    cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [point]})
    page.wait_for_timeout(ms)
    cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    cdp.detach()


def visible_keys(page: Page) -> list[dict[str, Any]]:
    keys: list[dict[str, Any]] = page.evaluate(
        """() => [...document.querySelectorAll('.osk-key')].filter((b) => b.getClientRects().length)
          .map((b) => {
            const r = b.getBoundingClientRect(), s = getComputedStyle(b);
            return {name: b.getAttribute('aria-label') || b.textContent, w: r.width, h: r.height,
                    color: s.color, background: s.backgroundColor};
          })"""
    )
    return keys


def _luminance(css: str) -> float:
    channels = [int(part) / 255 for part in css[css.index("(") + 1 : css.index(")")].split(",")[:3]]
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(foreground: str, background: str) -> float:
    light, dark = sorted((_luminance(foreground), _luminance(background)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


# --- tests --------------------------------------------------------------------------------------


def test_built_once_hidden_and_labelled(page: Page, base_url: str) -> None:
    osk = keyboard(page)
    expect(osk).to_have_count(1)
    expect(osk).to_be_hidden()
    assert osk.get_attribute("hidden") is not None
    assert osk.get_attribute("role") == "group"
    assert osk.get_attribute("aria-label") == "On-screen keyboard"
    named = page.evaluate(
        """() => [...document.querySelectorAll('.osk button')].map((b) => [b.type, b.tabIndex,
            (b.getAttribute('aria-label') || b.textContent).trim()])"""
    )
    assert len(named) > 150
    assert all(kind == "button" and tabindex == -1 and name for kind, tabindex, name in named)
    symbols = {name for _, _, name in named}
    assert {"Shift", "Caps Lock", "Backspace", "Space", "Done", "At sign", "Hide keyboard"} <= symbols

    page.goto(base_url + "/?twice=1")  # the script loaded twice still makes one keyboard
    page.locator("#plain").tap()
    expect(keyboard(page)).to_have_count(1)
    expect(keyboard(page)).to_be_visible()


def test_taps_type_in_order_with_shift_and_input_events(page: Page) -> None:
    page.locator("#plain").tap()
    expect(keyboard(page)).to_be_visible()
    tap(page, "Shift", "H", "i", "Space", "u", "ş", "ğ", "ı", "ö", "é", "ë", "1", "At sign", "Dot")
    assert value(page, "plain") == "Hi uşğıöéë1@."  # Shift is one-shot: "i" after "H" is lower case
    assert focused(page) == "plain"  # no key ever took the focus
    events = inputs(page)
    assert len(events) == 13  # one input event per character key, none for Shift
    assert all(target == "plain" and kind == "insertText" and trusted for target, kind, _, trusted in events)
    assert [data for _, _, data, _ in events][:3] == ["H", "i", " "]

    tap(page, "Caps Lock")
    expect(key(page, "a")).to_have_count(0)  # the labels follow the case
    tap(page, "A", "B")
    assert value(page, "plain").endswith("AB")
    assert key(page, "Caps Lock").get_attribute("aria-pressed") == "true"


def test_turkish_dotted_capital_i(page: Page, base_url: str) -> None:
    page.goto(base_url + "/?lang=tr")
    page.locator("#plain").tap()
    assert keyboard(page).get_attribute("aria-label") == "Ekran klavyesi"
    tap(page, "Büyük harf")
    expect(key(page, "İ")).to_be_visible()  # in Turkish Shift+i is İ, and Shift+ı is I
    tap(page, "İ", "s", "t", "a", "n", "b", "u", "l", "Boşluk", "Büyük harf", "I", "ş", "ı", "ğ", "ı")
    assert value(page, "plain") == "İstanbul Işığı"
    assert focused(page) == "plain"


def test_caret_in_the_middle_and_backspace(page: Page) -> None:
    page.locator("#plain").tap()
    set_field(page, "plain", "abcd", caret=2)
    tap(page, "x")
    assert value(page, "plain") == "abxcd"
    assert page.evaluate("document.getElementById('plain').selectionStart") == 3
    tap(page, "Backspace", "Backspace")
    assert value(page, "plain") == "acd"
    assert page.evaluate("document.getElementById('plain').selectionStart") == 1
    page.evaluate("document.getElementById('plain').setSelectionRange(1, 3)")  # a selection is replaced
    tap(page, "z")
    assert value(page, "plain") == "az"
    assert [kind for _, kind, _, _ in inputs(page)] == [
        "insertText",
        "deleteContentBackward",
        "deleteContentBackward",
        "insertText",
    ]
    assert focused(page) == "plain"


def test_backspace_repeats_while_held(page: Page) -> None:
    page.locator("#plain").tap()
    page.evaluate("document.getElementById('plain').value = 'x'.repeat(30)")
    hold(page, key(page, "Backspace"), 1200)
    left = len(value(page, "plain"))
    assert left <= 30 - 6  # one at once, then repeats every 75 ms after 450 ms
    page.wait_for_timeout(300)
    assert len(value(page, "plain")) == left  # and stops on release
    assert focused(page) == "plain"


def test_maxlength_is_honoured(page: Page) -> None:
    page.locator("#short").tap()
    tap(page, "a", "b", "c", "d", "e", "f", "g")
    assert value(page, "short") == "abcde"
    assert len(inputs(page)) == 5
    page.locator("#email").tap()  # no selection API on type=email: the browser's editing keeps the limit
    page.evaluate("document.getElementById('email').maxLength = 3")
    tap(page, "a", "At sign", "b", "c")
    assert value(page, "email") == "a@b"


def test_email_layout_offers_at_and_dot(page: Page) -> None:
    page.locator("#email").tap()
    at, dot = key(page, "At sign"), key(page, "Dot")
    expect(at).to_be_visible()
    expect(at).to_contain_class("osk-key--prominent")
    expect(dot).to_contain_class("osk-key--prominent")
    expect(key(page, "Space")).to_have_count(0)  # no spaces in addresses
    assert key(page, "Shift").get_attribute("aria-pressed") == "false"  # no autocapitalisation here
    tap(page, "a", "y", "s", "e", "At sign", "e", "x", "Dot", "n", "l")
    assert value(page, "email") == "ayse@ex.nl"
    page.keyboard.press("Home")  # the caret is honoured in e-mail fields too
    tap(page, "z")
    assert value(page, "email") == "zayse@ex.nl"
    assert focused(page) == "email"


def test_tel_and_numeric_fields_get_the_number_pad(page: Page) -> None:
    page.locator("#phone").tap()
    pad = page.locator(".osk-layout--numpad")
    expect(pad).to_be_visible()
    expect(page.locator(".osk-layout--letters")).to_be_hidden()
    for name in [*"0123456789", "Plus", "Space", "Backspace", "Done", "Hide keyboard"]:
        expect(key(page, name)).to_be_visible()
    expect(key(page, "q")).to_have_count(0)
    tap(page, "Plus", "3", "1", "Space", "6", "1", "2", "2", "Backspace")
    assert value(page, "phone") == "+31 612"
    box = key(page, "5").bounding_box()
    assert box is not None and box["width"] >= 100 and box["height"] >= 56  # a large pad

    page.locator("#pin").tap()  # inputmode=numeric on a text input
    expect(pad).to_be_visible()
    tap(page, "4", "2")
    assert value(page, "pin") == "42"


def test_done_moves_to_next_field_then_submits(page: Page) -> None:
    page.locator("#name").tap()
    assert key(page, "Shift").get_attribute("aria-pressed") == "true"  # autocapitalize=words
    tap(page, "A", "n", "n", "e", "Space", "M", "a", "r", "i", "e")
    assert value(page, "name") == "Anne Marie"
    tap(page, "Next")
    assert focused(page) == "email"
    expect(key(page, "At sign")).to_be_visible()
    tap(page, "a", "At sign", "b", "Dot", "n", "l", "Next")
    assert focused(page) == "phone"
    tap(page, "0", "6")
    with page.expect_navigation(url="**/submitted"):
        tap(page, "Done")  # the last field: like Enter, a click on the form's default button
    submitted = json.loads(page.locator("#result").inner_text())
    assert submitted == {"action": "join", "email": "a@b.nl", "first_name": "Anne Marie", "phone": "06"}


def test_hides_when_focus_leaves_and_honours_opt_out(page: Page) -> None:
    osk = keyboard(page)
    page.locator("#name").tap()
    expect(osk).to_be_visible()
    assert page.evaluate("document.documentElement.classList.contains('osk-open')")
    page.locator("#title").tap()  # plain text: the field loses focus
    expect(osk).to_be_hidden()
    assert osk.get_attribute("hidden") is not None
    assert not page.evaluate("document.documentElement.classList.contains('osk-open')")

    page.locator("#plain").tap()
    expect(osk).to_be_visible()
    page.locator("#off").tap()  # data-osk="off"
    assert focused(page) == "off"
    expect(osk).to_be_hidden()

    page.locator("#plain").tap()
    page.locator("#agree").tap()  # a checkbox is not typed into
    expect(osk).to_be_hidden()

    page.locator("#plain").tap()
    tap(page, "Hide keyboard")
    expect(osk).to_be_hidden()
    assert focused(page) == ""


def test_accents_by_long_press_and_accents_page(page: Page) -> None:
    page.locator("#plain").tap()
    hold(page, key(page, "e"), 800)
    strip = page.locator(".osk-variants")
    expect(strip).to_be_visible()
    assert value(page, "plain") == ""  # the long press itself types nothing
    expect(strip.get_by_role("button", name="ễ", exact=True)).to_be_visible()  # Vietnamese too
    strip.get_by_role("button", name="ê", exact=True).tap()
    expect(strip).to_be_hidden()
    tap(page, "Accented letters")
    expect(page.locator(".osk-layout--accents")).to_be_visible()
    tap(page, "ñ")
    expect(page.locator(".osk-layout--letters")).to_be_visible()  # one accent, then back to letters
    tap(page, "Shift")
    hold(page, key(page, "O"), 800)
    strip.get_by_role("button", name="Ø", exact=True).tap()
    assert value(page, "plain") == "êñØ"
    assert focused(page) == "plain"


def test_textarea_enter_is_a_new_line(page: Page) -> None:
    page.locator("#notes").tap()
    tap(page, "h", "i", "New line", "x")
    assert page.locator("#notes").input_value() == "hi\nx"


def test_fallback_without_browser_editing(page: Page) -> None:
    page.evaluate("document.execCommand = () => false")  # setRangeText at the caret + synthetic events
    page.locator("#plain").tap()
    set_field(page, "plain", "ac", caret=1)
    tap(page, "b", "Backspace", "ç")
    assert value(page, "plain") == "açc"
    assert page.evaluate("document.getElementById('plain').selectionStart") == 2
    assert [(kind, trusted) for _, kind, _, trusted in inputs(page)] == [
        ("insertText", False),
        ("deleteContentBackward", False),
        ("insertText", False),
    ]
    page.locator("#short").tap()
    tap(page, "a", "b", "c", "d", "e", "f")
    assert value(page, "short") == "abcde"
    page.locator("#title").tap()
    assert page.evaluate("window.__changes") == ["plain", "short"]  # as the browser would on blur


def test_large_keys_high_contrast_field_above_keyboard_screenshot(page: Page) -> None:
    for field, layout in [("plain", "letters"), ("email", "email"), ("phone", "numpad")]:
        page.locator(f"#{field}").tap()
        expect(page.locator(f".osk-layout--{layout}")).to_be_visible()
        keys = visible_keys(page)
        small = [k for k in keys if k["w"] < 48 or k["h"] < 48]
        assert keys and small == []
        low = [k for k in keys if contrast(k["color"], k["background"]) < 7]
        assert low == []
        assert page.evaluate("document.documentElement.scrollWidth") <= 800
        field_box = page.locator(f"#{field}").bounding_box()
        keyboard_box = keyboard(page).bounding_box()
        assert field_box is not None and keyboard_box is not None
        assert field_box["y"] >= 0 and field_box["y"] + field_box["height"] <= keyboard_box["y"]
    tap(page, "Hide keyboard")
    page.locator("#plain").tap()
    tap(page, "Accented letters")
    keys = visible_keys(page)
    assert len(keys) > 60 and all(k["w"] >= 48 and k["h"] >= 48 for k in keys)

    page.goto(page.url)
    page.locator("#name").tap()
    tap(page, "A", "y", "ş", "e")
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT))
    assert SCREENSHOT.stat().st_size > 10_000
