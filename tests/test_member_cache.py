"""The node's member cache as the central receiver fills it, and what the kiosk makes of it."""

from __future__ import annotations

from collections.abc import Iterator

import msgspec
import pytest

from cloud_sync.messages import MemberInfo
from edge.members import MemberDirectory, MemberSummary
from edge.notify import IdentityNotice, Notifier
from kiosk_ui import KioskConfig, KioskInfo, create_app
from kiosk_ui.live import LiveFeed

TOKEN = "b" * 64


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def info(**kw: object) -> MemberInfo:
    base: dict[str, object] = {
        "token": TOKEN,
        "known": True,
        "member_code": "M0000004275",
        "first_name": "Zeynep",
        "tier": "silver",
        "points": 320,
        "rewards": ["coffee", "free-coffee"],
        "reward_names": {"coffee": "Free coffee", "free-coffee": "Coffee card: free coffee"},
        "stamps": {"coffee-card": [4, 9]},
    }
    base.update(kw)
    return msgspec.convert(base, MemberInfo)


def test_known_unknown_blocked_and_erased() -> None:
    clock = Clock()
    members = MemberDirectory(max_age=3600, unknown_max_age=60, clock=clock)
    assert members.apply(info()) is True
    summary = members.lookup(TOKEN)
    assert summary is not None
    assert (summary.first_name, summary.tier, summary.points) == ("Zeynep", "silver", 320)
    assert [(s.card, s.stamps, s.needed) for s in summary.stamps] == [("coffee-card", 4, 9)]
    assert summary.reward_label("coffee") == "Free coffee" and summary.reward_label("other") == "other"
    assert members.apply(info(blocked=True)) is False  # a blocked card greets nobody
    assert members.lookup(TOKEN) is None and not members.is_unknown(TOKEN)
    assert members.apply(info(known=False, member_code=None, first_name=None, tier=None)) is False
    assert members.is_unknown(TOKEN)
    clock.now += 61  # asked again after a minute: the card may have joined elsewhere
    assert not members.is_unknown(TOKEN)
    members.apply(info())
    clock.now += 3601  # a first name is not kept for ever on the node
    assert members.lookup(TOKEN) is None
    members.apply(info())
    members.apply(info(token="c" * 64))
    members.forget_all([TOKEN, "c" * 64, "d" * 64])
    assert members.lookup(TOKEN) is None and members.lookup("c" * 64) is None


def test_a_member_without_a_name_in_the_vault_gets_a_plain_greeting() -> None:
    summary = MemberSummary.from_info(info(first_name=None, member_code=None))
    assert summary.first_name == "" and summary.member_code == ""


@pytest.fixture
def notifier() -> Notifier:
    return Notifier()


@pytest.fixture
def feed(notifier: Notifier) -> Iterator[LiveFeed]:
    live = LiveFeed(notifier, 60.0)
    yield live
    live.close()


def _tap(notifier: Notifier, token: str = TOKEN) -> None:
    notifier.publish(IdentityNotice("nfc", token, "nfc0", "ntag", None, "id", 1))


@pytest.mark.parametrize(
    ("lang", "tier", "stamps"),
    [
        ("en", "Tier: Silver", "Stamp card: 4 of 9"),
        ("nl", "Niveau: Silver", "Spaarkaart: 4 van 9"),
        ("tr", "Seviye: Silver", "Damga kartı: 4 / 9"),  # noqa: RUF001 - Turkish dotless i
        ("zh", "会员等级：Silver", "集章卡：4 / 9"),  # noqa: RUF001 - Chinese punctuation
    ],
)
def test_welcome_shows_tier_stamps_and_reward_names(
    feed: LiveFeed, notifier: Notifier, lang: str, tier: str, stamps: str
) -> None:
    members = MemberDirectory()
    members.apply(info())
    client = create_app(
        KioskInfo("s1", "n1", "0.1"), config=KioskConfig(default_language=lang), feed=feed, members=members
    ).test_client()
    _tap(notifier)
    page = client.get("/welcome").get_data(as_text=True)
    assert tier in page and stamps in page
    assert page.count('class="stamp on"') == 4 and page.count('class="stamp"') == 5
    assert "Free coffee" in page and "Coffee card: free coffee" in page
    assert "M0000004275" not in page and TOKEN not in page


def test_the_screen_follows_the_central_answer_live(feed: LiveFeed, notifier: Notifier) -> None:
    members = MemberDirectory()
    client = create_app(KioskInfo("s1", "n1", "0.1"), feed=feed, members=members).test_client()
    stream = feed.stream()
    _tap(notifier)
    assert "event: identity" in next(s for s in stream if s.startswith("event:"))
    assert 'data-state="pending"' in client.get("/welcome").get_data(as_text=True)

    # the answer for someone else changes nothing on this screen
    feed.member_updated("e" * 64, True)
    # "not a member": the screen invites to join
    members.apply(info(known=False, member_code=None, first_name=None, tier=None))
    feed.member_updated(TOKEN, False)
    event = next(s for s in stream if s.startswith("event:"))
    assert '"state":"unknown"' in event
    page = client.get("/welcome").get_data(as_text=True)
    assert 'data-state="unknown"' in page and 'href="/join"' in page
    # it joined: the figures arrive, the screen greets
    members.apply(info())
    feed.member_updated(TOKEN, True)
    assert '"state":"member"' in next(s for s in stream if s.startswith("event:"))
    assert "Welcome back, Zeynep!" in client.get("/welcome").get_data(as_text=True)
    # erased centrally: the screen lets go of them at once
    members.forget_all([TOKEN])
    feed.forget_tokens([TOKEN])
    assert '"state":"gone"' in next(s for s in stream if s.startswith("event:"))
    assert client.get("/welcome").status_code == 302
