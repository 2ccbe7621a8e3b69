"""Reading the lake: pages of a dataset's records in receipt order, and read-only SQL.

Receipt order is ``(__receivedAt, __entryId, __seq)``: the time the API received the entry,
then the entry, then the record's place in it; a total order, so a cursor (the last row's
key) resumes exactly after it even while new rows are committed. The cursor is opaque:
base64url of the key and the dataset it belongs to, signed with HMAC-SHA256, so a cursor we
did not issue (or one of another dataset) is refused.

Each row is rebuilt into the record as sent through its own version's column map (see
:mod:`strictgate.lake.tables` for the value rules), plus ``__traceId``, ``__datasetVersion``,
``__receivedAt`` (as the API stamped it: ``YYYY-MM-DDTHH:MM:SS.mmmZ``), ``__entryId`` and,
only for a record that came with one (an OrcaSheets job name), ``__eventType``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import orjson

from strictgate.lake import engine
from strictgate.lake.engine import ALIAS, LakeConfig, quote_ident
from strictgate.lake.tables import META, Layout, load_layouts, table_name
from strictgate.redact import redacted
from strictgate.timestamps import utc_z

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}\Z")
# RFC 3339 date-time (the offset is required; T/Z in either case)
_DATE_TIME_RE = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})\Z")
_KEY = ("__receivedAt", "__entryId", "__seq")
_READ_STATEMENTS = (duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN)


class ReadError(ValueError):
    """A malformed or out-of-range read parameter; ``param`` names it."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


class DatasetNotFound(LookupError):
    """The dataset has no table in the lake (nothing was ever written to it)."""


class LakeEmpty(DatasetNotFound):
    """No writer has created the lake yet (every dataset is unknown to it)."""


class NotARead(ValueError):
    """An operator's SQL that is not exactly one read statement."""


class LakeUnavailable(Exception):
    """The lake could not be read (catalog unreachable, a data file missing or unreadable)."""


@dataclass(frozen=True)
class Page:
    """One page of records and the cursor of the next (None at the end)."""

    records: list[dict[str, Any]]
    next_cursor: str | None


def parse_limit(value: str | int | None) -> int:
    """``limit``: 1..:data:`MAX_LIMIT`, default :data:`DEFAULT_LIMIT`."""
    if value is None:
        return DEFAULT_LIMIT
    if isinstance(value, str):
        if not value.isascii() or not value.isdigit():
            raise ReadError("limit", "limit must be an integer")
        value = int(value)
    if not 1 <= value <= MAX_LIMIT:
        raise ReadError("limit", f"limit must be between 1 and {MAX_LIMIT}")
    return value


def parse_bound(param: str, text: str | None, *, end: bool) -> datetime | None:
    """``from``/``to``: RFC 3339 date-time or ``YYYY-MM-DD`` (UTC days). ``from`` is
    inclusive, ``to`` exclusive; a date as ``to`` (``end``) means up to the end of that
    day, so the next day's start is returned."""
    if text is None:
        return None
    try:
        if _DATE_RE.match(text):
            day = date.fromisoformat(text)
            start = datetime(day.year, day.month, day.day, tzinfo=UTC)
            return start + timedelta(days=1) if end else start
        if _DATE_TIME_RE.match(text):
            fixed = text.upper().replace("Z", "+00:00")
            if fixed[17:19] == "60":
                # a leap second: the instant right after 23:59:59 (as the lake stores it)
                fixed = fixed[:17] + "59" + fixed[19:]
                return datetime.fromisoformat(fixed).astimezone(UTC) + timedelta(seconds=1)
            return datetime.fromisoformat(fixed).astimezone(UTC)
    except ValueError:
        pass
    raise ReadError(param, f"{param} must be an RFC 3339 date-time or YYYY-MM-DD")


def parse_version(value: str | int | None) -> int | None:
    """``version``: an integer >= 0 (0 is a built-in definition's version) or None."""
    if value is None:
        return None
    if isinstance(value, str):
        if not value.isascii() or not value.isdigit() or len(value) > 9:
            raise ReadError("version", "version must be an integer >= 0")
        value = int(value)
    if value < 0:
        raise ReadError("version", "version must be an integer >= 0")
    return value


def render_received_at(value: datetime) -> str:
    """``__receivedAt`` as the API stamps it (milliseconds, ``Z``); microseconds if any."""
    return utc_z(value, "milliseconds" if value.microsecond % 1000 == 0 else "microseconds")


class CursorCodec:
    """Signs and checks cursors (HMAC-SHA256 over the dataset and the row key)."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("cursor secret must be at least 16 bytes")
        self._secret = secret

    def _mac(self, body: bytes) -> bytes:
        return hmac.new(self._secret, body, hashlib.sha256).digest()[:16]

    def encode(self, project: str, dataset: str, key: tuple[datetime, str, int]) -> str:
        """The cursor after the row whose receipt key is ``key``."""
        micros = _micros(key[0])
        body = orjson.dumps([project, dataset, micros, key[1], key[2]])
        return base64.urlsafe_b64encode(self._mac(body) + body).decode().rstrip("=")

    def decode(self, project: str, dataset: str, cursor: str) -> tuple[datetime, str, int]:
        """The row key of a cursor we issued for this dataset; else :class:`ReadError`."""
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
            mac, body = raw[:16], raw[16:]
            if len(cursor) > 2048 or not hmac.compare_digest(mac, self._mac(body)):
                raise ValueError("bad signature")
            p, d, micros, entry_id, seq = orjson.loads(body)
            if (p, d) != (project, dataset):
                raise ValueError("another dataset")
            at = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(micros))
            return at, str(entry_id), int(seq)
        except (ValueError, TypeError, orjson.JSONDecodeError):
            raise ReadError("cursor", "cursor is not one this server issued") from None


def _micros(value: datetime) -> int:
    delta = value.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def rebuild(layout: Layout, row: dict[str, Any]) -> dict[str, Any]:
    """The record as sent from one table row of ``layout``'s version."""
    absent = set(row.get("__absent") or ())
    record: dict[str, Any] = {}
    for fc in layout.fields:
        if fc.field in absent:
            continue
        if fc.kind == "timestamp":
            assert fc.text_column is not None
            record[fc.field] = row[fc.text_column]
        elif fc.kind == "json":
            text = row[fc.column]
            record[fc.field] = None if text is None else orjson.loads(text)
        else:
            record[fc.field] = row[fc.column]
    record["__traceId"] = row["__traceId"]
    record["__datasetVersion"] = row["__datasetVersion"]
    record["__receivedAt"] = render_received_at(row["__receivedAt"])
    record["__entryId"] = row["__entryId"]
    # absent, not null, without one: records of the other dialects read as they always did
    # (a table older than the column has no such key at all)
    event_type = row.get("__eventType")
    if event_type is not None:
        record["__eventType"] = event_type
    return record


class LakeReader:
    """Read-only access to the lake (a READ_ONLY attach); safe to share between threads."""

    def __init__(self, config: LakeConfig, cursor_secret: bytes) -> None:
        self.config = config
        self.cursors = CursorCodec(cursor_secret)
        self._con: duckdb.DuckDBPyConnection | None = None
        self._lock = threading.Lock()
        # (project, dataset) -> its versions' column maps; a version never changes once
        # written, so only a row of an unknown version makes it reload
        self._layouts: dict[tuple[str, str], dict[int, Layout]] = {}
        self._meta = False

    def _connection(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            if self.config.is_sqlite and not Path(self.config.catalog[7:]).exists():
                raise LakeEmpty("the lake has no data yet")
            try:
                self._con = engine.connect(self.config, read_only=True)
            except duckdb.InvalidInputException as exc:
                if "does not exist" in str(exc):
                    # no writer has created the lake yet: nothing to read
                    raise LakeEmpty("the lake has no data yet") from None
                raise
        return self._con

    def close(self) -> None:
        """Close the connection (a later call opens a new one)."""
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None

    def page(self, project: str, dataset: str, *, limit: int = DEFAULT_LIMIT,
             cursor: str | None = None, since: datetime | None = None,
             until: datetime | None = None, version: int | None = None) -> Page:
        """Up to ``limit`` records with ``since <= __receivedAt < until`` (either optional),
        of ``version`` if given, after ``cursor``, in receipt order."""
        limit = parse_limit(limit)
        after = self.cursors.decode(project, dataset, cursor) if cursor else None
        where: list[str] = []
        params: list[Any] = []
        received = quote_ident("__receivedAt")
        if after is not None:
            where.append(f"({', '.join(quote_ident(k) for k in _KEY)}) > (?, ?, ?)")
            params.extend(after)
            # the same bound on the partition column alone: DuckLake prunes the files (and
            # day partitions) before it, which the row comparison does not (36 -> 8 ms for
            # a deep page of 200k rows)
            where.append(f"{received} >= ?")
            params.append(after[0])
        if since is not None:
            where.append(f"{received} >= ?")
            params.append(since)
        if until is not None:
            where.append(f"{received} < ?")
            params.append(until)
        if version is not None:
            where.append(f"{quote_ident('__datasetVersion')} = ?")
            params.append(version)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        order = ", ".join(quote_ident(k) for k in _KEY)
        sql = (f"SELECT * FROM {table_name(project, dataset)}{clause} ORDER BY {order}"
               f" LIMIT {limit + 1}")
        with self._lock:
            try:
                con = self._connection()
                layouts = self._layouts_of(con, project, dataset, refresh=False)
                cur = con.execute(sql, params)
                names = [d[0] for d in cur.description or ()]
                rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
                if any(int(r["__datasetVersion"]) not in layouts for r in rows):
                    layouts = self._layouts_of(con, project, dataset, refresh=True)
            except duckdb.CatalogException:
                raise DatasetNotFound(f"{project}/{dataset}") from None
            except duckdb.Error as exc:
                # a data file missing or unreadable, the catalog unreachable. The connection
                # itself recovers (verified: a SQLite catalog is reopened per query, a
                # recreated lake is read at once; a PostgreSQL catalog reconnects after its
                # backends were terminated), so it is kept.
                raise LakeUnavailable(redacted(str(exc))[:300]) from None
        more = len(rows) > limit
        rows = rows[:limit]
        records = [rebuild(layouts[int(r["__datasetVersion"])], r) for r in rows]
        next_cursor = None
        if more and rows:
            last = rows[-1]
            next_cursor = self.cursors.encode(
                project, dataset, (last["__receivedAt"], last["__entryId"], last["__seq"]))
        return Page(records, next_cursor)

    def _layouts_of(self, con: duckdb.DuckDBPyConnection, project: str, dataset: str, *,
                    refresh: bool) -> dict[int, Layout]:
        """The dataset's column maps (cached); :class:`DatasetNotFound` when it has none."""
        key = (project, dataset)
        layouts = None if refresh else self._layouts.get(key)
        if layouts is None:
            # the bookkeeping schema exists from the first write on: asked until it does
            self._meta = self._meta or _has_meta(con)
            layouts = load_layouts(con, project, dataset) if self._meta else {}
            if not layouts:
                raise DatasetNotFound(f"{project}/{dataset}")
            self._layouts[key] = layouts
        return layouts

    def sql(self, query: str, params: Sequence[Any] = (), *,
            max_rows: int = 10_000) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Run one read-only statement for an operator (tables as ``<project>.<dataset>``).
        Returns the column names and at most ``max_rows`` rows.

        Only one SELECT (``WITH``, ``FROM``, ``SHOW``, ``DESCRIBE``, ``SUMMARIZE`` and
        ``PRAGMA`` parse as one) or EXPLAIN runs: anything else is a :class:`NotARead`
        before DuckDB sees it, which also keeps ``USE``/``DETACH``/``SET`` from changing the
        cached connection. The connection refuses writes, file access and settings changes
        by itself as well (see :func:`strictgate.lake.engine.connect`)."""
        with self._lock:
            con = self._connection()
            statements = con.extract_statements(query)
            if len(statements) != 1 or statements[0].type not in _READ_STATEMENTS:
                raise NotARead("only one SELECT (or EXPLAIN) statement may run")
            cur = con.execute(query, list(params))
            names = [d[0] for d in cur.description or ()]
            return names, cur.fetchmany(max_rows)


def _has_meta(con: duckdb.DuckDBPyConnection) -> bool:
    row = con.execute("SELECT count(*) FROM information_schema.tables WHERE table_catalog = ?"
                      " AND table_schema = ? AND table_name = 'columns'",
                      [ALIAS, META]).fetchone()
    return bool(row and row[0])
