"""Scenario files (demo/scenarios/<name>.yaml): the script of a demo as data.

A scenario is a title and a list of calls (an SMS is one too). Each has a clock time and a
sentence for the terminal, the client's number, the PBX it comes through (`via: mango`, the
default, `mtt` or `generic`: the demo's connection of that provider), and steps played in
order; `repeat: N` plays N copies at once (a burst). A step is one thing that happens in the
outside world:

  pbx: <fixture>            the PBX posts tests/fixtures/<provider>/<fixture>.json to the
                            connection's webhook, signed by the provider's sign_fixture
                            (`set:` patches dotted keys, in the fixture's own times; `leg:`
                            names the call leg; `recording: true` makes the PBX hold a
                            recording for it)
  crm_click: {user: 12}     a user clicks the client's number in the CRM (ONEXTERNALCALLSTART)
  callback_form: {crm_owner: 13}   a visitor asks for a callback (ONEXTERNALCALLBACKSTART)
  sms: {deal: 7, contact: 5, text: "..."}   a user sends an SMS from a deal: Bitrix24 posts it
                            to the sender's handler; the app sends it through MTS; then MTS
                            pushes its delivery report (`report: delivered`, the default, or
                            `undelivered`)
  pause: 2                  seconds of nothing

A new kind of step is a new entry in STEP_KINDS and in the player's table; a file naming an
unknown kind (or an unknown `via`) is refused with the known ones listed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SCENARIOS = Path(__file__).resolve().parent / "scenarios"
STEP_KINDS = ("pbx", "crm_click", "callback_form", "sms", "pause")
PBX_PROVIDERS = ("mango", "mtt", "generic")


class ScenarioError(ValueError):
    pass


@dataclass(frozen=True)
class Step:
    kind: str
    value: Any
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ScriptedCall:
    at: str
    say: str
    client: str
    steps: tuple[Step, ...]
    repeat: int = 1
    via: str = "mango"


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    calls: tuple[ScriptedCall, ...]


def names() -> list[str]:
    return sorted(p.stem for p in SCENARIOS.glob("*.yaml"))


def load(name: str) -> Scenario:
    path = SCENARIOS / f"{name}.yaml"
    if not path.is_file():
        raise ScenarioError(f"no scenario {name!r}; there are: {', '.join(names())}")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    calls = tuple(_call(item, f"calls[{i}]") for i, item in enumerate(data.get("calls") or []))
    if not calls:
        raise ScenarioError(f"{path.name}: no calls")
    return Scenario(name, str(data.get("title") or name), calls)


def _call(item: dict[str, Any], where: str) -> ScriptedCall:
    steps = tuple(_step(s, f"{where}.steps[{i}]") for i, s in enumerate(item.get("steps") or []))
    if not steps:
        raise ScenarioError(f"{where}: no steps")
    via = str(item.get("via") or "mango")
    if via not in PBX_PROVIDERS:
        raise ScenarioError(f"{where}.via: {via!r} is none of {', '.join(PBX_PROVIDERS)}")
    return ScriptedCall(
        at=str(item.get("at") or ""),
        say=str(item.get("say") or ""),
        client=str(item.get("client") or "+79161234567"),
        steps=steps,
        repeat=int(item.get("repeat") or 1),
        via=via,
    )


def _step(item: dict[str, Any], where: str) -> Step:
    kinds = [k for k in STEP_KINDS if k in item]
    if len(kinds) != 1:
        raise ScenarioError(f"{where}: a step has exactly one of {', '.join(STEP_KINDS)}")
    kind = kinds[0]
    options = {k: v for k, v in item.items() if k != kind}
    return Step(kind, item[kind], options)
