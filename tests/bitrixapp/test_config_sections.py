"""The configuration frame: sections that apps register, checked, applied and exported together."""

import io

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command

from bitrixapp import config
from telephony.models import PbxConnection

pytestmark = pytest.mark.django_db

PBX = [{"name": "Main", "provider": "mango", "credentials": {"api_key": "k", "api_salt": "s"}}]


class Things:
    """A section as an app would register it: a list of names, kept in memory."""

    key = "things"

    def __init__(self, fail_on_apply: bool = False):
        self.fail_on_apply = fail_on_apply
        self.applied: list = []

    def parse(self, checker: config.Checker, path: str, data):
        return checker.value(path, config.text(10), data)

    def apply(self, portal, spec, path):
        if self.fail_on_apply:
            raise config.ConfigError([f"{path}: refused by the database"])
        self.applied.append((portal.pk, spec, path))
        return [f"things: {spec}"]

    def export(self, portal, with_secrets):
        return "exported"


@pytest.fixture
def things(monkeypatch) -> Things:
    section = Things()
    monkeypatch.setitem(config.SECTIONS, "things", section)
    return section


def test_telephony_registers_the_pbx_section_at_start_up():
    from telephony import config as pbx_config

    assert config.SECTIONS["pbx"] is pbx_config.SECTION


def test_registering_a_section_twice_raises_and_keeps_the_first(monkeypatch):
    monkeypatch.setattr(config, "SECTIONS", dict(config.SECTIONS))
    first = config.SECTIONS["pbx"]
    duplicate = Things()
    duplicate.key = "pbx"
    with pytest.raises(ImproperlyConfigured, match="'pbx' is registered twice"):
        config.register(duplicate)
    assert config.SECTIONS["pbx"] is first
    portal_section = Things()
    portal_section.key = "portal"
    with pytest.raises(ImproperlyConfigured, match="'portal'"):
        config.register(portal_section)


def test_register_adds_a_section_to_the_known_keys(monkeypatch):
    monkeypatch.setattr(config, "SECTIONS", dict(config.SECTIONS))
    section = Things()
    assert config.register(section) is section
    spec = config.parse({"portal": "p", "things": "bolts"})
    assert spec.sections == {"things": "bolts"}


def test_an_unknown_section_is_an_error_naming_the_known_ones(things):
    with pytest.raises(config.ConfigError) as error:
        config.parse({"portal": "p", "thingz": [], "pbx": []})
    assert error.value.errors == ["thingz: unknown key (known: pbx, portal, sms, things)"]


def test_a_sections_errors_carry_its_path(things):
    with pytest.raises(config.ConfigError) as error:
        config.parse({"portal": "p", "things": 5, "pbx": [{"name": "x"}]})
    assert "things: must be a string (quote numbers in YAML)" in error.value.errors
    assert "pbx[0].provider: required" in error.value.errors


def test_a_planned_section_is_skipped_until_an_app_registers_it(monkeypatch, make_portal):
    monkeypatch.setitem(config.PLANNED_SECTIONS, "fax", "fax gateways are not supported")
    portal, _ = make_portal()
    document = {"portal": portal.domain, "fax": "gateway"}
    assert config.parse(document).warnings == [
        "fax: section skipped: fax gateways are not supported"
    ]
    fax = Things()
    fax.key = "fax"
    monkeypatch.setitem(config.SECTIONS, "fax", fax)
    spec = config.parse(document)
    assert (spec.warnings, spec.sections) == ([], {"fax": "gateway"})
    assert config.apply(spec) == ["things: gateway"]
    assert fax.applied == [(portal.pk, "gateway", "fax")]


def test_every_section_is_applied_and_exported(things, make_portal):
    portal, _ = make_portal()
    out = io.StringIO()
    spec = config.parse({"portal": portal.member_id, "pbx": PBX, "things": "bolts"})
    assert config.apply(spec) == ["Main: created", "things: bolts"]
    call_command("export_config", "--portal", portal.domain, stdout=out)
    assert '"things": "exported"' in out.getvalue()
    assert config.export(portal)["pbx"][0]["credentials"] == {"api_key": "***", "api_salt": "***"}


def test_a_failing_section_rolls_back_the_others(things, make_portal, tmp_path):
    portal, _ = make_portal()
    things.fail_on_apply = True
    path = tmp_path / "c.yaml"
    path.write_text(f"portal: {portal.domain}\npbx:\n  - {PBX[0]}\nthings: bolts\n")
    with pytest.raises(CommandError, match="nothing imported:\nthings: refused by the database"):
        call_command("import_config", str(path), stdout=io.StringIO())
    assert not PbxConnection.objects.exists()


def test_a_credential_key_the_provider_does_not_take_is_named():
    pbx = [{**PBX[0], "credentials": {"api_key": "k", "api_salt": "s", "api_sault": "s"}}]
    with pytest.raises(config.ConfigError) as error:
        config.parse({"portal": "p", "pbx": pbx})
    assert error.value.errors == [
        "pbx[0].credentials.api_sault: unknown key (mango takes api_key, api_salt)"
    ]
