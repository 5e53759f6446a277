"""JSON columns of TEXT affinity on SQLite, so that every value comes back as it was stored.

SQLite gives a column declared ``JSON`` NUMERIC affinity: a JSON text that reads as a number
was stored as one, so a step result ``18446744073709551617`` came back rounded, one of 400
digits as infinity (which no JSON response can carry), and ``1.0`` as the integer 1. The
columns are now declared ``JSONTEXT`` (TEXT affinity).

SQLite cannot change a column's type, so each table holding JSON columns is rebuilt by the
procedure its documentation gives (``storage.migrate`` runs migrations with foreign keys off
and checks them before committing): a new table from the old one's ``CREATE TABLE`` with the
new type, the rows copied, the old table dropped, the new one renamed, its indexes created
again. Values stored as numbers become JSON text: integers exactly, floats to 17 digits (the
same double), and an infinity — a number too large for a double — null, since it stands for
no value it could be read back as. PostgreSQL needs nothing: JSONB keeps numbers exactly.
"""

from __future__ import annotations

import re

import sqlalchemy as sa

# A column declaration as SQLAlchemy writes it, one per line: "\tparams JSON, ".
_JSON_COLUMN = re.compile(r'^(\s*)("\w+"|\w+) JSON\b', re.MULTILINE)


def upgrade(conn: sa.Connection) -> None:
    if conn.dialect.name != "sqlite":
        return
    tables = conn.execute(
        sa.text("SELECT name, sql FROM sqlite_schema WHERE type = 'table' ORDER BY name")
    ).all()
    for name, sql in tables:
        if _JSON_COLUMN.search(sql):
            _rebuild(conn, name, sql)


def _rebuild(conn: sa.Connection, table: str, sql: str) -> None:
    indexes = conn.execute(
        sa.text("SELECT sql FROM sqlite_schema WHERE type = 'index' AND tbl_name = :t"),
        {"t": table},
    ).scalars()
    index_sql = [s for s in indexes if s is not None]  # None: a constraint's own index
    json_columns = {column.strip('"') for _, column in _JSON_COLUMN.findall(sql)}
    new = f"_new_{table}"
    head = f"CREATE TABLE {table} ("
    if not sql.startswith(head):
        raise RuntimeError(f"unexpected definition of table {table!r}: {sql[:80]!r}")
    create = f'CREATE TABLE "{new}" (' + _JSON_COLUMN.sub(r"\1\2 JSONTEXT", sql[len(head) :])
    columns = [row[1] for row in conn.exec_driver_sql(f'PRAGMA table_info("{table}")')]
    names = ", ".join(f'"{c}"' for c in columns)
    values = ", ".join(_as_text(c) if c in json_columns else f'"{c}"' for c in columns)
    conn.exec_driver_sql(create)
    conn.exec_driver_sql(f'INSERT INTO "{new}" ({names}) SELECT {values} FROM "{table}"')
    conn.exec_driver_sql(f'DROP TABLE "{table}"')
    conn.exec_driver_sql(f'ALTER TABLE "{new}" RENAME TO "{table}"')
    for statement in index_sql:
        conn.exec_driver_sql(statement)


def _as_text(column: str) -> str:
    """The JSON text of a value that NUMERIC affinity stored as a number (9e999: infinity)."""
    c = f'"{column}"'
    return (
        f"CASE typeof({c}) WHEN 'integer' THEN CAST({c} AS TEXT) "
        f"WHEN 'real' THEN CASE WHEN abs({c}) < 9e999 THEN printf('%!.17g', {c}) END "
        f"ELSE {c} END"
    )
