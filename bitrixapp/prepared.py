"""Statements written once per model, for the path of every inbound request.

Django's ORM compiles a query anew on every call: for a `select_related().defer().filter()`
lookup the select list, the join and the deferred columns, for `create()` the insert's
columns and values. On a webhook acknowledgement that compiling was over half of the CPU.
Here the SQL is written once per model (identifiers from the model's metadata, values always
parameters) and the rows are read and written the way Django does it: every field's database
converters on the way out, `pre_save` and `get_db_prep_save` on the way in. Works on
PostgreSQL and on SQLite (`make run`).
"""

import functools
from collections.abc import Iterable, Sequence
from typing import Any

from django.db import connections, models, router


class RowLookup:
    """One row by a unique column, optionally with one foreign-key row attached as
    `select_related` would attach it; fields in `skip` are left deferred (loaded on access)."""

    def __init__(
        self,
        model: type[models.Model],
        key: str,
        skip: Iterable[str] = (),
        join: tuple[str, type[models.Model], Iterable[str]] | None = None,
    ) -> None:
        self.model, self.key = model, model._meta.get_field(key)
        self.db = router.db_for_read(model)
        self.parts = [(model, _loaded_fields(model, skip))]
        self.relation = None
        if join is not None:
            self.relation, related, related_skip = join
            self.parts.append((related, _loaded_fields(related, related_skip)))
        self.sql = self._sql()

    def _sql(self) -> str:
        quote = connections[self.db].ops.quote_name
        columns = ", ".join(
            f"t{n}.{quote(field.column)}"
            for n, (_, fields) in enumerate(self.parts)
            for field in fields
        )
        tables = f"{quote(self.model._meta.db_table)} t0"
        if self.relation is not None:
            fk = self.model._meta.get_field(self.relation)
            related = self.parts[1][0]._meta
            tables += (
                f" JOIN {quote(related.db_table)} t1"
                f" ON t1.{quote(related.pk.column)} = t0.{quote(fk.column)}"
            )
        where = f"t0.{quote(self.key.column)} = %s"
        # Identifiers from the models, quoted; the value is a parameter.
        return f"SELECT {columns} FROM {tables} WHERE {where} LIMIT 1"  # noqa: S608

    def get(self, value: object) -> Any:
        """The row whose key column equals `value`, or None."""
        connection = connections[self.db]
        with connection.cursor() as cursor:
            cursor.execute(self.sql, [self.key.get_db_prep_value(value, connection)])
            values = cursor.fetchone()
        if values is None:
            return None
        instances, start = [], 0
        for model, fields in self.parts:
            end = start + len(fields)
            instances.append(_from_db(self.db, model, fields, values[start:end]))
            start = end
        if self.relation is not None:
            setattr(instances[0], self.relation, instances[1])
        return instances[0]


def insert(row: models.Model) -> None:
    """INSERT a new row (as `save()` would, without its signals) and set its primary key."""
    model = type(row)
    db = router.db_for_write(model)
    connection = connections[db]
    sql, fields = _insert_sql(model, db)
    params = [field.get_db_prep_save(field.pre_save(row, True), connection) for field in fields]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        if connection.features.can_return_columns_from_insert:
            row.pk = cursor.fetchone()[0]
        else:
            row.pk = cursor.lastrowid
    row._state.adding, row._state.db = False, db


@functools.cache
def _insert_sql(model: type[models.Model], db: str) -> tuple[str, tuple[Any, ...]]:
    connection = connections[db]
    quote = connection.ops.quote_name
    fields = tuple(f for f in model._meta.concrete_fields if f is not model._meta.pk)
    columns = ", ".join(quote(field.column) for field in fields)
    placeholders = ", ".join(["%s"] * len(fields))
    table = quote(model._meta.db_table)
    sql = f"INSERT INTO {table} ({columns}) VALUES ({placeholders})"  # noqa: S608 (as above)
    if connection.features.can_return_columns_from_insert:
        sql += f" RETURNING {quote(model._meta.pk.column)}"
    return sql, fields


def _loaded_fields(model: type[models.Model], skip: Iterable[str]) -> tuple[Any, ...]:
    skip = set(skip)
    return tuple(f for f in model._meta.concrete_fields if f.attname not in skip)


def _from_db(
    db: str, model: type[models.Model], fields: Sequence[Any], values: Sequence[Any]
) -> models.Model:
    connection = connections[db]
    converted = []
    for field, value in zip(fields, values, strict=True):
        column, converters = _conversion(field, db)
        for convert in converters:
            value = convert(value, column, connection)
        converted.append(value)
    return model.from_db(db, [field.attname for field in fields], converted)


@functools.cache
def _conversion(field: Any, db: str) -> tuple[Any, tuple[Any, ...]]:
    """The column expression and the converters Django's compiler applies to this field's
    values (the backend's, then the field's own)."""
    connection = connections[db]
    column = field.get_col(field.model._meta.db_table)
    return column, (*connection.ops.get_db_converters(column), *field.get_db_converters(connection))
