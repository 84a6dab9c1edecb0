"""What the app page inside Bitrix24 shows, gathered from the apps that register a panel.

The platform does not know PBX connections or SMS accounts (telephony and sms import
bitrixapp, never the other way round), so each app registers a function that describes its
part for one portal: its accounts (status, webhook URLs), a setup checklist that ticks itself
from real state, and recent activity. `register("telephony", telephony.app_panel.panel)`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from django.utils import translation

from bitrixapp import languages
from bitrixapp.models import Portal


@dataclass(frozen=True)
class Step:
    """One setup step: done or not, and when not, exactly what to do next."""

    title: str
    done: bool
    todo: str = ""


@dataclass(frozen=True)
class Url:
    label: str
    url: str


@dataclass(frozen=True)
class Account:
    """A PBX connection or an SMS account as a portal admin sees it."""

    name: str
    kind: str  # e.g. "Mango Office PBX"
    active: bool
    urls: list[Url] = field(default_factory=list)
    last_event_at: datetime | None = None
    last_error: str = ""
    last_error_at: datetime | None = None
    notes: list[str] = field(default_factory=list)  # e.g. "2 of 3 lines registered"


@dataclass(frozen=True)
class Activity:
    at: datetime | None
    text: str
    state: str  # short words: "answered", "missed", "failed"...
    ok: bool = True


@dataclass(frozen=True)
class Panel:
    title: str
    accounts: list[Account]
    steps: list[Step]
    recent_title: str
    recent: list[Activity]

    @property
    def done(self) -> bool:
        return all(step.done for step in self.steps)

    @property
    def next_step(self) -> Step | None:
        return next((step for step in self.steps if not step.done), None)


PANELS: dict[str, Callable[[Portal], Panel | None]] = {}  # None: nothing to show


def register(name: str, build: Callable[[Portal], Panel | None]) -> None:
    if name in PANELS:
        raise ValueError(f"app page panel {name!r} is registered twice")
    PANELS[name] = build


def panels(portal: Portal) -> list[Panel]:
    return [panel for build in PANELS.values() if (panel := build(portal)) is not None]


def activate(bitrix_lang: object) -> str:
    """Speak the language of Bitrix24's LANG (the app page's query) for this request."""
    language = languages.of_bitrix(bitrix_lang)
    translation.activate(language)
    return language
