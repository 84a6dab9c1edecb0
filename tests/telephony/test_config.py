"""import_config / export_config: the docs/configuration.md format, idempotent, all or nothing."""

import io
import json
import sys

import pytest
from django.core.management import CommandError, call_command

from bitrixapp.models import B24Command
from telephony.models import PbxConnection, PbxExtension, PbxLine
from tests.conftest import drain

pytestmark = pytest.mark.django_db

ADD, DELETE = "telephony.externalLine.add", "telephony.externalLine.delete"

CONFIG = """
portal: {portal}
pbx:
  - name: Moscow office
    provider: mango
    credentials: {{api_key: "KEY-SECRET-1", api_salt: "SALT-SECRET-2"}}
    api_url: https://app.mango-office.ru/vpbx/
    default_user_id: 1
    show_card: true
    crm_create: false
    missed_call_min_duration_s: 3
    route_to_responsible: true
    only_mapped_lines: true
    lines:
      - {{number: "+74951234567", line_number: "74951234567", name: "Sales Moscow"}}
      - {{number: "+74957654321", line_number: "74957654321", name: "Support",
          crm_auto_create: false}}
    extensions: {{"101": 12, "102": 8}}
"""


def import_text(tmp_path, text: str, name: str = "config.yaml") -> tuple[str, str]:
    path = tmp_path / name
    path.write_text(text)
    out, err = io.StringIO(), io.StringIO()
    call_command("import_config", str(path), stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def export(portal, *flags: str) -> dict:
    out = io.StringIO()
    call_command("export_config", "--portal", portal.domain, *flags, stdout=out)
    return json.loads(out.getvalue())


def commands(portal) -> list[tuple[str, dict]]:
    return [(c.method, c.params) for c in B24Command.objects.filter(portal=portal).order_by("pk")]


def line_params(number: str, name: str, crm: str = "Y") -> tuple[str, dict]:
    return (ADD, {"NUMBER": number, "NAME": name, "CRM_AUTO_CREATE": crm})


@pytest.fixture
def portal(make_portal):
    return make_portal()[0]


@pytest.fixture
def imported(tmp_path, portal) -> PbxConnection:
    import_text(tmp_path, CONFIG.format(portal=portal.domain))
    return PbxConnection.objects.get(portal=portal)


def test_import_creates_the_connection_and_registers_its_lines(imported, portal):
    c = imported
    assert (c.provider, c.api_url, c.default_user_id) == (
        "mango",
        "https://app.mango-office.ru/vpbx/",
        1,
    )
    assert c.credentials == {"api_key": "KEY-SECRET-1", "api_salt": "SALT-SECRET-2"}
    assert (c.show_card, c.crm_create, c.missed_call_min_duration_s) == (True, False, 3)
    assert (c.route_to_responsible, c.only_mapped_lines, c.log_internal_calls) == (
        True,
        True,
        False,
    )
    assert sorted(c.extensions.values_list("extension", "user_id", "source")) == [
        ("101", 12, "manual"),
        ("102", 8, "manual"),
    ]
    assert commands(portal) == [
        line_params("74951234567", "Sales Moscow"),
        line_params("74957654321", "Support", "N"),
    ]
    owners = set(B24Command.objects.values_list("owner_key", flat=True))
    assert owners == {f"line:{portal.pk}:74951234567", f"line:{portal.pk}:74957654321"}


def test_reimporting_the_same_file_changes_and_enqueues_nothing(tmp_path, imported, portal):
    before = list(B24Command.objects.values_list("pk", flat=True))
    updated_at = imported.updated_at
    out, _ = import_text(tmp_path, CONFIG.format(portal=portal.member_id))
    assert "no changes" in out
    assert list(B24Command.objects.values_list("pk", flat=True)) == before
    assert PbxConnection.objects.get(pk=imported.pk).updated_at == updated_at


def test_changed_and_removed_lines_are_updated_and_deleted_in_bitrix24(tmp_path, imported, portal):
    B24Command.objects.all().delete()
    text = CONFIG.format(portal=portal.domain)
    text = text.replace('name: "Sales Moscow"', 'name: "Sales"')  # renamed
    text = text.replace('"74957654321", name: "Support"', '"74950000000", name: "Support"')
    out, _ = import_text(tmp_path, text)
    assert commands(portal) == [
        line_params("74951234567", "Sales"),
        line_params("74950000000", "Support", "N"),
        (DELETE, {"NUMBER": "74957654321"}),  # nothing maps to the old LINE_NUMBER now
    ]
    assert "line +74951234567 → 74951234567 registered" in out

    B24Command.objects.all().delete()
    text = text.replace(
        '  - {number: "+74951234567", line_number: "74951234567", name: "Sales"}\n', ""
    )
    import_text(tmp_path, text)
    assert commands(portal) == [(DELETE, {"NUMBER": "74951234567"})]
    assert list(imported.lines.values_list("number", flat=True)) == ["+74957654321"]


def test_a_line_number_another_connection_still_uses_is_not_deleted(tmp_path, imported, portal):
    other = PbxConnection.objects.create(portal=portal, name="Other", provider="mango")
    PbxLine.objects.create(connection=other, number="x", line_number="74957654321")
    B24Command.objects.all().delete()
    text = CONFIG.format(portal=portal.domain)
    text = text.replace('"74957654321", name: "Support"', '"74950000000", name: "Support"')
    import_text(tmp_path, text)
    assert [m for m, _ in commands(portal)] == [ADD]


def test_extensions_replace_manual_rows_and_keep_those_read_from_bitrix24(
    tmp_path, imported, portal
):
    bitrix = PbxExtension.Source.BITRIX
    PbxExtension.objects.create(connection=imported, extension="200", user_id=5, source=bitrix)
    PbxExtension.objects.create(connection=imported, extension="103", user_id=6, source=bitrix)
    text = CONFIG.format(portal=portal.domain).replace('{"101": 12, "102": 8}', '{"103": 9}')
    import_text(tmp_path, text)
    assert sorted(imported.extensions.values_list("extension", "user_id", "source")) == [
        ("103", 9, "manual"),  # given in the file: now the admin's value
        ("200", 5, "bitrix"),  # not in the file: left alone
    ]


def test_omitted_settings_lines_and_extensions_are_left_alone(tmp_path, imported, portal):
    import_text(
        tmp_path,
        f"portal: {portal.domain}\npbx:\n  - name: Moscow office\n    provider: mango\n"
        "    credentials: {api_key: KEY-SECRET-1, api_salt: SALT-SECRET-2}\n",
    )
    c = PbxConnection.objects.get(pk=imported.pk)
    assert (c.crm_create, c.missed_call_min_duration_s) == (False, 3)
    assert c.lines.count() == 2 and c.extensions.count() == 2


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ("    provider: mango\n", "    provider: mango\n    colour: red\n"),
            "pbx[0].colour: unknown key",
        ),
        (("portal:", "extra: 1\nportal:"), "extra: unknown key"),
        (('{number: "+74957654321", ', "{"), "pbx[0].lines[1].number: required"),
        (("show_card: true", "show_card: yes please"), "pbx[0].show_card: must be true or false"),
        (
            ("missed_call_min_duration_s: 3", "missed_call_min_duration_s: -1"),
            "pbx[0].missed_call_min_duration_s: must be a whole number",
        ),
        (('"101": 12', "101: 12"), "pbx[0].extensions.101: must be a string"),
        (('"102": 8', '"102": "eight"'), "pbx[0].extensions.102: must be a Bitrix24 user id"),
        (("provider: mango", "provider: nortel"), "pbx[0].provider: unknown provider 'nortel'"),
        (
            (', api_salt: "SALT-SECRET-2"', ""),
            "pbx[0].credentials: missing api_salt (mango needs api_key, api_salt)",
        ),
        (
            ("api_url: https://app.mango-office.ru/vpbx/", "api_url: mango"),
            "pbx[0].api_url: must be an http(s) URL",
        ),
        (
            ('"+74951234567", line_number', '"+74957654321", line_number'),
            "pbx[0].lines[1].number: '+74957654321' is given twice",
        ),
    ],
)
def test_invalid_files_name_the_bad_value_and_change_nothing(tmp_path, portal, change, message):
    text = CONFIG.format(portal=portal.domain).replace(*change)
    with pytest.raises(CommandError) as error:
        import_text(tmp_path, text)
    assert message in str(error.value)
    assert not PbxConnection.objects.exists() and not B24Command.objects.exists()


def test_an_error_in_a_later_entry_rolls_back_the_earlier_ones(tmp_path, portal):
    text = CONFIG.format(portal=portal.domain) + (
        "  - name: Second\n    provider: mango\n"
        '    credentials: {api_key: "***", api_salt: "***"}\n'
    )
    with pytest.raises(CommandError, match=r"pbx\[1\]\.credentials\.api_key: '\*\*\*' keeps"):
        import_text(tmp_path, text)
    assert not PbxConnection.objects.exists() and not B24Command.objects.exists()


def test_unknown_portal_is_an_error(tmp_path, portal):
    with pytest.raises(CommandError, match=r"no installed portal .*'nowhere\.bitrix24\.ru'"):
        import_text(tmp_path, CONFIG.format(portal="nowhere.bitrix24.ru"))


def test_sms_section_is_imported_not_skipped(tmp_path, portal):
    """The sms app registers its section: a mistake in it is an error naming its path, and
    nothing of the file is applied (the pbx section neither)."""
    text = CONFIG.format(portal=portal.domain) + "sms:\n  - name: MTS SMS\n    provider: mts_by\n"
    with pytest.raises(CommandError, match=r"sms\[0\]\.credentials: required"):
        import_text(tmp_path, text)
    assert PbxConnection.objects.filter(portal=portal).count() == 0


def test_json_file_and_stdin(tmp_path, portal, monkeypatch):
    document = {
        "portal": portal.member_id,
        "pbx": [
            {"name": "J", "provider": "mango", "credentials": {"api_key": "a", "api_salt": "b"}}
        ],
    }
    import_text(tmp_path, json.dumps(document), name="config.json")
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps({**document, "pbx": []})))
    call_command("import_config", "-", stdout=io.StringIO())
    document["pbx"][0]["name"] = "From stdin"
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(document)))
    call_command("import_config", "-", stdout=io.StringIO())
    assert sorted(PbxConnection.objects.values_list("name", flat=True)) == ["From stdin", "J"]


def test_export_hides_secrets_unless_asked(imported, portal):
    text = json.dumps(export(portal))
    assert "KEY-SECRET-1" not in text and "SALT-SECRET-2" not in text
    document = json.loads(text)
    (pbx,) = document["pbx"]
    assert pbx["credentials"] == {"api_key": "***", "api_salt": "***"}
    assert pbx["webhook_url"] == imported.webhook_url
    assert "/telephony/hooks/" in pbx["webhook_url"]
    assert document["portal"] == portal.member_id
    assert pbx["lines"][1] == {
        "number": "+74957654321",
        "line_number": "74957654321",
        "name": "Support",
        "crm_auto_create": False,
    }
    assert pbx["extensions"] == {"101": 12, "102": 8}
    secret = export(portal, "--with-secrets")["pbx"][0]["credentials"]
    assert secret == {"api_key": "KEY-SECRET-1", "api_salt": "SALT-SECRET-2"}


def test_export_with_secrets_reimports_to_the_same_state(tmp_path, imported, portal):
    exported = export(portal, "--with-secrets")
    before = list(B24Command.objects.values_list("pk", flat=True))
    import_text(tmp_path, json.dumps(exported), name="export.json")
    assert list(B24Command.objects.values_list("pk", flat=True)) == before  # nothing new

    # Lost state comes back from the export.
    PbxConnection.objects.filter(pk=imported.pk).update(crm_create=True, credentials={})
    imported.lines.filter(number="+74951234567").delete()
    imported.extensions.all().delete()
    import_text(tmp_path, json.dumps(exported), name="export.json")
    assert export(portal, "--with-secrets") == exported


def test_a_masked_export_reimports_keeping_stored_credentials(tmp_path, imported, portal):
    masked = export(portal)
    masked["pbx"][0]["show_card"] = False
    import_text(tmp_path, json.dumps(masked), name="export.json")
    c = PbxConnection.objects.get(pk=imported.pk)
    assert c.credentials == {"api_key": "KEY-SECRET-1", "api_salt": "SALT-SECRET-2"}
    assert c.show_card is False


def test_export_of_an_unknown_portal_is_an_error(portal):
    with pytest.raises(CommandError, match="no installed portal"):
        call_command("export_config", "--portal", "nope", stdout=io.StringIO())


def test_imported_lines_reach_bitrix24(fake, imported, portal):
    drain(portal)
    added = sorted(c.params["NUMBER"] for c in fake.calls_of(ADD, portal.member_id))
    assert added == ["74951234567", "74957654321"]
    assert not imported.lines.filter(registered_at=None).exists()
