"""Reading the lake: pages of a dataset's records in receipt order, and read-only SQL.

Receipt order is ``(__receivedAt, __entryId, __seq)``: the time the API received the entry,
then the entry, then the record's place in it; a total order, so a cursor (the last row's
key) resumes exactly after it even while new rows are committed. The cursor is opaque:
base64url of the key and the dataset it belongs to, signed with HMAC-SHA256, so a cursor we
did not issue (or one of another dataset) is refused.

Each row is rebuilt into the record as sent through its own version's column map (see
:mod:`strictgate.lake.tables` for the value rules), plus ``__traceId``, ``__datasetVersion``,
``__receivedAt`` (as the API stamped it: ``YYYY-MM-DDTHH:MM:SS.mmmZ``), ``__entryId`` and,
only for a record that came with one (an OrcaSheets job name), ``__eventType``, and only
for a record stored as an event (OneSight), ``__eventId``, ``__source`` and ``__eventTime``
(rendered like ``__receivedAt``).

Events (:meth:`LakeReader.events`): the rows with an ``__eventId`` of some or all of a
project's tables (each table is a dataset: the event type), in event order
``(__eventTime, __receivedAt, <dataset id>, __entryId, __seq)``, again a total order, so
its cursor resumes exactly after the last event even across tables. One query per table,
each ordered by that key and cut at the page's length, merged in Python: tables of
different columns are never UNIONed. The queries of one page run in one transaction, so
they see one snapshot of the lake. An event committed later with an event time before
the cursor's is not on the following pages: event order is the client's time, not the
order of arrival.

Quarantine (:meth:`LakeReader.quarantine`, :meth:`LakeReader.quarantine_stats`): a dataset's
quarantined records (see :mod:`strictgate.lake.tables`) in receipt order ``(received_at,
entry_id, seq)``, each as ``{"record": <the record as sent, parsed; its text when it is
not JSON this reader can parse>, "errors", "dataset_version", "trace_id", "received_at"
(rendered like ``__receivedAt``), "entry_id", "seq", "index"}`` plus ``"event"`` for a
record that came with one; the cursor is bound to the dataset and to the filters (error
codes, ``from``, ``to``). A lake without a quarantine table reads as an empty quarantine.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import hmac
import re
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import msgspec
import orjson

from strictgate.lake import engine
from strictgate.lake.engine import ALIAS, LakeConfig, quote_ident
from strictgate.lake.tables import META, QUARANTINE_TABLE, Layout, load_layouts, table_name
from strictgate.redact import redacted
from strictgate.timestamps import utc_z

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}\Z")
# RFC 3339 date-time (the offset is required; T/Z in either case)
_DATE_TIME_RE = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})\Z")
_KEY = ("__receivedAt", "__entryId", "__seq")
# an event's key: (__eventTime, __receivedAt, <dataset id>, __entryId, __seq)
EventKey = tuple[datetime, datetime, str, str, int]
_EVENT_ORDER = ("__eventTime", "__receivedAt", "__entryId", "__seq")
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


@dataclass(frozen=True)
class EventPage:
    """One page of events and the cursor of the next (None at the end). Each event is
    ``{"event_type", "event_id", "source", "payload", "received_at"}``."""

    events: list[dict[str, Any]]
    next_cursor: str | None


@dataclass(frozen=True)
class QuarantinePage:
    """One page of quarantined records and the cursor of the next (None at the end)."""

    records: list[dict[str, Any]]
    next_cursor: str | None


# a quarantined record's key: (received_at, entry_id, seq)
QuarantineKey = tuple[datetime, str, int]
_QUARANTINE_ORDER = "received_at, entry_id, seq"


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
    """Signs and checks cursors (HMAC-SHA256 over what the cursor is bound to and the row
    key): a records cursor is bound to its dataset, an events cursor to its project and
    event-type filter, and neither reads as the other."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("cursor secret must be at least 16 bytes")
        self._secret = secret

    def _mac(self, body: bytes) -> bytes:
        return hmac.new(self._secret, body, hashlib.sha256).digest()[:16]

    def _seal(self, items: list[Any]) -> str:
        body = orjson.dumps(items)
        return base64.urlsafe_b64encode(self._mac(body) + body).decode().rstrip("=")

    def _open(self, cursor: str) -> Any:
        """The items of a cursor we signed (ValueError otherwise)."""
        if len(cursor) > 2048:
            raise ValueError("too long")
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        mac, body = raw[:16], raw[16:]
        if not hmac.compare_digest(mac, self._mac(body)):
            raise ValueError("bad signature")
        return orjson.loads(body)

    def encode(self, project: str, dataset: str, key: tuple[datetime, str, int]) -> str:
        """The cursor after the row whose receipt key is ``key``."""
        return self._seal([project, dataset, _micros(key[0]), key[1], key[2]])

    def decode(self, project: str, dataset: str, cursor: str) -> tuple[datetime, str, int]:
        """The row key of a cursor we issued for this dataset; else :class:`ReadError`."""
        try:
            p, d, micros, entry_id, seq = self._open(cursor)
            if (p, d) != (project, dataset):
                raise ValueError("another dataset")
            return _moment(micros), str(entry_id), int(seq)
        except (ValueError, TypeError, orjson.JSONDecodeError):
            raise ReadError("cursor", "cursor is not one this server issued") from None

    def encode_event(self, project: str, event_types: Sequence[str] | None,
                     key: EventKey) -> str:
        """The events cursor after the event whose key is ``key``, for this project and
        event-type filter."""
        return self._seal(["events", project, _filter_digest(event_types), _micros(key[0]),
                           _micros(key[1]), key[2], key[3], key[4]])

    def decode_event(self, project: str, event_types: Sequence[str] | None,
                     cursor: str) -> EventKey:
        """The event key of an events cursor we issued for this project and this
        event-type filter (the same types in any order); else :class:`ReadError`."""
        try:
            tag, p, digest, at, received, dataset, entry_id, seq = self._open(cursor)
            if (tag, p, digest) != ("events", project, _filter_digest(event_types)):
                raise ValueError("another project or filter")
            return (_moment(at), _moment(received), str(dataset), str(entry_id), int(seq))
        except (ValueError, TypeError, OverflowError):
            raise ReadError("cursor", "cursor is not one this server issued for this"
                            " event_type") from None


    def encode_quarantine(self, project: str, dataset: str, filters: str,
                          key: QuarantineKey) -> str:
        """The quarantine cursor after the record whose key is ``key``, for this dataset
        and these filters (:func:`quarantine_filters`)."""
        return self._seal(["quarantine", project, dataset, filters, _micros(key[0]),
                           key[1], key[2]])

    def decode_quarantine(self, project: str, dataset: str, filters: str,
                          cursor: str) -> QuarantineKey:
        """The key of a quarantine cursor we issued for this dataset and these filters;
        else :class:`ReadError`."""
        try:
            tag, p, d, f, at, entry_id, seq = self._open(cursor)
            if (tag, p, d, f) != ("quarantine", project, dataset, filters):
                raise ValueError("another dataset or filter")
            return _moment(at), str(entry_id), int(seq)
        except (ValueError, TypeError, OverflowError):
            raise ReadError("cursor", "cursor is not one this server issued for this"
                            " quarantine and these filters") from None


def quarantine_filters(codes: Sequence[str] | None, since: datetime | None,
                       until: datetime | None) -> str:
    """A short digest of a quarantine read's filters (the same codes in any order are the
    same filter), which its cursors are bound to."""
    bound = [None if codes is None else sorted(set(codes)),
             None if since is None else _micros(since),
             None if until is None else _micros(until)]
    return hashlib.sha256(orjson.dumps(bound)).hexdigest()[:32]


def _filter_digest(event_types: Sequence[str] | None) -> str:
    """A short digest of an event-type filter (a cursor stays short however many types
    it names); None (every type) is ``*``."""
    if event_types is None:
        return "*"
    return hashlib.sha256(orjson.dumps(sorted(set(event_types)))).hexdigest()[:32]


def _moment(micros: object) -> datetime:
    if not isinstance(micros, int):
        raise TypeError("not microseconds")
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)


def _micros(value: datetime) -> int:
    delta = value.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def payload_of(layout: Layout, row: dict[str, Any]) -> dict[str, Any]:
    """The record as sent from one table row of ``layout``'s version, without any system
    key."""
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
    return record


def _parsed_record(text: str) -> Any:
    """A quarantined record as sent: its JSON value, or its text when no JSON answer can
    carry that value exactly (it holds an integer beyond 64 bits, which orjson would read
    as a float and cannot write, or a number beyond a double's range) or it is no JSON."""
    try:
        value = msgspec.json.decode(text)
        # the answer's encoder must take it as is (one check per record of a page)
        orjson.dumps(value)
    except (msgspec.DecodeError, TypeError):
        return text
    return value


def quarantined_record(row: dict[str, Any]) -> dict[str, Any]:
    """One row of the quarantine table as the quarantine read answers it (see the module
    docstring)."""
    out = {"record": _parsed_record(row["record"]), "errors": orjson.loads(row["errors"]),
           "dataset_version": row["dataset_version"], "trace_id": row["trace_id"],
           "received_at": render_received_at(row["received_at"]),
           "entry_id": row["entry_id"], "seq": row["seq"], "index": row["request_index"]}
    if row["event"] is not None:
        out["event"] = orjson.loads(row["event"])
    return out


def rebuild(layout: Layout, row: dict[str, Any]) -> dict[str, Any]:
    """The record as sent from one table row of ``layout``'s version, with its system
    fields (see the module docstring)."""
    record = payload_of(layout, row)
    record["__traceId"] = row["__traceId"]
    record["__datasetVersion"] = row["__datasetVersion"]
    record["__receivedAt"] = render_received_at(row["__receivedAt"])
    record["__entryId"] = row["__entryId"]
    # absent, not null, without one: records of the other dialects read as they always did
    # (a table older than the column has no such key at all)
    event_type = row.get("__eventType")
    if event_type is not None:
        record["__eventType"] = event_type
    event_id = row.get("__eventId")
    if event_id is not None:
        record["__eventId"] = event_id
        record["__source"] = row["__source"]
        at = row["__eventTime"]
        record["__eventTime"] = None if at is None else render_received_at(at)
    # only for a record replayed from the quarantine (every other record reads as before)
    replayed = row.get("__replayedAt")
    if replayed is not None:
        record["__replayedAt"] = render_received_at(replayed)
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
        self._quarantined = False

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

    def events(self, project: str, event_types: Sequence[str] | None, *,
               since: datetime | None = None, until: datetime | None = None,
               limit: int = DEFAULT_LIMIT, cursor: str | None = None) -> EventPage:
        """Up to ``limit`` events of ``project`` (rows with an ``__eventId``) of the datasets
        ``event_types`` (None: every table of the project), with ``since <= __eventTime <
        until`` (either optional), after ``cursor``, in event order (see the module
        docstring). Each is ``{"event_type": <dataset id>, "event_id", "source",
        "payload": <the record, no system key>, "received_at": <as __receivedAt>}``.

        A dataset without a table, a project without any and a lake not created yet read
        as no events. The cursor is bound to the project and to the filter (the same
        types, in any order): any other is a :class:`ReadError` (``cursor``), as is a bad
        ``limit`` (``limit``)."""
        limit = parse_limit(limit)
        after = self.cursors.decode_event(project, event_types, cursor) if cursor else None
        wanted = None if event_types is None else set(event_types)
        with self._lock:
            try:
                con = self._connection()
            except LakeEmpty:
                return EventPage([], None)
            try:
                # one snapshot for every table of the page (a commit between two of its
                # queries would otherwise be half seen)
                con.execute("BEGIN TRANSACTION")
                try:
                    found = self._event_rows(con, project, wanted, since, until, after,
                                             limit)
                finally:
                    con.execute("ROLLBACK")
            except duckdb.Error as exc:
                raise LakeUnavailable(redacted(str(exc))[:300]) from None
        chosen = list(heapq.merge(*found, key=lambda item: item[0]))[:limit + 1]
        more = len(chosen) > limit
        chosen = chosen[:limit]
        events = [{"event_type": key[2], "event_id": row["__eventId"],
                   "source": row["__source"], "payload": payload_of(layout, row),
                   "received_at": render_received_at(row["__receivedAt"])}
                  for key, layout, row in chosen]
        next_cursor = None
        if more and chosen:
            next_cursor = self.cursors.encode_event(project, event_types, chosen[-1][0])
        return EventPage(events, next_cursor)

    def _event_rows(self, con: duckdb.DuckDBPyConnection, project: str,
                    wanted: set[str] | None, since: datetime | None,
                    until: datetime | None, after: EventKey | None, limit: int
                    ) -> list[list[tuple[EventKey, Layout, dict[str, Any]]]]:
        """Per table holding events, up to ``limit + 1`` of its events after ``after``, in
        event order, each with its key and its version's layout."""
        out = []
        for dataset in _event_tables(con, project):
            if wanted is not None and dataset not in wanted:
                continue
            where = [f"{quote_ident('__eventId')} IS NOT NULL",
                     f"{quote_ident('__eventTime')} IS NOT NULL"]
            params: list[Any] = []
            at = quote_ident("__eventTime")
            if since is not None:
                where.append(f"{at} >= ?")
                params.append(since)
            if until is not None:
                where.append(f"{at} < ?")
                params.append(until)
            if after is not None:
                where.append(_after_clause(dataset, after))
                params.extend(_after_params(dataset, after))
                # the time alone too: the Parquet files' min/max statistics can skip files
                where.append(f"{at} >= ?")
                params.append(after[0])
            order = ", ".join(quote_ident(k) for k in _EVENT_ORDER)
            cur = con.execute(
                f"SELECT * FROM {table_name(project, dataset)} WHERE {' AND '.join(where)}"
                f" ORDER BY {order} LIMIT {limit + 1}", params)
            names = [d[0] for d in cur.description or ()]
            rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
            if not rows:
                continue
            try:
                layouts = self._layouts_of(con, project, dataset, refresh=False)
                if any(int(r["__datasetVersion"]) not in layouts for r in rows):
                    layouts = self._layouts_of(con, project, dataset, refresh=True)
            except DatasetNotFound:
                continue  # not a table of the writer's (no column map): nothing to rebuild
            out.append([((r["__eventTime"], r["__receivedAt"], dataset, r["__entryId"],
                          r["__seq"]), layouts[int(r["__datasetVersion"])], r)
                        for r in rows])
        return out

    def quarantine(self, project: str, dataset: str, *, limit: int = DEFAULT_LIMIT,
                   cursor: str | None = None, codes: Sequence[str] | None = None,
                   since: datetime | None = None,
                   until: datetime | None = None) -> QuarantinePage:
        """Up to ``limit`` quarantined records of the dataset with ``since <= received_at <
        until`` (either optional) having at least one of the error ``codes`` (None: any),
        after ``cursor``, in receipt order (see the module docstring). A cursor of another
        dataset or of other filters is a :class:`ReadError` (``cursor``)."""
        limit = parse_limit(limit)
        filters = quarantine_filters(codes, since, until)
        after = (self.cursors.decode_quarantine(project, dataset, filters, cursor)
                 if cursor else None)
        where = ["project = ?", "dataset = ?"]
        params: list[Any] = [project, dataset]
        if after is not None:
            where.append("(received_at, entry_id, seq) > (?, ?, ?)")
            params.extend(after)
        if since is not None:
            where.append("received_at >= ?")
            params.append(since)
        if until is not None:
            where.append("received_at < ?")
            params.append(until)
        if codes is not None:
            where.append("list_has_any(error_codes, ?::VARCHAR[])")
            params.append(list(codes))
        sql = (f"SELECT * FROM {QUARANTINE_TABLE} WHERE {' AND '.join(where)}"
               f" ORDER BY {_QUARANTINE_ORDER} LIMIT {limit + 1}")
        rows = self._quarantine_rows(sql, params)
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = None
        if more and rows:
            last = rows[-1]
            next_cursor = self.cursors.encode_quarantine(
                project, dataset, filters, (last["received_at"], last["entry_id"], last["seq"]))
        return QuarantinePage([quarantined_record(r) for r in rows], next_cursor)

    def quarantine_stats(self, project: str, dataset: str) -> tuple[int, dict[str, int]]:
        """How many records the dataset's quarantine holds and, per error code, how many of
        them have it (a record with two codes counts under both), both of one snapshot."""
        sql = (f"SELECT NULL AS code, count(*) AS n FROM {QUARANTINE_TABLE}"
               " WHERE project = ? AND dataset = ? UNION ALL"
               f" SELECT code, count(*) FROM (SELECT unnest(error_codes) AS code"
               f" FROM {QUARANTINE_TABLE} WHERE project = ? AND dataset = ?) GROUP BY code")
        rows = self._quarantine_rows(sql, [project, dataset, project, dataset])
        total = sum(int(r["n"]) for r in rows if r["code"] is None)
        by_code = {str(r["code"]): int(r["n"]) for r in rows if r["code"] is not None}
        return total, dict(sorted(by_code.items()))

    def _quarantine_rows(self, sql: str, params: list[Any]) -> list[dict[str, Any]]:
        """The rows of a query over the quarantine table; none when the lake or the table
        does not exist yet."""
        with self._lock:
            try:
                con = self._connection()
            except LakeEmpty:
                return []
            try:
                # exists from the first write of this release on: asked until it does
                self._quarantined = self._quarantined or _has_table(con, "quarantine")
                if not self._quarantined:
                    return []
                cur = con.execute(sql, params)
                names = [d[0] for d in cur.description or ()]
                return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
            except duckdb.Error as exc:
                raise LakeUnavailable(redacted(str(exc))[:300]) from None

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


def _event_tables(con: duckdb.DuckDBPyConnection, project: str) -> Iterator[str]:
    """The project's tables that have the event columns (an older table that no writer of
    this release has met has none, so no events), sorted."""
    rows = con.execute(
        "SELECT table_name FROM information_schema.columns WHERE table_catalog = ?"
        " AND table_schema = ? AND column_name = '__eventId' ORDER BY table_name",
        [ALIAS, project]).fetchall()
    return (str(r[0]) for r in rows)


def _after_clause(dataset: str, after: EventKey) -> str:
    """Rows of ``dataset`` whose event key is past ``after``: the dataset id is the same
    for the whole table, so it only decides how the times compare."""
    head = f"({quote_ident('__eventTime')}, {quote_ident('__receivedAt')})"
    if dataset == after[2]:
        return f"({', '.join(quote_ident(k) for k in _EVENT_ORDER)}) > (?, ?, ?, ?)"
    return f"{head} {'>=' if dataset > after[2] else '>'} (?, ?)"


def _after_params(dataset: str, after: EventKey) -> list[Any]:
    """The parameters of :func:`_after_clause`."""
    if dataset == after[2]:
        return [after[0], after[1], after[3], after[4]]
    return [after[0], after[1]]


def _has_meta(con: duckdb.DuckDBPyConnection) -> bool:
    return _has_table(con, "columns")


def _has_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    """Whether the bookkeeping schema holds table ``name`` yet."""
    row = con.execute("SELECT count(*) FROM information_schema.tables WHERE table_catalog = ?"
                      " AND table_schema = ? AND table_name = ?",
                      [ALIAS, META, name]).fetchone()
    return bool(row and row[0])
