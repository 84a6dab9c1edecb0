import pytest

from bitrixapp.phones import to_e164


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("79161234567", "+79161234567"),  # Mango: international without "+"
        ("+7 (916) 123-45-67", "+79161234567"),
        ("89161234567", "+79161234567"),  # Russian trunk prefix
        ("375291234567", "+375291234567"),
        ("sip:101@pbx.example", None),
        ("101", None),
        ("", None),
        ("not a number", None),
    ],
)
def test_to_e164_normalizes_or_gives_none_without_raising(raw, expected):
    assert to_e164(raw) == expected
