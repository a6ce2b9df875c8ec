"""The kiosk app with Flask's test client (the browser-level tests are in test_kiosk_browser.py)."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from edge.notify import IdentityNotice, Notifier, ScanNotice
from kiosk_ui import KioskConfig, KioskInfo, create_app
from kiosk_ui.live import MAX_STREAMS, LiveFeed

TOKEN = "a" * 64


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def notifier() -> Notifier:
    return Notifier()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def feed(notifier: Notifier, clock: Clock) -> Iterator[LiveFeed]:
    live = LiveFeed(notifier, 60.0, keepalive=0.05, clock=clock)
    yield live
    live.close()


@pytest.fixture
def app(feed: LiveFeed) -> Flask:
    config = KioskConfig(display_name="Corner Shop <Mitte>", idle_timeout=60.0, brand_color="#123456")
    return create_app(KioskInfo("s1", "n1", "0.1"), config=config, feed=feed)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def _csrf(page: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, "no CSRF token in the page"
    return match.group(1)


def _tap(notifier: Notifier, source: str = "nfc") -> None:
    notifier.publish(IdentityNotice(source, TOKEN, "reader", "ntag-ultralight", None, "id", 1))  # type: ignore[arg-type]


def test_attract_page_headers_and_escaping(client: FlaskClient) -> None:
    response = client.get("/")
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "Tap your card or scan your code" in page
    assert "Corner Shop &lt;Mitte&gt;" in page and "<Mitte>" not in page  # config text is escaped too
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert response.headers["Cache-Control"] == "no-store"
    assert re.search(r"<script(?![^>]*\ssrc=)", page) is None  # no inline scripts
    assert "style=" not in page and "<style" not in page  # no inline styles either
    assert client.get("/brand.css").get_data(as_text=True).count("#123456") == 1


@pytest.mark.parametrize(
    ("lang", "html_lang", "text"),
    [
        ("tr", "tr", "Kart\u0131n\u0131z\u0131 okutun"),
        ("zh", "zh-Hans", "请刷卡"),
        ("nl", "nl", "Tik uw kaart aan"),
    ],
)
def test_language_switch(client: FlaskClient, lang: str, html_lang: str, text: str) -> None:
    token = _csrf(client.get("/").get_data(as_text=True))
    response = client.post("/lang", data={"lang": lang, "csrf_token": token, "next": "/privacy"})
    assert response.status_code == 302 and response.headers["Location"] == "/privacy"
    page = client.get("/").get_data(as_text=True)
    assert f'<html lang="{html_lang}">' in page and text in page
    assert "Tap your card or scan your code" not in page


@pytest.mark.parametrize(
    "form",
    [
        {"lang": "tr"},  # no CSRF token
        {"lang": "tr", "csrf_token": "forged"},
    ],
)
def test_posts_without_a_valid_csrf_token_are_refused(client: FlaskClient, form: dict[str, str]) -> None:
    client.get("/")
    response = client.post("/lang", data=form)
    assert response.status_code == 400
    assert '<html lang="en">' in client.get("/").get_data(as_text=True)


@pytest.mark.parametrize(
    "lang",
    ["<script>alert(1)</script>", "fr", "", "en" * 5000, "tr\x00"],
    ids=["xss", "fr", "empty", "huge", "nul"],
)
def test_bad_languages_are_refused_and_never_rendered(client: FlaskClient, lang: str) -> None:
    token = _csrf(client.get("/").get_data(as_text=True))
    response = client.post("/lang", data={"lang": lang, "csrf_token": token})
    assert response.status_code in (400, 413)
    assert "<script>alert" not in response.get_data(as_text=True)


def test_next_is_never_an_open_redirect(client: FlaskClient) -> None:
    token = _csrf(client.get("/").get_data(as_text=True))
    for target in ("https://evil.example/", "//evil.example", "/welcome?x=1", "javascript:alert(1)"):
        response = client.post("/lang", data={"lang": "nl", "csrf_token": token, "next": target})
        assert response.headers["Location"] == "/"


def test_welcome_follows_the_visitor_and_forgets_them(
    client: FlaskClient, notifier: Notifier, clock: Clock
) -> None:
    assert client.get("/welcome").headers["Location"] == "/"  # nobody there
    _tap(notifier)
    page = client.get("/welcome").get_data(as_text=True)
    assert 'id="welcome" class="welcome" data-state="pending"' in page and TOKEN not in page
    clock.now += 61  # idle timeout passed since the tap
    assert client.get("/welcome").status_code == 302
    _tap(notifier)
    assert client.get("/welcome").status_code == 200
    client.get("/?idle=1")  # the idle reset / "Done"
    assert client.get("/welcome").status_code == 302


def test_a_scan_that_is_not_an_identity_does_not_change_the_screen(
    client: FlaskClient, notifier: Notifier
) -> None:
    notifier.publish(ScanNotice("gtin", "04006381333931", "scanner"))
    assert client.get("/welcome").status_code == 302


def test_idle_session_is_wiped_on_the_server_too(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    client = app.test_client()
    token = _csrf(client.get("/").get_data(as_text=True))
    client.post("/lang", data={"lang": "tr", "csrf_token": token})
    assert '<html lang="tr">' in client.get("/privacy").get_data(as_text=True)
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 61)
    assert '<html lang="en">' in client.get("/privacy").get_data(as_text=True)


def test_the_live_stream_carries_only_what_to_show(feed: LiveFeed, notifier: Notifier) -> None:
    stream = feed.stream()
    assert next(stream).startswith("retry:")
    _tap(notifier)
    assert next(stream) == 'event: identity\ndata: {"state":"pending"}\n\n'
    assert next(stream) == ": keep-alive\n\n"  # nothing for 50 ms
    feed.close()
    assert list(stream) == []  # close ends it
    assert feed.open_streams == 0


def test_streams_are_bounded_the_newest_page_wins_and_a_slow_page_never_blocks_a_tap(
    feed: LiveFeed, notifier: Notifier
) -> None:
    streams = [feed.stream() for _ in range(MAX_STREAMS)]
    for stream in streams:
        next(stream)
    newest = feed.stream()  # the page on screen now; the oldest (a page the browser left) is ended
    assert next(newest).startswith("retry:")
    assert feed.open_streams == MAX_STREAMS and feed.evicted == 1
    assert list(streams[0]) == []  # the evicted stream returns at its next read
    began = time.perf_counter()
    for _ in range(1000):  # nobody reads: queues drop their oldest, publishing never waits
        _tap(notifier)
    assert time.perf_counter() - began < 2.0
    assert next(streams[1]).startswith("event: identity")
    assert next(newest).startswith("event: identity")
    for stream in (*streams[1:], newest):
        stream.close()  # the page went away
    assert feed.open_streams == 0


def test_events_endpoint_503_only_while_shutting_down(app: Flask, feed: LiveFeed) -> None:
    held = [feed.stream() for _ in range(MAX_STREAMS + 2)]
    for stream in held:
        next(stream)
    assert app.test_client().get("/events").status_code == 200  # never refused for being full
    feed.close()
    response = app.test_client().get("/events")
    assert response.status_code == 503 and response.headers["Retry-After"] == "5"
    for stream in held:
        stream.close()


def test_closing_the_feed_ends_a_blocked_stream(feed: LiveFeed) -> None:
    stream = feed.stream()
    next(stream)
    done = threading.Event()

    def reader() -> None:
        for _ in stream:
            pass
        done.set()

    thread = threading.Thread(target=reader)
    thread.start()
    feed.close()
    assert done.wait(2.0)
    thread.join()


def test_unknown_pages_are_a_friendly_404(client: FlaskClient) -> None:
    response = client.get("/nope/<script>")
    assert response.status_code == 404 and "<script>" not in response.get_data(as_text=True)


def test_every_catalog_is_complete_and_matches_the_templates(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import subprocess
    import sys
    from pathlib import Path

    from babel.messages.pofile import read_po

    root = Path(__file__).resolve().parents[1]
    fresh = tmp_path / "fresh.pot"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "babel.messages.frontend",
            "-q",
            "extract",
            "-F",
            "kiosk_ui/babel.cfg",
            "-k",
            "_",
            "-k",
            "_l",
            "-o",
            str(fresh),
            ".",
        ],
        cwd=root,
        check=True,
    )
    with fresh.open("rb") as handle:
        wanted = {m.id for m in read_po(handle) if m.id}
    assert wanted, "no messages extracted"
    for locale in ("tr", "zh_Hans", "nl"):
        with (root / f"kiosk_ui/translations/{locale}/LC_MESSAGES/messages.po").open("rb") as handle:
            catalog = read_po(handle)
        have = {m.id: m.string for m in catalog if m.id}
        assert wanted <= set(have), f"{locale}: not extracted into the catalog: {sorted(wanted - set(have))}"
        empty = sorted(i for i in wanted if not have[i])
        assert not empty, f"{locale}: untranslated: {empty}"


@pytest.mark.parametrize(
    ("lang", "greeting", "points"),
    [
        ("en", "Welcome back, Zeynep!", "1240 points"),
        ("nl", "Welkom terug, Zeynep!", "1240 punten"),
        ("tr", "Tekrar hoş geldiniz, Zeynep!", "1240 puan"),
        ("zh", "欢迎回来，Zeynep！", "1240 积分"),  # noqa: RUF001 - Chinese punctuation
    ],
)
def test_a_known_member_is_greeted_by_first_name_with_points_and_rewards(
    feed: LiveFeed, notifier: Notifier, lang: str, greeting: str, points: str
) -> None:
    from edge.members import MemberDirectory, MemberSummary

    members = MemberDirectory()
    members.remember(TOKEN, MemberSummary("M0000004275", "Zeynep", "gold", 1240, ("Free coffee",)))
    config = KioskConfig(default_language=lang)
    client = create_app(KioskInfo("s1", "n1", "0.1"), config=config, feed=feed, members=members).test_client()
    _tap(notifier)
    page = client.get("/welcome").get_data(as_text=True)
    assert 'data-state="member"' in page and greeting in page and "Free coffee" in page
    assert points in page
    assert "M0000004275" not in page and TOKEN not in page  # no member code, no token on the screen


def test_a_hostile_first_name_is_escaped_on_the_welcome_screen(feed: LiveFeed, notifier: Notifier) -> None:
    from edge.members import MemberDirectory, MemberSummary

    members = MemberDirectory()
    members.remember(
        TOKEN, MemberSummary("M0000004275", "<script>alert(1)</script>", "basic", 0, ("<b>x</b>",))
    )
    client = create_app(KioskInfo("s1", "n1", "0.1"), feed=feed, members=members).test_client()
    _tap(notifier)
    page = client.get("/welcome").get_data(as_text=True)
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<b>x</b>" not in page


def test_an_unknown_token_still_gets_the_pending_greeting(feed: LiveFeed, notifier: Notifier) -> None:
    from edge.members import MemberDirectory

    client = create_app(KioskInfo("s1", "n1", "0.1"), feed=feed, members=MemberDirectory()).test_client()
    _tap(notifier)
    assert 'data-state="pending"' in client.get("/welcome").get_data(as_text=True)
