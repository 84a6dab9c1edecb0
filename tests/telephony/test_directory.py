"""Lines and extensions kept in step with Bitrix24, against the live fake."""

import pytest

from telephony import directory
from telephony.models import PbxExtension, PbxLine
from tests.conftest import drain

pytestmark = pytest.mark.django_db


def test_extensions_are_filled_from_bitrix24_users_and_manual_rows_win(pbx):
    pbx.remote.add_user(21, NAME="New", UF_PHONE_INNER="121")
    for n in range(60):  # more than one page of user.get
        pbx.remote.add_user(100 + n, NAME=f"U{n}", UF_PHONE_INNER=f"5{n:02d}")
    PbxExtension.objects.filter(extension="101").update(user_id=99)  # an admin's own choice
    directory.load_extensions(pbx.connection)
    drain(pbx.portal)
    rows = dict(PbxExtension.objects.values_list("extension", "user_id"))
    assert rows["101"] == 99  # the manual row kept (Bitrix24 says user 11)
    assert rows["121"] == 21 and rows["177"] == 77 and rows["559"] == 159
    assert PbxExtension.objects.get(extension="121").source == "bitrix"
    assert [c.params.get("start") for c in pbx.fake.calls_of("user.get")] == [0, 50]


def test_a_line_is_registered_and_an_existing_one_updated(pbx):
    line = PbxLine.objects.get()
    directory.register_line(line)
    drain(pbx.portal)
    assert "74951234567" in pbx.remote.lines
    line.name = "Sales (renamed)"
    line.save()
    directory.register_line(line)  # Bitrix24: "Line already exists" -> update instead
    drain(pbx.portal)
    methods = [c.method for c in pbx.fake.calls if c.method.startswith("telephony.externalLine")]
    assert methods == [
        "telephony.externalLine.add",
        "telephony.externalLine.add",
        "telephony.externalLine.update",
    ]
    assert PbxLine.objects.get().registered_at is not None


def test_a_line_still_used_by_another_connection_is_not_deleted(pbx):
    from telephony.models import PbxConnection

    other = PbxConnection.objects.create(
        portal=pbx.portal,
        name="Second",
        provider="mango",
        credentials={"api_key": "a", "api_salt": "b"},
    )
    PbxLine.objects.create(connection=other, number="1", line_number="74951234567")
    assert directory.remove_line(pbx.connection, "74951234567") is None
    PbxLine.objects.filter(connection=other).delete()
    PbxLine.objects.filter(connection=pbx.connection).delete()
    assert directory.remove_line(pbx.connection, "74951234567").method == (
        "telephony.externalLine.delete"
    )
