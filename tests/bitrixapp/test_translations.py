"""The Russian catalogue is complete: every entry translated and checked (Django ignores
`#, fuzzy` entries, so a fuzzy one shows English), placeholders and the three plural forms
kept, no obsolete entries, the committed .mo compiled from the current .po, and (where GNU
gettext is installed) no string in the code missing from the catalogue.

A tiny parser instead of a dependency: makemessages writes one entry per blank-line separated
block, comments first, then msgid / msgid_plural / msgstr / msgstr[n], each possibly continued
on following "..." lines.
"""

import ast
import gettext
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CATALOGUE = Path("locale/ru/LC_MESSAGES")
PO = ROOT / CATALOGUE / "django.po"
MO = ROOT / CATALOGUE / "django.mo"
# What makemessages leaves out (docs/admin.md, Translations: its --ignore list); dot
# directories (.git, .venv) are left out by makemessages itself.
NOT_SCANNED = {"tests", "bench", "demo", "var"}
# %(name)s, %s, %d ... (not %%) and {name} / {0}: a translation must keep each one exactly.
PLACEHOLDER = re.compile(r"%\([^)]+\)[-#0 +]*\d*(?:\.\d+)?[a-zA-Z]|%[-#0 +]*\d*[sdif]|\{\w*\}")
KEYWORD = re.compile(r"^(msgctxt|msgid_plural|msgid|msgstr(?:\[\d+\])?) (\".*\")$")


@dataclass
class Entry:
    line: int
    flags: set[str] = field(default_factory=set)
    obsolete: bool = False
    fields: dict[str, str] = field(default_factory=dict)

    @property
    def msgid(self) -> str:
        return self.fields.get("msgid", "")

    @property
    def plural(self) -> str | None:
        return self.fields.get("msgid_plural")

    @property
    def translations(self) -> list[str]:
        return [text for key, text in self.fields.items() if key.startswith("msgstr")]

    def __str__(self) -> str:
        return f"django.po line {self.line}: {self.msgid!r}"


def parse(text: str) -> list[Entry]:
    entries: list[Entry] = []
    entry, key = None, None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            entry, key = None, None
            continue
        if entry is None:
            entry = Entry(line=number)
            entries.append(entry)
        if line.startswith("#~"):
            entry.obsolete = True
        elif line.startswith("#,"):
            entry.flags.update(flag.strip() for flag in line[2:].split(","))
        elif line.startswith("#"):
            continue  # references, translator and previous-msgid (#|) comments
        elif line.startswith('"'):
            entry.fields[key] += ast.literal_eval(line)
        else:
            match = KEYWORD.match(line)
            assert match, f"django.po line {number}: cannot read {line!r}"
            key = match[1]
            entry.fields[key] = ast.literal_eval(match[2])
    return entries


def _catalogue(path: Path = PO) -> tuple[Entry, list[Entry]]:
    header, *entries = parse(path.read_text(encoding="utf-8"))
    assert header.msgid == "", "the header must come first"
    return header, entries


def _nplurals(header: Entry) -> int:
    return int(re.search(r"nplurals=(\d+)", header.fields["msgstr"])[1])


def test_the_parser_reads_flags_plurals_continuations_and_obsolete_entries():
    header, fuzzy, plural, obsolete = parse(
        'msgid ""\nmsgstr ""\n"Plural-Forms: nplurals=3;\\n"\n\n'
        '#: a.py:1\n#, fuzzy, python-format\n#| msgid "old"\nmsgid "%(n)s \\"x\\""\n'
        'msgstr ""\n"%(n)s "\n"«x»"\n\n'
        'msgid "one"\nmsgid_plural "many"\nmsgstr[0] "a"\nmsgstr[1] ""\nmsgstr[2] "c"\n\n'
        '#~ msgid "gone"\n#~ msgstr "ушло"\n'
    )
    assert _nplurals(header) == 3
    assert fuzzy.flags == {"fuzzy", "python-format"} and fuzzy.line == 5
    assert fuzzy.msgid == '%(n)s "x"' and fuzzy.translations == ["%(n)s «x»"]
    assert plural.plural == "many" and plural.translations == ["a", "", "c"]
    assert obsolete.obsolete and obsolete.fields == {}


def test_no_entry_is_fuzzy():
    header, entries = _catalogue()
    fuzzy = [str(e) for e in [header, *entries] if "fuzzy" in e.flags]
    assert fuzzy == [], "check these translations, then remove their '#, fuzzy' line"


def test_every_entry_is_translated_in_every_plural_form():
    header, entries = _catalogue()
    nplurals = _nplurals(header)
    assert nplurals == 3  # one, few, many: 1 звонок, 2 звонка, 5 звонков
    missing = [
        str(e)
        for e in entries
        if not e.obsolete
        and (
            not all(e.translations)
            or len(e.translations) != (nplurals if e.plural is not None else 1)
        )
    ]
    assert missing == []


def test_no_obsolete_entries_are_kept():
    _, entries = _catalogue()
    assert [e.line for e in entries if e.obsolete] == []


def test_translations_keep_every_placeholder():
    _, entries = _catalogue()
    broken = []
    for entry in entries:
        expected = sorted(PLACEHOLDER.findall(entry.plural or entry.msgid))
        for text in entry.translations:
            if text and sorted(PLACEHOLDER.findall(text)) != expected:
                broken.append(f"{entry}: {text!r}")
    assert broken == []


def test_the_committed_mo_is_compiled_from_the_po():
    """Django reads the .mo only: an edited .po must be compiled (and the .mo committed)."""
    _, entries = _catalogue()
    expected = {}
    # msgfmt leaves out fuzzy and untranslated entries: the tests above catch those.
    done = (e for e in entries if "fuzzy" not in e.flags and e.translations and all(e.translations))
    for entry in done:
        # gettext keys an entry with a context as "context\x04msgid".
        key = (
            f"{entry.fields['msgctxt']}\x04{entry.msgid}"
            if "msgctxt" in entry.fields
            else entry.msgid
        )
        if entry.plural is None:
            expected[key] = entry.fields["msgstr"]
        else:
            for form, text in enumerate(entry.translations):
                expected[(key, form)] = text
    with MO.open("rb") as mo:
        compiled = dict(gettext.GNUTranslations(mo)._catalog)
    compiled.pop("", None)  # the header
    assert compiled == expected, "run: msgfmt --check -o django.mo django.po"


@pytest.mark.skipif(
    not (shutil.which("xgettext") and shutil.which("msgmerge")),
    reason="makemessages needs GNU gettext",
)
def test_every_string_in_the_code_is_in_the_catalogue(tmp_path):
    """makemessages on a copy of the sources must find nothing new and nothing gone."""

    def skipped(folder: str, names: list[str]) -> set[str]:
        at_top = Path(folder).resolve() == ROOT
        left_out = {n for n in names if at_top and (n in NOT_SCANNED or n.startswith("."))}
        return left_out | {n for n in names if n == "__pycache__"}

    copy = tmp_path / "src"
    shutil.copytree(ROOT, copy, ignore=skipped)
    env = {"PATH": os.environ["PATH"], "VAR_DIR": str(tmp_path / "var")}
    result = subprocess.run(
        [sys.executable, "manage.py", "makemessages", "-l", "ru"],
        cwd=copy,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    _, committed = _catalogue()
    _, current = _catalogue(copy / CATALOGUE / "django.po")
    assert {(e.fields.get("msgctxt"), e.msgid, e.plural) for e in current if not e.obsolete} == {
        (e.fields.get("msgctxt"), e.msgid, e.plural) for e in committed if not e.obsolete
    }, "run makemessages (docs/admin.md, Translations), translate the new entries, compile"
