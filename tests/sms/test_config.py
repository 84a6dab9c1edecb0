"""The `sms` section of import_config/export_config."""

import copy

import pytest

from bitrixapp import config
from sms.models import SmsAccount, SmsSender
from tests.conftest import drain

pytestmark = pytest.mark.django_db

SMS = [
    {
        "name": "MTS SMS",
        "provider": "mts_by",
        "credentials": {"client_id": "4242", "login": "acme", "password": "pw"},
        "api_url": "https://api.communicator.mts.by/",
        "default_region": "BY",
        "rate_per_second": 20,
        "senders": [
            {
                "code": "mts_sms_by",
                "name": "MTS SMS",
                "alpha_name": "ACME",
                "kind": "transactional",
            },
            {
                "code": "mts_sms_by_promo",
                "name": "MTS SMS (marketing)",
                "alpha_name": "ACMEPROMO",
                "kind": "marketing",
                "consent_field": "UF_CRM_SMS_CONSENT",
            },
        ],
    }
]


def apply(portal, sms) -> list[str]:
    return config.apply(config.parse({"portal": portal.domain, "sms": sms}))


def test_import_creates_accounts_and_registers_senders(make_portal):
    portal, remote = make_portal()
    report = apply(portal, SMS)
    assert report[0] == "MTS SMS: created"
    drain(portal)
    assert set(remote.senders) == {"mts_sms_by", "mts_sms_by_promo"}
    promo = SmsSender.objects.get(code="mts_sms_by_promo")
    assert (promo.kind, promo.consent_field, promo.portal_id) == (
        "marketing",
        "UF_CRM_SMS_CONSENT",
        portal.pk,
    )
    assert SmsAccount.objects.get().credentials["password"] == "pw"


def test_reimport_is_a_no_op_and_export_round_trips(make_portal, fake):
    portal, _ = make_portal()
    apply(portal, SMS)
    drain(portal)
    fake.calls.clear()
    exported = config.export(portal)["sms"]
    assert exported[0]["dlr_url"] == SmsAccount.objects.get().dlr_url
    assert exported[0]["credentials"] == {"client_id": "***", "login": "***", "password": "***"}
    assert exported[0]["senders"][0]["handler_url"].startswith(
        "https://bridge.example.com/sms/send/"
    )
    assert apply(portal, exported) == []
    drain(portal)
    assert fake.methods() == []


def test_a_sender_left_out_of_the_list_is_removed_in_bitrix24_too(make_portal):
    portal, remote = make_portal()
    apply(portal, SMS)
    drain(portal)
    smaller = copy.deepcopy(SMS)
    smaller[0]["senders"] = smaller[0]["senders"][:1]
    assert apply(portal, smaller) == ["MTS SMS: sender mts_sms_by_promo removed"]
    drain(portal)
    assert set(remote.senders) == {"mts_sms_by"}


@pytest.mark.parametrize(
    "patch, error",
    [
        (
            {"senders": [{"code": "x", "name": "X", "alpha_name": "TOOLONGNAME1"}]},
            "sms[0].senders[0].alpha_name: must be at most 11 characters",
        ),
        (
            {"senders": [{"code": "x", "name": "X", "alpha_name": "\u0410KME"}]},
            "sms[0].senders[0].alpha_name: Up to 11 Latin letters",
        ),
        (
            {"senders": [{"code": "x y", "name": "X", "alpha_name": "A"}]},
            "sms[0].senders[0].code: Latin letters",
        ),
        (
            {"senders": [{"code": "x", "name": "X", "alpha_name": "A", "kind": "spam"}]},
            "sms[0].senders[0].kind: must be one of",
        ),
        ({"senders": [{"code": "x"}]}, "sms[0].senders[0].name: required"),
        ({"default_region": "XX"}, "sms[0].default_region: must be a two-letter country code"),
        ({"ttl_s": 10}, "sms[0].ttl_s: must be from 300 to 259200"),
        ({"rate_per_second": 0}, "sms[0].rate_per_second: must be from 1 to 1000"),
        ({"credentials": {"client_id": "1"}}, "sms[0].credentials: missing login, password"),
        ({"provider": "smsru"}, "sms[0].provider: unknown provider 'smsru'"),
    ],
)
def test_bad_values_are_named_by_their_path(patch, error):
    document = {"portal": "p", "sms": [{**copy.deepcopy(SMS[0]), **patch}]}
    with pytest.raises(config.ConfigError) as failure:
        config.parse(document)
    assert any(e.startswith(error) for e in failure.value.errors), failure.value.errors
