"""`manage.py import_config FILE`: apply a portal's configuration (docs/configuration.md).

FILE is YAML or JSON (told by its extension, else by its content), or `-` for stdin. The
whole file is checked first and applied in one transaction: a bad value changes nothing.
"""

import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from bitrixapp import config


class Command(BaseCommand):
    help = "Create or update a portal's setup (PBX connections, lines, extensions) from a file."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="YAML or JSON file; - reads stdin")

    def handle(self, *args: object, file: str, **options: object) -> None:
        try:
            spec = config.parse(config.load(self._read(file), file))
            for warning in spec.warnings:
                self.stderr.write(self.style.WARNING(warning))
            report = config.apply(spec)
        except config.ConfigError as exc:
            raise CommandError(f"{file}: nothing imported:\n{exc}") from None
        for line in report:
            self.stdout.write(line)
        self.stdout.write(self.style.SUCCESS("imported" if report else "no changes"))

    @staticmethod
    def _read(file: str) -> str:
        if file == "-":
            return sys.stdin.read()
        try:
            return Path(file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(f"cannot read {file}: {exc}") from None
