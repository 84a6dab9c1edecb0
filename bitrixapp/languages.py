"""The one mapping from Bitrix24's language ids to the languages the app speaks.

Bitrix24 sends a language id with the app page (`LANG`) and with ONAPPINSTALL
(`data[LANGUAGE_ID]`). Portals of Russian-speaking countries read Russian, every other known
language reads English, and a portal that told us nothing reads Russian: most of the people
who use this app are Russian-speaking portal admins.
"""

RUSSIAN_READING = {"ru", "ua", "uk", "by", "be", "kz"}
DEFAULT = "ru"


def of_bitrix(code: object) -> str:
    """ "ru" or "en" for a Bitrix24 language id ("ru", "en", "ua", "de"...)."""
    code = str(code or "").strip().lower()[:2]
    if not code:
        return DEFAULT
    return "ru" if code in RUSSIAN_READING else "en"
