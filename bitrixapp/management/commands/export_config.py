"""`manage.py export_config --portal DOMAIN_OR_MEMBER_ID [--with-secrets]` (docs/configuration.md).

Prints the portal's configuration (every registered section) as JSON in the import format,
with each PBX connection's `webhook_url`. Credential values are shown as "***" unless
--with-secrets is given.
"""

import json

from django.core.management.base import BaseCommand, CommandError, CommandParser

from bitrixapp import config


class Command(BaseCommand):
    help = "Print a portal's configuration as JSON (the import_config format)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--portal", required=True, help="domain or member_id")
        parser.add_argument(
            "--with-secrets",
            action="store_true",
            help="include credential values (otherwise each is shown as ***)",
        )

    def handle(self, *args: object, portal: str, with_secrets: bool, **options: object) -> None:
        try:
            found = config.find_portal(portal)
        except config.ConfigError as exc:
            raise CommandError(str(exc)) from None
        document = config.export(found, with_secrets=with_secrets)
        self.stdout.write(json.dumps(document, indent=2, ensure_ascii=False))
