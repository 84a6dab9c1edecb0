"""The one phone normalizer: raw string in, E.164 or None out.

Used by telephony and SMS alike; it never raises. PBXs send numbers in many shapes
("79161234567", "+7 916 123-45-67", "89161234567", "sip:101@pbx"), so the raw string is
always kept beside the result.
"""

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
