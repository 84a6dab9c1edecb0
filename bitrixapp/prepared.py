"""Statements written once per model, for the path of every inbound request and the step
with which a worker takes a lane's waiting rows.

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
from typing import Any, NamedTuple

from django.db import connections, models, router


class _Part(NamedTuple):
    """One table of a joined row: t0 the row's own, then one per related path."""

    path: str  # "" for the row itself, else "connection", "connection__portal", ...
    model: type[models.Model]
    fields: tuple[Any, ...]  # the loaded ones, in SELECT order
    parent: int  # the index (and alias number) of the part the foreign key is on; -1 for t0
    fk: Any  # that foreign key; None for t0


class _Joined:
    """The SELECT list and FROM clause of a model's rows with foreign-key rows attached along
    `related` paths ("connection", "connection__portal"), as `select_related` attaches them;
    fields in `skip` (full paths: "connection__portal__refresh_token") are left deferred.
    Only required foreign keys: every row has its related rows (an inner join)."""

    def __init__(
        self, model: type[models.Model], related: Sequence[str] = (), skip: Iterable[str] = ()
    ) -> None:
        self.model = model
        self.db = router.db_for_read(model)
        skip = set(skip)
        self.parts = [_Part("", model, _loaded_fields(model, _skipped(skip, "")), -1, None)]
        for path in sorted(related, key=lambda p: p.count("__")):
            parent_path, _, name = path.rpartition("__")
            parent = next(i for i, part in enumerate(self.parts) if part.path == parent_path)
            fk = self.parts[parent].model._meta.get_field(name)
            if fk.null:
                raise ValueError(f"{path} may be empty: only required foreign keys are joined")
            fields = _loaded_fields(fk.related_model, _skipped(skip, path))
            self.parts.append(_Part(path, fk.related_model, fields, parent, fk))

    def select_from(self, extra_column: str = "") -> str:
        """SELECT the parts' columns (then `extra_column`, an SQL expression, if given) FROM
        the joined tables."""
        quote = connections[self.db].ops.quote_name
        columns = ", ".join(
            f"t{n}.{quote(field.column)}"
            for n, part in enumerate(self.parts)
            for field in part.fields
        )
        if extra_column:
            columns += f", {extra_column}"
        tables = f"{quote(self.model._meta.db_table)} t0"
        for n, part in enumerate(self.parts[1:], start=1):
            meta = part.model._meta
            tables += (
                f" JOIN {quote(meta.db_table)} t{n}"
                f" ON t{n}.{quote(meta.pk.column)} = t{part.parent}.{quote(part.fk.column)}"
            )
        return f"SELECT {columns} FROM {tables}"  # noqa: S608 (identifiers from the models)

    def instance(self, values: Sequence[Any]) -> Any:
        """The row's instance with its related instances attached."""
        instances: list[Any] = []
        start = 0
        for part in self.parts:
            end = start + len(part.fields)
            instance = _from_db(self.db, part.model, part.fields, values[start:end])
            start = end
            if part.fk is not None:
                setattr(instances[part.parent], part.fk.name, instance)
            instances.append(instance)
        return instances[0]


def _skipped(skip: set[str], path: str) -> set[str]:
    """The names in `skip` that are fields of the part at `path`."""
    prefix = f"{path}__" if path else ""
    return {
        name.removeprefix(prefix)
        for name in skip
        if name.startswith(prefix) and "__" not in name.removeprefix(prefix)
    }


class Conditions:
    """Equalities and one "not after" on a model's fields, as a WHERE clause over alias `t`
    whose values are parameters, and those values prepared the way the fields prepare them."""

    def __init__(self, model: type[models.Model], equal: Sequence[str], not_after: str) -> None:
        self.fields = [model._meta.get_field(name) for name in (*equal, not_after)]

    def sql(self, alias: str, quote: Any) -> str:
        where = [f"{alias}.{quote(f.column)} = %s" for f in self.fields[:-1]]
        where.append(f"{alias}.{quote(self.fields[-1].column)} <= %s")
        return " AND ".join(where)

    def params(self, values: Sequence[Any], connection: Any) -> list[Any]:
        return [
            f.get_db_prep_value(v, connection) for f, v in zip(self.fields, values, strict=True)
        ]


class HasWaiting(NamedTuple):
    """A flag loaded with a looked-up row: whether some row of `model`, whose foreign key `fk`
    points at it, meets `conditions` (e.g. "this portal has a command due now")."""

    name: str  # the attribute set on the row
    model: type[models.Model]
    fk: str
    conditions: Conditions


class RowLookup:
    """One row by a unique column, with foreign-key rows attached along `related` paths as
    `select_related` attaches them; fields in `skip` are left deferred (loaded on access);
    with `has`, the flag it names is loaded in the same statement."""

    def __init__(
        self,
        model: type[models.Model],
        key: str,
        related: Sequence[str] = (),
        skip: Iterable[str] = (),
        has: HasWaiting | None = None,
    ) -> None:
        self.key = model._meta.get_field(key)
        self.rows = _Joined(model, related, skip)
        self.has = has
        quote = connections[self.rows.db].ops.quote_name
        # Identifiers from the models, quoted; the values are parameters.
        exists = ""
        if has is not None:
            meta = has.model._meta
            fk, pk = meta.get_field(has.fk).column, model._meta.pk.column
            exists = (
                f"EXISTS (SELECT 1 FROM {quote(meta.db_table)} h"  # noqa: S608 (identifiers)
                f" WHERE h.{quote(fk)} = t0.{quote(pk)} AND {has.conditions.sql('h', quote)})"
            )
        select = self.rows.select_from(exists)
        self.sql = f"{select} WHERE t0.{quote(self.key.column)} = %s LIMIT 1"

    def get(self, value: object, has_values: Sequence[Any] = ()) -> Any:
        """The row whose key column equals `value`, or None; `has_values` are the values of
        the `has` flag's conditions."""
        connection = connections[self.rows.db]
        params = [self.key.get_db_prep_value(value, connection)]
        if self.has is not None:
            params[:0] = self.has.conditions.params(has_values, connection)
        with connection.cursor() as cursor:
            cursor.execute(self.sql, params)
            values = cursor.fetchone()
        if values is None:
            return None
        if self.has is None:
            return self.rows.instance(values)
        row = self.rows.instance(values[:-1])
        setattr(row, self.has.name, bool(values[-1]))
        return row


class WaitingRows:
    """The next rows of a queue table that wait in one lane, in id order, locked with SKIP
    LOCKED where the database can (only the rows themselves, not the related ones): what the
    inbox's drain takes each step. The conditions are equalities and one "not after now"."""

    def __init__(
        self,
        model: type[models.Model],
        equal: Sequence[str],
        not_after: str,
        related: Sequence[str] = (),
        skip: Iterable[str] = (),
    ) -> None:
        self.rows = _Joined(model, related, skip)
        self.conditions = Conditions(model, equal, not_after)
        connection = connections[self.rows.db]
        quote = connection.ops.quote_name
        self._pk = f"t0.{quote(model._meta.pk.column)}"
        # The statement in two parts written once; between them, per call, the ids left out
        # (their number varies from call to call, so it is not worth keeping a text per
        # number: a long drain would keep thousands).
        self._head = f"{self.rows.select_from()} WHERE {self.conditions.sql('t0', quote)}"
        self._tail = f" ORDER BY {self._pk} LIMIT %s"
        features = connection.features
        if features.has_select_for_update_skip_locked and features.has_select_for_update_of:
            self._tail += " FOR UPDATE OF t0 SKIP LOCKED"

    def take(self, values: Sequence[Any], limit: int, exclude: Iterable[int] = ()) -> list[Any]:
        """Up to `limit` rows whose fields equal `values` (the last one: not after it), in id
        order, leaving out the ids in `exclude`."""
        connection = connections[self.rows.db]
        exclude = sorted(exclude)
        params = self.conditions.params(values, connection)
        sql = self._head
        if exclude:
            sql += f" AND NOT ({self._pk} IN ({', '.join(['%s'] * len(exclude))}))"
        with connection.cursor() as cursor:
            cursor.execute(sql + self._tail, [*params, *exclude, int(limit)])
            return [self.rows.instance(row) for row in cursor.fetchall()]


class Select:
    """Some columns of the rows whose fields equal given values and whose `among` fields are
    each one of a list of values, ordered by `order_by`: SQL written once but for the lists'
    placeholders (their lengths vary). Values come back converted as the ORM converts them."""

    def __init__(
        self,
        model: type[models.Model],
        columns: Sequence[str],
        equal: Sequence[str] = (),
        among: Sequence[str] = (),
        order_by: str = "pk",
    ) -> None:
        if not (equal or among):
            raise ValueError("a Select needs at least one condition")
        meta = model._meta
        self.db = router.db_for_read(model)
        self.columns = [meta.get_field(name) for name in columns]
        self.equal = [meta.get_field(name) for name in equal]
        self.among = [meta.get_field(name) for name in among]
        quote = connections[self.db].ops.quote_name
        select = ", ".join(quote(f.column) for f in self.columns)
        self._head = f"SELECT {select} FROM {quote(meta.db_table)} WHERE "  # noqa: S608
        self._equal = [f"{quote(f.column)} = %s" for f in self.equal]
        self._among = [f"{quote(f.column)} IN " for f in self.among]
        order = meta.pk if order_by == "pk" else meta.get_field(order_by)
        self._order = f" ORDER BY {quote(order.column)}"

    def rows(self, equal: Sequence[Any], among: Sequence[Sequence[Any]]) -> list[tuple[Any, ...]]:
        connection = connections[self.db]
        where, params = list(self._equal), []
        for field, value in zip(self.equal, equal, strict=True):
            params.append(field.get_db_prep_value(value, connection))
        for field, sql, values in zip(self.among, self._among, among, strict=True):
            values = list(values)
            if not values:
                return []
            where.append(f"{sql}({', '.join(['%s'] * len(values))})")
            params += [field.get_db_prep_value(v, connection) for v in values]
        with connection.cursor() as cursor:
            cursor.execute(self._head + " AND ".join(where) + self._order, params)
            fetched = cursor.fetchall()
        return [tuple(converted(self.db, self.columns, row)) for row in fetched]


class Guard(NamedTuple):
    """A condition an INSERT is made under, checked by the database in the same statement:
    `exists`, a SELECT whose values are %s parameters (`params`), must find a row."""

    exists: str
    params: Sequence[Any]


class NotInserted(Exception):
    """A guarded INSERT found its condition false: nothing was written."""


def insert(row: models.Model, only_if: Guard | None = None) -> None:
    """INSERT a new row (as `save()` would, without its signals) and set its primary key.
    With `only_if`, only while that condition holds (NotInserted if it does not), still one
    statement."""
    model = type(row)
    db = router.db_for_write(model)
    connection = connections[db]
    if only_if is None:
        sql, fields = _insert_sql(model, db)
    else:
        head, fields = _insert_select(model, db)
        sql = f"{head} WHERE EXISTS ({only_if.exists}) RETURNING {_pk_column(model, db)}"
    params = [field.get_db_prep_save(field.pre_save(row, True), connection) for field in fields]
    if only_if is not None:
        params += only_if.params
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        if only_if is not None or connection.features.can_return_columns_from_insert:
            returned = cursor.fetchone()
            if returned is None:
                raise NotInserted(f"{model._meta.label}: the condition of the INSERT is false")
            row.pk = returned[0]
        else:
            row.pk = cursor.lastrowid
    row._state.adding, row._state.db = False, db


def insert_new(rows: Sequence[models.Model], key: str) -> list[models.Model]:
    """INSERT the rows that no unique constraint holds yet, in one statement (ON CONFLICT DO
    NOTHING); those inserted get their primary key and are returned, in the order given.

    A row inserted here is this transaction's until it commits (another transaction inserting
    the same key waits for it), so it needs no SELECT ... FOR UPDATE. `key` (a text or integer
    field unique among `rows`) tells which rows the database inserted."""
    if not rows:
        return []
    model = type(rows[0])
    db = router.db_for_write(model)
    connection = connections[db]
    head, fields = _insert_head(model, db)
    quote = connection.ops.quote_name
    key_field = model._meta.get_field(key)
    one_row = "(" + ", ".join(["%s"] * len(fields)) + ")"
    sql = (
        f"{head} VALUES {', '.join([one_row] * len(rows))} ON CONFLICT DO NOTHING"
        f" RETURNING {quote(model._meta.pk.column)}, {quote(key_field.column)}"
    )
    params = [f.get_db_prep_save(f.pre_save(row, True), connection) for row in rows for f in fields]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        inserted = {value: pk for pk, value in cursor.fetchall()}
    new = [row for row in rows if getattr(row, key_field.attname) in inserted]
    for row in new:
        row.pk = inserted[getattr(row, key_field.attname)]
        row._state.adding, row._state.db = False, db
    return new


@functools.cache
def _insert_sql(model: type[models.Model], db: str) -> tuple[str, tuple[Any, ...]]:
    connection = connections[db]
    head, fields = _insert_head(model, db)
    sql = f"{head} VALUES ({', '.join(['%s'] * len(fields))})"
    if connection.features.can_return_columns_from_insert:
        sql += f" RETURNING {_pk_column(model, db)}"
    return sql, fields


@functools.cache
def _insert_select(model: type[models.Model], db: str) -> tuple[str, tuple[Any, ...]]:
    """INSERT ... SELECT of one row's values, to which a WHERE is appended. PostgreSQL types
    the values of a SELECT by themselves (a JSON text would stay text, which a jsonb column
    refuses), so each is cast to its column's type; SQLite, typed per value, needs no cast
    (and would turn JSON text into a number if given one)."""
    connection = connections[db]
    head, fields = _insert_head(model, db)
    if connection.vendor == "postgresql":
        values = [f"CAST(%s AS {_cast_type(field, connection)})" for field in fields]
    else:
        values = ["%s"] * len(fields)
    return f"{head} SELECT {', '.join(values)}", fields


def _cast_type(field: Any, connection: Any) -> str:
    """The type a value is cast to: its column's, but a text without its length (a cast to
    varchar(n) cuts a longer value silently; the column itself refuses it, as it does on an
    unguarded INSERT)."""
    if isinstance(field, models.CharField):
        return str(connection.ops.cast_char_field_without_max_length)
    return str(field.cast_db_type(connection))


def _pk_column(model: type[models.Model], db: str) -> str:
    return connections[db].ops.quote_name(model._meta.pk.column)


@functools.cache
def _insert_head(model: type[models.Model], db: str) -> tuple[str, tuple[Any, ...]]:
    """The head of an INSERT of every concrete field but the primary key, and those fields."""
    quote = connections[db].ops.quote_name
    fields = tuple(f for f in model._meta.concrete_fields if f is not model._meta.pk)
    columns = ", ".join(quote(field.column) for field in fields)
    return f"INSERT INTO {quote(model._meta.db_table)} ({columns})", fields


def _loaded_fields(model: type[models.Model], skip: Iterable[str]) -> tuple[Any, ...]:
    skip = set(skip)
    return tuple(f for f in model._meta.concrete_fields if f.attname not in skip)


def _from_db(
    db: str, model: type[models.Model], fields: Sequence[Any], values: Sequence[Any]
) -> models.Model:
    return model.from_db(db, [field.attname for field in fields], converted(db, fields, values))


def converted(db: str, fields: Sequence[Any], values: Sequence[Any]) -> list[Any]:
    """Column values as the ORM hands them out: every field's database converters applied."""
    connection = connections[db]
    values_out = []
    for field, value in zip(fields, values, strict=True):
        column, converters = _conversion(field, db)
        for convert in converters:
            value = convert(value, column, connection)
        values_out.append(value)
    return values_out


@functools.cache
def _conversion(field: Any, db: str) -> tuple[Any, tuple[Any, ...]]:
    """The column expression and the converters Django's compiler applies to this field's
    values (the backend's, then the field's own)."""
    connection = connections[db]
    column = field.get_col(field.model._meta.db_table)
    return column, (*connection.ops.get_db_converters(column), *field.get_db_converters(connection))
