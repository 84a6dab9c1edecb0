"""Re-encrypt every stored secret with the newest FIELD_ENCRYPTION_KEYS key.

Rotation: prepend a new key to FIELD_ENCRYPTION_KEYS (keep the old ones), deploy, run this,
then drop the old keys.
"""

from django.apps import apps
from django.core.management.base import BaseCommand
from django.db import connection, transaction

from bitrixapp.crypto import EncryptedTextField, rotate


class Command(BaseCommand):
    help = "Re-encrypt all encrypted fields with the first key of FIELD_ENCRYPTION_KEYS."

    def handle(self, *args: object, **options: object) -> None:
        total = 0
        for model in apps.get_models():
            columns = [
                f.column for f in model._meta.concrete_fields if isinstance(f, EncryptedTextField)
            ]
            if columns:
                total += self._rotate_table(model._meta.db_table, model._meta.pk.column, columns)
        self.stdout.write(f"re-encrypted {total} value(s)")

    def _rotate_table(self, table: str, pk: str, columns: list[str]) -> int:
        # Raw SQL: the stored ciphertext is rotated as is, never decrypted into model objects.
        quote = connection.ops.quote_name
        count = 0
        with transaction.atomic(), connection.cursor() as cursor:
            cols = ", ".join(quote(c) for c in columns)
            cursor.execute(f"SELECT {quote(pk)}, {cols} FROM {quote(table)}")  # noqa: S608
            for row_pk, *values in cursor.fetchall():
                updates = {c: rotate(v) for c, v in zip(columns, values, strict=True) if v}
                if not updates:
                    continue
                sets = ", ".join(f"{quote(c)} = %s" for c in updates)
                cursor.execute(
                    f"UPDATE {quote(table)} SET {sets} WHERE {quote(pk)} = %s",  # noqa: S608
                    [*updates.values(), row_pk],
                )
                count += len(updates)
        return count
