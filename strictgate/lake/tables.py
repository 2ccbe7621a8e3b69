"""Dataset tables: one DuckDB schema per project, one DuckLake table per dataset, typed from
the dataset's definition, and the column map of every definition version.

Columns. ``string`` VARCHAR, ``number`` DOUBLE, ``integer`` BIGINT, ``boolean`` BOOLEAN,
``timestamp`` TIMESTAMPTZ; every other field (objects, arrays, unions of types, enum/const
without one type) and ``context`` are JSON. System columns come first: ``__receivedAt``
(TIMESTAMPTZ), ``__entryId`` (the queue entry), ``__seq`` (the record's place in its entry),
``__traceId``, ``__datasetVersion``, ``__absent`` (see below), ``__eventType`` (the job
name of an OrcaSheets request, NULL for records that came without one) and the event of a
record of an API with per-event ids (OneSight; NULL for every other record):
``__eventId`` and ``__source`` (VARCHAR) and ``__eventTime`` (TIMESTAMPTZ, read from the
event's RFC 3339 time by the same rules as timestamp fields, below), and ``__replayedAt``
(TIMESTAMPTZ: when a record replayed from the quarantine was re-admitted, NULL for every
other record). A table created
before a system column existed gets it added in place (NULL in its older rows) by the first
writer that meets it (:func:`ensure_layout`). Then the envelope's
columns (see :mod:`validator.definition`): ``timestamp`` and ``context`` for ``loguro``,
``id`` (VARCHAR) and ``timestamp`` for ``event`` (every stored event has both: the server
assigns them), none for ``none``; then the declared fields.

Values read back as sent (:mod:`strictgate.lake.reader` rebuilds each record from its version's
map):

- timestamp fields (and the record's ``timestamp``) keep their exact text in a VARCHAR column
  beside the typed one (``<field>__text``); the reader returns the text. The typed column is
  for queries: the instant in UTC truncated to microseconds (nanoseconds cut, not rounded);
  a leap second ``23:59:60`` is stored as the next second (``00:00:00`` of the next day, as
  PostgreSQL does); a lowercase ``t``/``z`` is read as uppercase; offsets become UTC.
- ``number`` is an IEEE double: the value of the sent text (-0.0 keeps its sign, 1e308 and
  5e-324 exact, 1.5e-400 is 0.0 as in any JSON parser; the validator refuses non-finite
  numbers); the reader returns a float, so ``5`` comes back as ``5.0``.
- ``integer`` is BIGINT: int64 bounds exact; the validator accepts ``1.0`` and ``1e2`` as
  integers, they come back as ``1`` and ``100``.
- strings are stored decoded (escapes such as ``\\u00e9`` come back as the character);
  a string whose text is itself JSON stays a string.
- JSON columns keep the value's text (numbers exactly as written) minus insignificant
  whitespace, escapes decoded; the reader parses it (ints exact, the validator allows only
  int64 and finite numbers).
- an optional field that was left out is listed in ``__absent`` (VARCHAR[], NULL when none
  is), so "absent" and "null" read back differently.
- the order of a record's top-level keys is not kept: definition order (``timestamp``,
  ``context``, then the fields), then the system fields. Nested JSON keeps its order.

Versions. Each version's fields map to columns in ``__strictgate.columns``. A field whose
storage kind is unchanged keeps its column (constraints do not matter to storage); a new
field, or a field whose kind changed (e.g. number -> string, object -> integer), gets a new
nullable column added in place (``ALTER TABLE ADD COLUMN``), named after the field, or
``<field>__v<version>`` when that name is taken (compared case-insensitively, as DuckDB
does). Old rows keep their old column, so rows of every version stay readable, each through
its own version's map; a removed field leaves its column (NULL in newer rows).

Quarantine: one table for every dataset's invalid records, ``lake.__strictgate.quarantine``
(:data:`QUARANTINE_COLUMNS`, created with the bookkeeping tables), keyed by ``(project,
dataset, entry_id, seq)``: ``seq`` is the record's place in its queue entry's
``quarantine`` array, ``request_index`` its place in the request, ``record`` its JSON text
as sent, ``errors`` its errors (a JSON array of ``{code, field, message}``),
``error_codes`` their distinct codes, sorted; ``dataset_version``, ``trace_id``,
``received_at``, ``user_id``, ``event_type`` come from the entry, ``event`` from the item
(NULL when it has none), ``checked_at`` is when the record last failed (its receipt, at
first). The writer fills it from the same stage lines' reader as the records
(:func:`quarantine_insert_sql`).

Partitioning: by ``year/month/day(__receivedAt)`` (UTC). A worker batch is received within
moments, so a commit lands in one partition (partitioning by the record's own
``timestamp`` would scatter a backfill over many tiny files), and the read API's ``from``/
``to`` and receipt order are on ``__receivedAt``, so they prune partitions.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import duckdb
import orjson

from strictgate.lake.engine import ALIAS, quote_ident, retry
from validator.definition import (
    DEFAULT_ENVELOPE,
    EVENT_ID,
    EVENT_TIMESTAMP,
    envelope_of,
    scalar_type,
)

META = "__strictgate"
SQL_TYPES = {"string": "VARCHAR", "number": "DOUBLE", "integer": "BIGINT",
             "boolean": "BOOLEAN", "timestamp": "TIMESTAMPTZ", "json": "JSON"}
# what json_transform extracts for each kind (timestamps as their text)
TRANSFORM_TYPES = {**SQL_TYPES, "timestamp": "VARCHAR"}
SYSTEM_COLUMNS = (("__receivedAt", "TIMESTAMPTZ"), ("__entryId", "VARCHAR"),
                  ("__seq", "INTEGER"), ("__traceId", "VARCHAR"),
                  ("__datasetVersion", "INTEGER"), ("__absent", "VARCHAR[]"),
                  ("__eventType", "VARCHAR"), ("__eventId", "VARCHAR"),
                  ("__source", "VARCHAR"), ("__eventTime", "TIMESTAMPTZ"),
                  ("__replayedAt", "TIMESTAMPTZ"))
"""Every table's system columns, in table order; later releases only append (nullable)."""

QUARANTINE_TABLE = f"{ALIAS}.{META}.quarantine"
"""The quarantine of every dataset (see the module docstring)."""
QUARANTINE_COLUMNS = (
    ("project", "VARCHAR"), ("dataset", "VARCHAR"), ("entry_id", "VARCHAR"),
    ("seq", "INTEGER"), ("request_index", "INTEGER"), ("record", "VARCHAR"),
    ("errors", "JSON"), ("error_codes", "VARCHAR[]"), ("dataset_version", "INTEGER"),
    ("trace_id", "VARCHAR"), ("received_at", "TIMESTAMPTZ"), ("user_id", "VARCHAR"),
    ("event_type", "VARCHAR"), ("event", "JSON"), ("checked_at", "TIMESTAMPTZ"))
"""The quarantine table's columns, in table order."""


@dataclass(frozen=True)
class FieldColumn:
    """Where one field of one version is stored."""

    field: str
    kind: str
    column: str
    text_column: str | None
    optional: bool


@dataclass(frozen=True)
class Layout:
    """The column map of one definition version of a dataset."""

    project: str
    dataset: str
    version: int
    fields: tuple[FieldColumn, ...]

    @property
    def table(self) -> str:
        """The quoted, catalog-qualified table name."""
        return table_name(self.project, self.dataset)


def table_name(project: str, dataset: str) -> str:
    """``lake."<project>"."<dataset>"``."""
    return f"{ALIAS}.{quote_ident(project)}.{quote_ident(dataset)}"


def fence_table(project: str, dataset: str) -> str:
    """The dataset's fence table (one row the writer UPDATEs in every commit).

    Named by a hash: ids may contain ``_``, so a plain join of project and dataset could
    name two datasets alike."""
    digest = hashlib.sha256(f"{project}\0{dataset}".encode()).hexdigest()[:24]
    return f"{ALIAS}.{META}.{quote_ident('fence_' + digest)}"


def field_kinds(definition: Mapping[str, Any]) -> list[tuple[str, str, bool]]:
    """(field, kind, optional) of a normalized definition, the envelope's fields first."""
    envelope = envelope_of(definition)
    out: list[tuple[str, str, bool]] = []
    if envelope == DEFAULT_ENVELOPE:
        out = [("timestamp", "timestamp", False), ("context", "json", False)]
    elif envelope == "event":
        # Stored events all have both (the server's id; the receipt time if none was sent).
        out = [(EVENT_ID, "string", False), (EVENT_TIMESTAMP, "timestamp", False)]
    for name, decl in definition["fields"].items():
        if envelope == "event" and name == EVENT_TIMESTAMP:
            continue
        scalar = scalar_type(decl)
        out.append((name, scalar[0] if scalar else "json", decl.get("required") is False))
    return out


def ensure_meta(con: duckdb.DuckDBPyConnection) -> None:
    """Create the bookkeeping schema and tables if missing."""
    def attempt() -> None:
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {ALIAS}.{META}")
        con.execute(
            f"CREATE TABLE IF NOT EXISTS {ALIAS}.{META}.columns (project VARCHAR,"
            " dataset VARCHAR, version INTEGER, position INTEGER, field VARCHAR,"
            " kind VARCHAR, column_name VARCHAR, text_column VARCHAR, optional BOOLEAN)")
        con.execute(
            f"CREATE TABLE IF NOT EXISTS {ALIAS}.{META}.ledger (project VARCHAR,"
            " dataset VARCHAR, entry_id VARCHAR, records BIGINT, committed_at TIMESTAMPTZ)")
        columns = ", ".join(f"{name} {sql_type}" for name, sql_type in QUARANTINE_COLUMNS)
        con.execute(f"CREATE TABLE IF NOT EXISTS {QUARANTINE_TABLE} ({columns})")
    retry(attempt)


def load_layouts(con: duckdb.DuckDBPyConnection, project: str,
                 dataset: str) -> dict[int, Layout]:
    """Every version's column map of a dataset (empty when it has no table)."""
    rows = con.execute(
        f"SELECT version, field, kind, column_name, text_column, optional"
        f" FROM {ALIAS}.{META}.columns WHERE project = ? AND dataset = ?"
        " ORDER BY version, position", [project, dataset]).fetchall()
    fields: dict[int, list[FieldColumn]] = {}
    for version, field, kind, column, text_column, optional in rows:
        fields.setdefault(int(version), []).append(
            FieldColumn(field, kind, column, text_column, bool(optional)))
    return {v: Layout(project, dataset, v, tuple(f)) for v, f in fields.items()}


def _table_columns(con: duckdb.DuckDBPyConnection, project: str, dataset: str) -> list[str]:
    rows = con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_catalog = ?"
        " AND table_schema = ? AND table_name = ?", [ALIAS, project, dataset]).fetchall()
    return [r[0] for r in rows]


def _free_name(base: str, version: int, taken: set[str]) -> str:
    """``base`` unless taken (case-insensitively), else ``base__v<version>[_n]``."""
    candidates = [base, f"{base}__v{version}"]
    candidates += [f"{base}__v{version}_{n}" for n in range(2, 1000)]
    for name in candidates:
        if name.lower() not in taken:
            taken.add(name.lower())
            return name
    raise ValueError(f"no free column name for {base!r}")


def plan_layout(project: str, dataset: str, version: int, definition: Mapping[str, Any],
                existing: Mapping[int, Layout], table_columns: list[str]
                ) -> tuple[Layout, list[tuple[str, str]]]:
    """The column map of ``version`` and the columns to add ``(name, SQL type)``.

    A field reuses the column of the newest other version that stored it with the same
    kind; otherwise it gets a new column."""
    taken = {c.lower() for c in table_columns} | {n.lower() for n, _ in SYSTEM_COLUMNS}
    added: list[tuple[str, str]] = []
    out: list[FieldColumn] = []
    for field, kind, optional in field_kinds(definition):
        previous = [fc for v in sorted(existing, reverse=True) for fc in existing[v].fields
                    if fc.field == field and fc.kind == kind]
        if previous:
            out.append(FieldColumn(field, kind, previous[0].column, previous[0].text_column,
                                   optional))
            continue
        column = _free_name(field, version, taken)
        added.append((column, SQL_TYPES[kind]))
        text_column = None
        if kind == "timestamp":
            text_column = _free_name(f"{field}__text", version, taken)
            added.append((text_column, "VARCHAR"))
        out.append(FieldColumn(field, kind, column, text_column, optional))
    return Layout(project, dataset, version, tuple(out)), added


def ensure_layout(con: duckdb.DuckDBPyConnection, project: str, dataset: str, version: int,
                  definition: Mapping[str, Any]) -> Layout:
    """The column map of ``version``, creating the table or adding columns first if needed
    (a system column the table lacks, because an older release created it, included).

    Idempotent and safe against a concurrent caller (the loser's transaction conflicts and
    its retry finds the map)."""
    ensure_meta(con)

    def attempt() -> Layout:
        con.execute("BEGIN")
        try:
            existing = load_layouts(con, project, dataset)
            columns = _table_columns(con, project, dataset)
            have = {c.lower() for c in columns}
            missing = [(n, t) for n, t in SYSTEM_COLUMNS if columns and n.lower() not in have]
            if version in existing and not missing:
                con.execute("ROLLBACK")
                return existing[version]
            table = table_name(project, dataset)
            for name, sql_type in missing:
                con.execute(f"ALTER TABLE {table} ADD COLUMN {quote_ident(name)} {sql_type}")
            if version in existing:
                con.execute("COMMIT")
                return existing[version]
            layout, added = plan_layout(project, dataset, version, definition, existing,
                                        columns)
            created = not columns
            if created:
                con.execute(f"CREATE SCHEMA IF NOT EXISTS {ALIAS}.{quote_ident(project)}")
                system = ", ".join(f"{quote_ident(n)} {t}" for n, t in SYSTEM_COLUMNS)
                con.execute(f"CREATE TABLE {table} ({system})")
                received = quote_ident("__receivedAt")
                con.execute(f"ALTER TABLE {table} SET PARTITIONED BY (year({received}),"
                            f" month({received}), day({received}))")
                con.execute(f"CREATE TABLE IF NOT EXISTS {fence_table(project, dataset)}"
                            " (n BIGINT)")
                con.execute(f"INSERT INTO {fence_table(project, dataset)} VALUES (0)")
            for name, sql_type in added:
                con.execute(f"ALTER TABLE {table} ADD COLUMN {quote_ident(name)} {sql_type}")
            con.executemany(
                f"INSERT INTO {ALIAS}.{META}.columns VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [[project, dataset, version, i, fc.field, fc.kind, fc.column, fc.text_column,
                  fc.optional] for i, fc in enumerate(layout.fields)])
            con.execute("COMMIT")
            return layout
        except BaseException:
            # a failed COMMIT has already ended the transaction; the first error matters
            with contextlib.suppress(duckdb.Error):
                con.execute("ROLLBACK")
            raise

    return retry(attempt)


def _pointer(name: str) -> str:
    return "/" + name.replace("~", "~0").replace("/", "~1")


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _timestamp_expr(text: str) -> str:
    """TIMESTAMPTZ of RFC 3339 ``text``: upper-cased when it does not cast as is (DuckDB
    refuses ``t``/``z``; COALESCE evaluates an argument only for the rows still NULL, so
    the usual uppercase text is not copied); a leap second is read as second 59 plus one
    second."""
    upper = f"upper({text})"
    return (f"coalesce(TRY_CAST({text} AS TIMESTAMPTZ), TRY_CAST({upper} AS TIMESTAMPTZ),"
            f" TRY_CAST(substr({upper}, 1, 17) || '59' || substr({upper}, 20) AS TIMESTAMPTZ)"
            " + INTERVAL 1 SECOND)")


def record_struct(layout: Layout) -> str | None:
    """The ``STRUCT(...)`` a record of ``layout`` is read as, or None when the JSON reader
    cannot read it that way: an optional field (absent and null would both read as NULL)
    or two field names equal but for case (STRUCT names are case-insensitive)."""
    names = {fc.field.lower() for fc in layout.fields}
    if len(names) < len(layout.fields) or any(fc.optional for fc in layout.fields):
        return None
    members = ", ".join(f"{quote_ident(fc.field)} {TRANSFORM_TYPES[fc.kind]}"
                        for fc in layout.fields)
    return f"STRUCT({members})"


EVENTS_TYPE = 'STRUCT(id VARCHAR, source VARCHAR, "time" VARCHAR)[]'
"""How a stage line's ``k`` (the entry's ``events``) is read."""

JSON_OBJECT_SIZE_FLOOR = 1 << 20
"""Smallest ``maximum_object_size`` handed to DuckDB's JSON reader (its own default is 16 MB:
most stage lines are far smaller, and a small floor keeps small commits cheap)."""


def json_object_size(max_line_bytes: int) -> int:
    """``maximum_object_size`` for lines of at most ``max_line_bytes``: the next power of two
    above it (so few distinct values reach DuckDB), at least :data:`JSON_OBJECT_SIZE_FLOOR`."""
    return max(JSON_OBJECT_SIZE_FLOOR, 1 << (max_line_bytes + 1).bit_length())


def insert_sql(layout: Layout, stage_paths: Sequence[str], max_line_bytes: int) -> str:
    """INSERT of every record staged in ``stage_paths`` into the layout's table (see
    :func:`records_select`)."""
    columns, select = records_select(layout, stage_paths, max_line_bytes)
    return f"INSERT INTO {layout.table} ({', '.join(columns)}) {select}"


def records_select(layout: Layout, stage_paths: Sequence[str], max_line_bytes: int
                   ) -> tuple[list[str], str]:
    """The quoted table columns and the SELECT giving one row of them (aliased to those
    names) per record staged in ``stage_paths``.

    Each stage file holds one line per queue entry: ``{"e": entry id, "t": trace id,
    "v": version, "a": received_at, "y": event type, "k": events, "x": replayed_at,
    "r": [records...]}`` (``y``, ``k`` and ``x`` only when the entry has them, else their
    columns are NULL; ``k`` is the
    entry's ``events`` array as is, read as a list of STRUCTs, the record at place ``i``
    taking item ``i``; ``r`` is the queued JSON array as is).
    DuckDB's JSON reader does all per-record work: no Python loop per record; it reads
    several files in parallel (one per DuckDB thread).

    A layout without optional fields is read typed by the reader itself (``r`` as a list of
    STRUCTs: each record parsed once); otherwise each record is read as JSON and then
    transformed, so that ``json_exists`` can tell an absent field from a null one. Both read
    and convert a value with the same code (DuckDB's JSON transform), so the value rules
    above hold for either.

    ``max_line_bytes`` is the longest staged line: DuckDB's reader allocates buffers of
    about twice its ``maximum_object_size`` per read, and a fixed 1 GiB made a worker's
    resident memory climb to gigabytes; the reader gets what the lines need instead."""
    struct = record_struct(layout)
    names = [n for n, _ in SYSTEM_COLUMNS]
    optional = [fc for fc in layout.fields if fc.optional]
    if optional:
        items = ", ".join(f"CASE WHEN NOT json_exists(j, {_literal(_pointer(fc.field))})"
                          f" THEN {_literal(fc.field)} END" for fc in optional)
        listed = f"list_filter([{items}], x -> x IS NOT NULL)"
        absent = f"CASE WHEN len({listed}) = 0 THEN NULL ELSE {listed} END"
    else:
        absent = "NULL::VARCHAR[]"
    values = ["a::TIMESTAMPTZ", "e", "i::INTEGER", "t", "v", absent, "y",
              "k[i + 1].id", "k[i + 1].source", _timestamp_expr("k[i + 1].time"),
              "x::TIMESTAMPTZ"]
    for i, fc in enumerate(layout.fields, start=1):
        value = f"struct_extract_at(s, {i})"
        names.append(fc.column)
        if fc.kind == "timestamp":
            values.append(_timestamp_expr(value))
            assert fc.text_column is not None
            names.append(fc.text_column)
        values.append(value)
    columns = [quote_ident(n) for n in names]
    files = "[" + ", ".join(_literal(p) for p in stage_paths) + "]"
    record_type = f"{struct}[]" if struct else "JSON[]"
    source = (
        f"SELECT a, e, t, v, y, k, x, unnest(r) AS {'s' if struct else 'j'},"
        f" generate_subscripts(r, 1) - 1 AS i FROM read_json({files},"
        f" format = 'newline_delimited', maximum_object_size = {json_object_size(max_line_bytes)},"
        " columns = {'e': 'VARCHAR', 't': 'VARCHAR', 'v': 'INTEGER', 'a': 'VARCHAR',"
        f" 'y': 'VARCHAR', 'k': {_literal(EVENTS_TYPE)}, 'x': 'VARCHAR',"
        f" 'r': {_literal(record_type)}}})")
    if not struct:
        spec = orjson.dumps({fc.field: TRANSFORM_TYPES[fc.kind] for fc in layout.fields})
        source = (f"SELECT a, e, t, v, y, k, x, i, j,"
                  f" json_transform(j, {_literal(spec.decode())}) AS s FROM ({source})")
    aliased = ", ".join(f"{value} AS {column}" for value, column in zip(values, columns,
                                                                         strict=True))
    return columns, f"SELECT {aliased} FROM ({source})"


def admission_position(column: str) -> str:
    """SQL text ordering entry ids ``<user>/<ms>-<seq>`` (the ledger's ids of stream
    entries) as they were admitted: ``ms`` then ``seq`` compared as numbers (each
    zero-padded to 20 digits), then the whole id, so two users' entries of the same
    ``ms-seq`` still compare one way everywhere. An id not ending in ``<digits>-<digits>``
    sorts as ``0-0``. Python's twin: :func:`admission_key`."""
    ms = f"regexp_extract({column}, '([0-9]+)-[0-9]+$', 1)"
    seq = f"regexp_extract({column}, '([0-9]+)$', 1)"
    return f"(lpad({ms}, 20, '0') || lpad({seq}, 20, '0') || {column})"


_STREAM_ID = re.compile(r"([0-9]+)-([0-9]+)$")


def admission_key(entry_id: str) -> tuple[int, int, str]:
    """The order of :func:`admission_position`, for sorting entry ids in Python."""
    found = _STREAM_ID.search(entry_id)
    if found is None:
        return (0, 0, entry_id)
    return (int(found.group(1)), int(found.group(2)), entry_id)


def merge_sql(layout: Layout, stage_paths: Sequence[str], max_line_bytes: int,
              key_column: str) -> tuple[str, str]:
    """The DELETE and the INSERT (run in this order, in one transaction) that merge every
    record staged in ``stage_paths`` into the layout's table, keyed on ``key_column``
    (unquoted): of the staged records with one key, only the last admitted counts (greatest
    :func:`admission_position` of ``__entryId``, then greatest ``__seq``); the DELETE
    removes the stored rows with that key admitted before it, the INSERT stores it unless a
    stored row with that key is left (one admitted after it, committed first). So the
    table ends with the last admitted row of each key whatever order commits come in.
    Records whose key is NULL are inserted as they are (nothing matches NULL)."""
    columns, select = records_select(layout, stage_paths, max_line_bytes)
    key = quote_ident(key_column)
    entry, seq = quote_ident("__entryId"), quote_ident("__seq")
    table = layout.table
    incoming = f"(SELECT {key} AS k, {entry} AS e FROM ({select}))"
    # The IN first: it keeps the rows of the incoming keys only, before the correlated
    # EXISTS (a join DuckDB plans over every stored row: 6x slower alone on 1M rows).
    delete = (f"DELETE FROM {table} AS stored WHERE stored.{key} IN (SELECT k FROM"
              f" {incoming}) AND EXISTS (SELECT 1 FROM {incoming} AS incoming"
              f" WHERE incoming.k = stored.{key} AND {admission_position('incoming.e')}"
              f" > {admission_position(f'stored.{entry}')})")
    last = (f"SELECT * FROM ({select}) QUALIFY {key} IS NULL OR row_number() OVER"
            f" (PARTITION BY {key} ORDER BY {admission_position(entry)} DESC,"
            f" {seq} DESC) = 1")
    names = ", ".join(columns)
    insert = (f"INSERT INTO {table} ({names}) SELECT {names} FROM ({last}) AS incoming"
              f" WHERE incoming.{key} IS NULL OR NOT EXISTS (SELECT 1 FROM {table} AS"
              f" stored WHERE stored.{key} = incoming.{key})")
    return delete, insert


QUARANTINE_ITEMS_TYPE = ('STRUCT("index" INTEGER, record VARCHAR, errors JSON,'
                         ' event JSON)[]')
"""How a quarantine stage line's ``q`` (the entry's ``quarantine``) is read."""


def quarantine_insert_sql(stage_paths: Sequence[str], max_line_bytes: int) -> str:
    """INSERT into :data:`QUARANTINE_TABLE` of every item staged in ``stage_paths``.

    Each file holds one line per queue entry with quarantined records: ``{"p": project,
    "d": dataset, "e": entry id, "t": trace id, "v": version, "a": received_at, "u": user
    id, "y": event type (only when set), "q": [items...]}``, ``q`` the entry's
    ``quarantine`` array as is. As for the records, DuckDB's JSON reader does the per-item
    work: the item at place ``seq`` of ``q`` is the row ``(p, d, e, seq)``, its error codes
    are read from its errors in SQL."""
    files = "[" + ", ".join(_literal(p) for p in stage_paths) + "]"
    source = (
        "SELECT p, d, e, t, v, a::TIMESTAMPTZ AS a, u, y, unnest(q) AS item,"
        f" generate_subscripts(q, 1) - 1 AS seq FROM read_json({files},"
        f" format = 'newline_delimited', maximum_object_size = {json_object_size(max_line_bytes)},"
        " columns = {'p': 'VARCHAR', 'd': 'VARCHAR', 'e': 'VARCHAR', 't': 'VARCHAR',"
        " 'v': 'INTEGER', 'a': 'VARCHAR', 'u': 'VARCHAR', 'y': 'VARCHAR',"
        f" 'q': {_literal(QUARANTINE_ITEMS_TYPE)}}})")
    codes = "list_sort(list_distinct(json_extract_string(item.errors, '$[*].code')))"
    names = ", ".join(name for name, _ in QUARANTINE_COLUMNS)
    return (f"INSERT INTO {QUARANTINE_TABLE} ({names}) SELECT p, d, e, seq::INTEGER,"
            f" item.index, item.record, item.errors, {codes}, v, t, a, u, y, item.event, a"
            f" FROM ({source})")
