from urllib.parse import parse_qsl

import pytest

from bitrixapp.formdata import FormDataError, Raw, parse_bracketed, php_query


def test_event_form_becomes_nested_dict():
    body = (
        "event=ONEXTERNALCALLSTART&event_handler_id=1055&data%5BPHONE_NUMBER%5D=%2B74951234567"
        "&data%5BCALL_ID%5D=externalCall.abc.1&auth%5Bmember_id%5D=m1&auth%5Bdomain%5D=a.bitrix24.ru"
    )
    form = parse_bracketed(parse_qsl(body))
    assert form == {
        "event": "ONEXTERNALCALLSTART",
        "event_handler_id": "1055",
        "data": {"PHONE_NUMBER": "+74951234567", "CALL_ID": "externalCall.abc.1"},
        "auth": {"member_id": "m1", "domain": "a.bitrix24.ru"},
    }


def test_empty_brackets_make_lists():
    form = parse_bracketed([("USER_ID[]", "1"), ("USER_ID[]", "2"), ("a[b][]", "x")])
    assert form == {"USER_ID": ["1", "2"], "a": {"b": ["x"]}}


@pytest.mark.parametrize(
    "pairs",
    [
        [("a[", "1")],
        [("a", "1"), ("a[b]", "2")],
        [("a[b]", "2"), ("a", "1")],
    ],
)
def test_malformed_or_conflicting_fields_are_refused_with_the_name(pairs):
    with pytest.raises(FormDataError, match="a"):
        parse_bracketed(pairs)


def test_php_query_encodes_nested_values_and_keeps_references_raw():
    query = php_query(
        {
            "CALL_ID": Raw("$result[c7][CALL_ID]"),
            "USER_ID": [1, 2],
            "F": {"X Y": "a&b"},
            "N": None,
            "B": True,
        }
    )
    assert query == (
        "CALL_ID=$result[c7][CALL_ID]&USER_ID%5B0%5D=1&USER_ID%5B1%5D=2&F%5BX%20Y%5D=a%26b&N=&B=1"
    )
    # And it reads back as the same structure.
    assert parse_bracketed(parse_qsl(query, keep_blank_values=True))["F"] == {"X Y": "a&b"}


def test_fields_nested_deeper_than_the_limit_are_refused_with_the_name():
    from bitrixapp.storable import MAX_DEPTH

    deepest = "a" + "[x]" * (MAX_DEPTH - 1)
    assert parse_bracketed([(deepest, "1")])["a"]["x"]
    with pytest.raises(FormDataError, match="nested deeper") as caught:
        parse_bracketed([(deepest + "[x]", "1")])
    assert caught.value.field == deepest + "[x]"
