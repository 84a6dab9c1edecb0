"""How many SMS parts a text takes, and in which encoding (what the gateway bills).

GSM-7 carries 160 characters in one SMS and 153 per part once split; one character outside
the GSM-7 alphabet (any Cyrillic letter) makes the whole text UCS-2: 70, then 67 per part.
Characters of the GSM-7 extension table are sent as escape + character: they count twice.
"""

from dataclasses import dataclass

GSM7_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = set("^{}\\[~]|€\f")

# encoding → (characters in a single SMS, characters per part of a split one)
LIMITS = {"gsm7": (160, 153), "ucs2": (70, 67)}


@dataclass(frozen=True)
class Segmented:
    encoding: str  # "gsm7" or "ucs2"
    length: int  # in the encoding's characters (extension characters count 2)
    segments: int


def segment(text: str) -> Segmented:
    if all(ch in GSM7_BASIC or ch in GSM7_EXTENSION for ch in text):
        encoding = "gsm7"
        length = sum(2 if ch in GSM7_EXTENSION else 1 for ch in text)
    else:
        encoding = "ucs2"
        # UCS-2 counts 16-bit units: a character outside the BMP (an emoji) takes two.
        length = sum(2 if ord(ch) > 0xFFFF else 1 for ch in text)
    single, per_part = LIMITS[encoding]
    parts = 1 if length <= single else -(-length // per_part)
    return Segmented(encoding, length, parts)
