"""Webhook receivers a web process remembers (bitrixapp.webhooks.remembered_receiver)."""

import pytest

from bitrixapp import webhooks
from telephony.models import PbxConnection

pytestmark = pytest.mark.django_db

SAME = ("portal", "provider", "credentials", "last_error")


@pytest.fixture
def office(make_portal):
    portal, _ = make_portal()
    return PbxConnection.objects.create(
        portal=portal, name="Office", provider="mango", credentials={"api_key": "k"}
    )


def look(hook):
    return webhooks.remembered_receiver(PbxConnection, hook, "PBX connection", SAME)


def test_the_first_look_is_fresh_and_the_next_ones_are_remembered_under_a_guard(office):
    first, second = look(office.webhook_uuid), look(office.webhook_uuid)
    assert first.guard is None  # looked up for this request: nothing to re-check
    assert second.guard is not None and second.row is first.row
    webhooks.forget_receiver(PbxConnection, office.webhook_uuid)
    assert look(office.webhook_uuid).guard is None


def test_a_row_changed_between_its_look_up_and_the_read_of_what_is_stored_is_not_remembered(
    office,
):
    row = webhooks.receiver_by_hook(PbxConnection, office.webhook_uuid, "PBX connection")
    PbxConnection.objects.filter(pk=office.pk).update(credentials={"api_key": "new"})
    assert webhooks._unchanged(row, SAME) is None


def test_remembered_receivers_expire_and_their_number_is_bounded(office, make_portal, monkeypatch):
    monkeypatch.setattr(webhooks, "_remembered", {})
    monkeypatch.setattr(webhooks, "REMEMBER_MAX", 2)
    portal, _ = make_portal()
    hooks = [office.webhook_uuid] + [
        PbxConnection.objects.create(portal=portal, name=f"N{i}", provider="mango").webhook_uuid
        for i in range(2)
    ]
    for hook in hooks:
        look(hook)
    assert len(webhooks._remembered) == 2
    assert look(hooks[-1]).guard is not None
    monkeypatch.setattr(webhooks, "REMEMBER_S", -1.0)  # remembered from now on: too old at once
    webhooks.forget_receiver(PbxConnection, hooks[-1])
    look(hooks[-1])
    assert look(hooks[-1]).guard is None


def test_a_guard_compares_only_fields_that_cannot_be_null(office):
    with pytest.raises(ValueError, match="not null"):
        webhooks._unchanged(office, ("last_error_at",))
