"""SQL written once per model (bitrixapp.prepared): the same rows and instances as the ORM."""

import pytest
from django.db import IntegrityError, transaction

from bitrixapp import prepared
from bitrixapp.models import Portal
from telephony.models import PbxConnection, PbxEvent

pytestmark = pytest.mark.django_db


def concrete_values(row) -> dict:
    return {f.attname: getattr(row, f.attname) for f in type(row)._meta.concrete_fields}


def test_a_lookup_builds_what_the_orm_builds_with_skipped_fields_deferred(make_portal):
    portal, _ = make_portal()
    conn = PbxConnection.objects.create(
        portal=portal, name="Office", provider="mango", credentials={"api_key": "k"}
    )
    lookup = prepared.RowLookup(
        PbxConnection, "webhook_uuid", join=("portal", Portal, ["refresh_token"])
    )
    row = lookup.get(conn.webhook_uuid)
    assert concrete_values(row) == concrete_values(PbxConnection.objects.get(pk=conn.pk))
    assert row.credentials == {"api_key": "k"}  # the field's converter (decrypt) applied
    assert row.portal.get_deferred_fields() == {"refresh_token"}
    assert row.portal.refresh_token == Portal.objects.get(pk=portal.pk).refresh_token  # on access
    assert row.portal.access_token == portal.access_token
    assert lookup.get("00000000-0000-0000-0000-000000000000") is None


def test_insert_sets_the_key_and_the_defaults_and_refuses_a_duplicate(make_portal):
    portal, _ = make_portal()
    conn = PbxConnection.objects.create(portal=portal, name="Office", provider="mango")
    row = PbxEvent(portal=portal, connection=conn, source="events/call", dedupe_key="d1")
    prepared.insert(row)
    stored = PbxEvent.objects.get(pk=row.pk)
    assert concrete_values(stored) == concrete_values(row)
    assert stored.state == PbxEvent.State.RECEIVED and stored.received_at is not None
    assert not row._state.adding
    twice = PbxEvent(portal=portal, connection=conn, source="events/call", dedupe_key="d1")
    with pytest.raises(IntegrityError), transaction.atomic():  # the inbox's duplicate check
        prepared.insert(twice)
