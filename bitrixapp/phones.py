"""The one phone normalizer: raw string in, E.164 or None out.

Used by telephony and SMS alike; it never raises. PBXs send numbers in many shapes
("79161234567", "+7 916 123-45-67", "89161234567", "sip:101@pbx"), so the raw string is
always kept beside the result. `check()` adds what SMS needs: a default region for national
spellings and the countries a number may belong to, with the reason when it is refused.
"""

from collections.abc import Iterable
from dataclasses import dataclass

import phonenumbers


def digits(text: str) -> str:
    """Only the digits: how numbers are compared across PBX and Bitrix24 spellings."""
    return "".join(ch for ch in text or "" if ch.isdigit())


def to_e164(raw: str, region: str = "RU") -> str | None:
    """`+79161234567` for anything that is a valid number, else None."""
    text = (raw or "").strip()
    if not text or text.lower().startswith("sip:"):
        return None
    only_digits = digits(text)
    candidates = [text]
    if not text.startswith("+") and len(only_digits) >= 11:
        # Russian PBXs send international numbers without "+" (79161234567).
        candidates.insert(0, "+" + only_digits)
    for candidate in candidates:
        try:
            number = phonenumbers.parse(candidate, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number):
            return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return None


@dataclass(frozen=True)
class Checked:
    """A number checked for sending to: its E.164 form, or why it cannot be used."""

    e164: str | None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.e164 is not None


def check(raw: str, region: str = "RU", allowed_regions: Iterable[str] = ()) -> Checked:
    """`to_e164` plus a country check; never raises. `region` reads national spellings
    (Belarus: "80291234567", "29 1234567"); `allowed_regions` (ISO codes, empty = any)
    refuses numbers of other countries, with the reason in words."""
    e164 = to_e164(raw, region)
    if e164 is None:
        shown = (raw or "").strip()[:40] or "(empty)"
        return Checked(None, f"{shown!r} is not a valid phone number (read in region {region})")
    allowed = {code.upper() for code in allowed_regions}
    country = region_of(e164)
    if allowed and country not in allowed:
        return Checked(
            None, f"{e164} is a number in {country}; allowed: {', '.join(sorted(allowed))}"
        )
    return Checked(e164)


def region_of(e164: str) -> str:
    """The ISO country code of an E.164 number ("BY"), "ZZ" when unknown."""
    try:
        return phonenumbers.region_code_for_number(phonenumbers.parse(e164)) or "ZZ"
    except phonenumbers.NumberParseException:
        return "ZZ"


def is_region(code: str) -> bool:
    """True for a region phonenumbers knows (ISO 3166 alpha-2, e.g. "BY")."""
    return code.upper() in phonenumbers.SUPPORTED_REGIONS
