"""The kiosk's languages: one table, so the switcher, Babel and ``<html lang>`` always agree."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Language:
    """One language the customer can pick on screen."""

    code: str  # what the switcher posts and the config names
    babel: str  # the catalog / Babel locale
    html: str  # BCP 47 tag for <html lang>
    native: str  # the button label, in the language itself


LANGUAGES: dict[str, Language] = {
    "en": Language("en", "en", "en", "English"),
    "tr": Language("tr", "tr", "tr", "Türkçe"),
    "zh": Language("zh", "zh_Hans", "zh-Hans", "简体中文"),
    "nl": Language("nl", "nl", "nl", "Nederlands"),
}
