"""python manage.py sms_normalize_report FILE.csv [--column phone] [--region BY] [--allow BY]

The pre-campaign cleanup: reads the numbers of a CSV export (the first column, or the one
named), normalizes each the way sending does (bitrixapp.phones.check), and reports how many
are valid and which rows are not, with the reason. `--output` writes the invalid rows as CSV.
"""

import csv
import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from bitrixapp import phones


class Command(BaseCommand):
    help = "Report which phone numbers in a CSV file can receive SMS, and why the others cannot."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("file", help="CSV file; '-' reads standard input")
        parser.add_argument("--column", help="column name (the file has a header row)")
        parser.add_argument("--region", default="BY", help="country of national spellings")
        parser.add_argument(
            "--allow", default="BY", help="allowed countries, comma-separated; '' for any"
        )
        parser.add_argument("--output", help="write the invalid rows to this CSV file")

    def handle(self, *args: Any, **options: Any) -> None:
        rows = list(_rows(options["file"], options["column"]))
        allowed = [code for code in options["allow"].split(",") if code.strip()]
        valid, invalid, seen = 0, [], set()
        for line, raw in rows:
            checked = phones.check(raw, options["region"].upper(), allowed)
            if checked.ok:
                valid += 1
                seen.add(checked.e164)
            else:
                invalid.append((line, raw, checked.reason))
        self.stdout.write(
            f"{len(rows)} numbers: {valid} valid ({len(seen)} distinct), {len(invalid)} invalid"
        )
        for line, raw, reason in invalid:
            self.stdout.write(f"line {line}: {raw!r}: {reason}")
        if options["output"]:
            with Path(options["output"]).open("w", newline="") as out:
                writer = csv.writer(out)
                writer.writerow(["line", "number", "reason"])
                writer.writerows(invalid)


def _rows(name: str, column: str | None) -> Any:
    """(line number, raw number) for every data row."""
    try:
        handle = sys.stdin if name == "-" else Path(name).open(newline="", encoding="utf-8-sig")  # noqa: SIM115 (closed by the with below)
    except OSError as exc:
        raise CommandError(f"cannot read {name}: {exc.strerror}") from exc
    with handle:
        reader = csv.reader(handle)
        index = 0
        if column:
            header = next(reader, [])
            if column not in header:
                raise CommandError(f"no column {column!r}; the header has: {', '.join(header)}")
            index = header.index(column)
        for line, row in enumerate(reader, start=2 if column else 1):
            if row and any(cell.strip() for cell in row):
                yield line, row[index] if index < len(row) else ""
