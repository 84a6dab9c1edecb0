"""Scenario files: every shipped one loads; `via` and the `sms` step are read, and a wrong
`via` is refused with the known providers listed."""

import pytest
import yaml

from demo import scenario


@pytest.mark.parametrize("name", scenario.names())
def test_every_shipped_scenario_loads(name):
    assert scenario.load(name).calls


def test_office_hour_plays_every_provider_and_an_sms():
    calls = scenario.load("office-hour").calls
    assert {c.via for c in calls} == set(scenario.PBX_PROVIDERS)
    (sms,) = [s for c in calls for s in c.steps if s.kind == "sms"]
    assert sms.value["deal"] and sms.value["text"]


def _load(tmp_path, monkeypatch, calls):
    monkeypatch.setattr(scenario, "SCENARIOS", tmp_path)
    (tmp_path / "x.yaml").write_text(yaml.safe_dump({"calls": calls}))
    return scenario.load("x")


def test_via_defaults_to_mango_and_names_a_provider(tmp_path, monkeypatch):
    loaded = _load(tmp_path, monkeypatch, [{"steps": [{"pbx": "ringing"}], "via": "generic"}])
    assert loaded.calls[0].via == "generic"
    assert _load(tmp_path, monkeypatch, [{"steps": [{"pause": 1}]}]).calls[0].via == "mango"
    with pytest.raises(scenario.ScenarioError, match=r"calls\[0\]\.via: 'asterisk' is none of"):
        _load(tmp_path, monkeypatch, [{"steps": [{"pbx": "ringing"}], "via": "asterisk"}])


def test_a_step_with_an_unknown_kind_lists_the_known_ones(tmp_path, monkeypatch):
    with pytest.raises(scenario.ScenarioError, match="pbx, crm_click, callback_form, sms, pause"):
        _load(tmp_path, monkeypatch, [{"steps": [{"fax": 1}]}])
