"""The connection admin form: credential inputs (required and optional keys) and the one
table of connection settings that feeds both the form and the configuration file."""

from typing import ClassVar

import pytest

from bitrixapp import config
from bitrixapp.credential_form import label
from telephony import providers
from telephony.config import CONNECTION_SETTINGS
from telephony.models import PbxConnection

pytestmark = pytest.mark.django_db

URL = "/admin/telephony/pbxconnection/"


class Rotating:
    """A provider like the generic webhook: one secret, and the previous one while rotating."""

    slug: ClassVar[str] = "rotating"
    name: ClassVar[str] = "Rotating PBX"
    credential_keys: ClassVar[tuple[str, ...]] = ("secret",)
    optional_credential_keys: ClassVar[tuple[str, ...]] = ("previous_secret",)


@pytest.fixture
def rotating(monkeypatch):
    monkeypatch.setitem(providers.REGISTRY, "rotating", f"{__name__}:Rotating")
    yield
    providers.get.cache_clear()


@pytest.fixture
def connection(make_portal, rotating) -> PbxConnection:
    portal, _ = make_portal()
    return PbxConnection.objects.create(
        portal=portal, name="Office", provider="rotating", credentials={"secret": "S-NOW"}
    )


def post(admin_client, connection: PbxConnection, **changes):
    data = {
        "portal": connection.portal_id,
        "name": connection.name,
        "provider": connection.provider,
        "is_active": "on",
        "missed_call_min_duration_s": 0,
        **{f"{prefix}-{k}": v for prefix in ("lines", "extensions") for k, v in _empty().items()},
        **changes,
    }
    answer = admin_client.post(f"{URL}{connection.pk}/change/", data)
    assert answer.status_code == 302, answer.content.decode()[:3000]
    connection.refresh_from_db()
    return connection.credentials


def _empty() -> dict:
    return {"TOTAL_FORMS": 0, "INITIAL_FORMS": 0, "MIN_NUM_FORMS": 0, "MAX_NUM_FORMS": 1000}


def test_an_optional_key_is_editable_and_kept_when_left_empty(admin_client, connection):
    page = admin_client.get(f"{URL}{connection.pk}/change/").content.decode()
    assert 'name="credential_previous_secret"' in page
    assert 'name="remove_credential_previous_secret"' in page
    assert "Previous secret" in page and "Rotating PBX: optional — not set" in page
    assert "S-NOW" not in page

    assert post(admin_client, connection, credential_previous_secret="S-OLD") == {
        "secret": "S-NOW",
        "previous_secret": "S-OLD",
    }
    page = admin_client.get(f"{URL}{connection.pk}/change/").content.decode()
    assert "Rotating PBX: optional — stored; leave empty to keep it" in page
    assert "S-OLD" not in page
    assert post(admin_client, connection) == {"secret": "S-NOW", "previous_secret": "S-OLD"}
    assert post(admin_client, connection, remove_credential_previous_secret="on") == {
        "secret": "S-NOW"
    }


def test_values_of_another_provider_are_not_kept(admin_client, connection):
    connection.credentials = {"api_key": "K", "api_salt": "S"}
    connection.provider = "mango"
    connection.save()
    answer = admin_client.post(
        f"{URL}{connection.pk}/change/",
        {
            "portal": connection.portal_id,
            "name": connection.name,
            "provider": "rotating",
            "missed_call_min_duration_s": 0,
            **{f"{p}-{k}": v for p in ("lines", "extensions") for k, v in _empty().items()},
        },
    )
    assert "Rotating PBX needs this key" in answer.content.decode()
    connection.provider = "rotating"  # as posted
    assert post(admin_client, connection, credential_secret="NEW") == {"secret": "NEW"}


def test_credential_labels_are_words():
    assert [label(k) for k in ("api_key", "previous_secret", "client_id")] == [
        "API key",
        "Previous secret",
        "Client ID",
    ]


def test_the_settings_table_drives_the_admin_form_and_the_config_format(admin_client, make_portal):
    portal, _ = make_portal()
    page = admin_client.get(f"{URL}add/").content.decode()
    call_handling = page[page.index("Call handling") :]
    for setting in CONNECTION_SETTINGS:
        assert f'name="{setting}"' in call_handling, setting

    connection = PbxConnection.objects.create(
        portal=portal, name="Main", provider="mango", credentials={"api_key": "k", "api_salt": "s"}
    )
    exported = config.export(portal)["pbx"][0]
    assert set(CONNECTION_SETTINGS) <= exported.keys()
    # Every setting is accepted on import, checked, and applied.
    wanted = {
        "api_url": "https://pbx.example.com/",
        "default_user_id": 7,
        "show_card": False,
        "crm_create": False,
        "missed_call_min_duration_s": 5,
        "route_to_responsible": True,
        "log_internal_calls": True,
        "only_mapped_lines": True,
        "callback_extension": "500",
        "default_line_number": "main-line",
    }
    assert wanted.keys() == CONNECTION_SETTINGS.keys()
    spec = config.parse({"portal": portal.domain, "pbx": [{**exported, **wanted}]})
    config.apply(spec)
    connection.refresh_from_db()
    assert {key: getattr(connection, key) for key in wanted} == wanted
    with pytest.raises(config.ConfigError, match=r"pbx\[0\]\.callback_extension: must be a string"):
        config.parse({"portal": portal.domain, "pbx": [{**exported, "callback_extension": 500}]})
