"""The queue entry: what ingest puts into a dataset's Redis stream and the worker reads back.

It is the contract between the API processes and the workers, which may run different
releases during an upgrade: the field names and their bytes are fixed. Each entry is one
admitted request:

- ``records``: the validated records, one JSON array (the bytes the validator passed on);
- ``trace_id``: the request id (``X-Request-Id``), the records' ``__traceId``;
- ``dataset_version``: the definition version they were validated against (decimal text; 0
  is a built-in definition);
- ``received_at``: when the API received them (:func:`strictgate.timestamps.utc_z`:
  milliseconds, ``Z``);
- ``project_id``, ``dataset_id``: where they go;
- ``user_id``: the owner of the API key, whose quota counted them;
- ``event_type`` (optional): the job name an OrcaSheets request carries, stored with each of
  its records (``__eventType``). Stored only when set, so entries without one (older
  releases, the other dialects) are byte for byte what they were.
- ``events`` (optional): for an API with per-event ids (OneSight), one JSON array holding
  one object per record, in record order: ``{"id": <text>, "source": <text or null>,
  "time": <RFC 3339 date-time>}`` (:class:`QueuedEvent`), stored with each record
  (``__eventId``, ``__source``, ``__eventTime``). Stored only when set, like ``event_type``.
  Its length must equal the records': the worker checks it where it counts the records
  (:func:`check_event_count`) and dead-letters an entry where they differ, so an event's
  values never land on another record.
- ``quarantine`` (optional): under a dataset's ``on_invalid: quarantine`` policy, the
  request's invalid records, one JSON array holding one object per record, in request order:
  ``{"index": <place in the request>, "record": <the record's JSON text as sent>, "errors":
  [{"code", "field", "message"}, ...], "event"?: {"id", "source", "time"}}``
  (:class:`QuarantineItem`). The worker writes them to the lake's quarantine table in the
  same commit as the entry's records; ``records`` may then be ``[]``.
- ``replayed_at`` (optional): for records replayed from the quarantine, when the replay ran
  (:func:`strictgate.timestamps.utc_z`), stored with each record (``__replayedAt``).
- ``replay_of`` (optional): for replayed records, one JSON array holding one
  ``[entry_id, seq]`` pair per record, in record order: the quarantine rows they come from,
  which the worker deletes in the commit that stores them. Its length must equal the
  records' (:func:`check_replay_count`, where the worker counts them).
- ``merge_key`` (optional): the name of the one column a merge request (Definite ``mode:
  "merge"``) is keyed on. The worker merges such an entry's records into the table: each
  replaces the stored rows with the same key admitted before it and is not stored when one
  admitted after it is already there (:mod:`strictgate.lake.writer`). Checked like
  ``event_type`` (:func:`merge_key_problem`).

The optional fields are stored only when set, so entries without them are byte for byte
what older releases wrote. Every value but ``records``, ``events``, ``quarantine`` and
``replay_of`` is UTF-8 text.

The admission script stores the fields with ``XADD`` (:meth:`QueueEntry.to_args`); the
worker reads them with :meth:`QueueEntry.from_fields`, which refuses a malformed entry with
:class:`MalformedEntryError` (the worker then moves it to the dead-letter stream).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

import msgspec

from strictgate.errors import clip
from strictgate.timestamps import parse_utc
from validator.formats import is_date_time

FIELD_NAMES = ("records", "trace_id", "dataset_version", "received_at", "project_id",
               "dataset_id", "user_id")
"""The stream entry's field names, in the order they are stored (every entry has them)."""

OPTIONAL_FIELD_NAMES = ("event_type", "events", "quarantine", "replayed_at", "replay_of",
                        "merge_key")
"""Fields stored after :data:`FIELD_NAMES` only when set."""

EVENT_TYPE_MAX_CHARS = 200
"""The longest ``event_type``, in characters."""
MERGE_KEY_MAX_CHARS = 256
"""The longest ``merge_key`` (a column name), in characters."""

_TEXT_FIELDS = tuple(name.encode() for name in FIELD_NAMES if name != "records")
# a malformed value is quoted in the error up to this many characters
_SHOWN = 40


class MalformedEntryError(ValueError):
    """A stream entry that is not a queue entry: a field missing, not UTF-8, or not of its
    type. ``field`` names the first such field."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"queue entry field {field}: {problem}")
        self.field = field


def event_type_problem(value: object) -> str | None:
    """What is wrong with ``value`` as an ``event_type``, or None when it is one: text of
    1 to :data:`EVENT_TYPE_MAX_CHARS` characters, every one visible or a plain space
    (``str.isprintable``: no control, format, line/paragraph separator or unassigned
    character), not only spaces. The message is bounded and never quotes the value."""
    if not isinstance(value, str):
        return "must be a string"
    if len(value) > EVENT_TYPE_MAX_CHARS:
        return f"must be at most {EVENT_TYPE_MAX_CHARS} characters"
    if not value.strip():
        return "must not be empty"
    if not value.isprintable():
        return "must be visible text (no control or invisible characters)"
    return None


def merge_key_problem(value: object) -> str | None:
    """What is wrong with ``value`` as a ``merge_key``, or None when it is one: text of 1 to
    :data:`MERGE_KEY_MAX_CHARS` characters, every one visible or a plain space, not only
    spaces. The message is bounded and never quotes the value."""
    if not isinstance(value, str):
        return "must be a string"
    if len(value) > MERGE_KEY_MAX_CHARS:
        return f"must be at most {MERGE_KEY_MAX_CHARS} characters"
    if not value.strip():
        return "must not be empty"
    if not value.isprintable():
        return "must be visible text (no control or invisible characters)"
    return None


class QueuedEvent(msgspec.Struct, frozen=True):
    """What one record of an entry with ``events`` carries beside it."""

    id: str
    """The event's id (the client's ``event_id`` or one the server made)."""
    source: str | None
    """Where the event came from, as the client named it (None: not named)."""
    time: str
    """When the event happened: RFC 3339 date-time text, as it will be read back."""


_EVENTS = msgspec.json.Decoder(list[QueuedEvent])
_ENCODER = msgspec.json.Encoder()
# items sliced, not built: counting an array costs one scan
_RAW_ITEMS = msgspec.json.Decoder(list[msgspec.Raw])


def encode_events(events: Sequence[QueuedEvent]) -> bytes:
    """The ``events`` value of ``events`` (one per record, in record order)."""
    return _ENCODER.encode(events)


def event_time_problem(text: str) -> str | None:
    """What is wrong with ``text`` as an event's ``time``, or None when it is an RFC 3339
    date-time (``T``/``Z`` in either case, an offset required, a leap second at 23:59:60
    UTC) whose instant lies within years 1 to 9999 in UTC (what the lake and Python can
    both hold). Never quotes the text."""
    if not is_date_time(text):
        return "time must be an RFC 3339 date-time"
    try:
        _instant(text)
    except (ValueError, OverflowError):
        return "time must lie within years 1 to 9999 (UTC)"
    return None


def _instant(text: str) -> datetime:
    """The UTC instant of a valid RFC 3339 date-time, a leap second read as the instant
    right after 23:59:59 (as the lake stores it)."""
    fixed = text.upper().replace("Z", "+00:00")
    if fixed[17:19] == "60":
        moment = datetime.fromisoformat(fixed[:17] + "59" + fixed[19:])
        return moment.astimezone(UTC) + timedelta(seconds=1)
    return datetime.fromisoformat(fixed).astimezone(UTC)


def decode_events(value: bytes) -> list[QueuedEvent]:
    """The events of an ``events`` value; :class:`MalformedEntryError` (field ``events``)
    unless it is a JSON array of ``{"id", "source", "time"}`` objects (see
    :class:`QueuedEvent`; other keys are ignored) with valid times
    (:func:`event_time_problem`)."""
    try:
        events = _EVENTS.decode(value)
    except msgspec.DecodeError as exc:
        # msgspec says where, never what: e.g. "Expected `str`, got `int` - at `$[0].id`"
        raise MalformedEntryError("events", clip(str(exc), 120)) from None
    times = [event.time for event in events]
    if not _usual_times(times):
        for i, text in enumerate(times):
            problem = event_time_problem(text)
            if problem is not None:
                raise MalformedEntryError("events", f"{problem} (at $[{i}].time)")
    return events


# The usual times, all at once: one regex call over the joined texts (uppercase T/Z, no
# leap second) instead of one precise check per time (measured: 0.5 ms instead of 2.4 ms
# for 1,000 events). Anything else takes the precise check.
_USUAL_TIME = (r"[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])T(?:[01][0-9]|2[0-3])"
               r":[0-5][0-9]:[0-5][0-9](?:\.[0-9]+)?(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])")
_USUAL_TIMES_RE = re.compile(f"{_USUAL_TIME}(?:\n{_USUAL_TIME})*")


def _usual_times(times: list[str]) -> bool:
    """Whether every text of ``times`` is a valid RFC 3339 date-time of the usual kind; False
    sends the caller to the precise check (which may still accept them all)."""
    if not times or _USUAL_TIMES_RE.fullmatch("\n".join(times)) is None:
        return not times
    try:
        for text in times:
            # the shape is right; the day of the month is not (Feb 30), and the first and
            # last years may leave Python's range once in UTC
            if text[:4] in ("0000", "0001", "9999"):
                return False
            datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


class QuarantineError(msgspec.Struct, frozen=True):
    """One error of a quarantined record, as the validator reported it."""

    code: str
    field: str | None
    message: str


class QuarantineItem(msgspec.Struct, frozen=True):
    """One invalid record of an entry's ``quarantine`` field."""

    index: int
    """The record's place in the request."""
    record: str
    """The record's JSON text, exactly as sent."""
    errors: list[QuarantineError]
    event: QueuedEvent | None = None
    """Its event (id, source, time) for an API with per-event ids; None otherwise."""


_QUARANTINE = msgspec.json.Decoder(list[QuarantineItem])
_REPLAY_OF = msgspec.json.Decoder(list[tuple[str, int]])


def decode_quarantine(value: bytes) -> list[QuarantineItem]:
    """The items of a ``quarantine`` value; :class:`MalformedEntryError` (field
    ``quarantine``) unless it is a JSON array of :class:`QuarantineItem` objects (other
    keys are ignored) whose events, if any, have valid times."""
    try:
        items = _QUARANTINE.decode(value)
    except msgspec.DecodeError as exc:
        raise MalformedEntryError("quarantine", clip(str(exc), 120)) from None
    for i, item in enumerate(items):
        if item.event is not None:
            problem = event_time_problem(item.event.time)
            if problem is not None:
                raise MalformedEntryError("quarantine", f"{problem} (at $[{i}].event.time)")
    return items


def decode_replay_of(value: bytes) -> list[tuple[str, int]]:
    """The quarantine keys of a ``replay_of`` value; :class:`MalformedEntryError` (field
    ``replay_of``) unless it is a JSON array of ``[entry_id, seq]`` pairs (text, integer)."""
    try:
        return _REPLAY_OF.decode(value)
    except msgspec.DecodeError as exc:
        raise MalformedEntryError("replay_of", clip(str(exc), 120)) from None


def utc_z_problem(text: str) -> str | None:
    """What is wrong with ``text`` as a ``received_at`` or ``replayed_at``, or None when it
    is an RFC 3339 UTC time ending in ``Z`` (as :func:`strictgate.timestamps.utc_z`
    writes). Quotes at most 40 characters of it."""
    try:
        if not text.endswith("Z"):
            raise ValueError(text)
        parse_utc(text)
    except ValueError:
        return f"not an RFC 3339 UTC time ending in Z: {text[:_SHOWN]!r}"
    return None


def check_replay_count(replay_of: bytes | Sequence[tuple[str, int]], records: int) -> None:
    """Raise :class:`MalformedEntryError` (field ``replay_of``) unless it names one
    quarantine row per record: a replayed record never deletes another's row."""
    try:
        count = len(_RAW_ITEMS.decode(replay_of) if isinstance(replay_of, bytes)
                    else replay_of)
    except msgspec.DecodeError:
        raise MalformedEntryError("replay_of", "not a JSON array") from None
    if count != records:
        raise MalformedEntryError("replay_of", f"names {count} rows for {records} records")


def check_event_count(events: bytes | Sequence[QueuedEvent], records: int) -> None:
    """Raise :class:`MalformedEntryError` (field ``events``) unless there is one event per
    record: an entry where they differ is a poison entry, never stored misaligned.
    ``events`` as bytes is only counted (:meth:`QueueEntry.from_fields` checked its items)."""
    try:
        count = len(_RAW_ITEMS.decode(events) if isinstance(events, bytes) else events)
    except msgspec.DecodeError:
        raise MalformedEntryError("events", "not a JSON array") from None
    if count != records:
        raise MalformedEntryError("events", f"holds {count} events for {records} records")


class QueueEntry(msgspec.Struct, frozen=True):
    """One admitted request as queued (see the module docstring for the fields)."""

    records: bytes
    trace_id: str
    dataset_version: int
    received_at: str
    project_id: str
    dataset_id: str
    user_id: str
    event_type: str | None = None
    events: bytes | None = None
    quarantine: bytes | None = None
    replayed_at: str | None = None
    replay_of: bytes | None = None
    merge_key: str | None = None

    def to_args(self) -> tuple[str | bytes | int, ...]:
        """Field, value pairs in one flat tuple, as ``XADD`` takes them (the admission
        script's trailing arguments). An int is sent as its decimal text. An optional
        field its check refuses (:func:`event_type_problem`, :func:`decode_events`,
        :func:`decode_quarantine`, :func:`utc_z_problem`, :func:`decode_replay_of`,
        :func:`merge_key_problem`)
        raises ValueError: it never reaches a queue."""
        # a flat tuple, not a dict: this runs once per admitted request. The optional
        # fields are checked here, not at construction, so an entry without them costs
        # nothing more.
        args: tuple[str | bytes | int, ...] = (
            "records", self.records, "trace_id", self.trace_id,
            "dataset_version", self.dataset_version, "received_at", self.received_at,
            "project_id", self.project_id, "dataset_id", self.dataset_id,
            "user_id", self.user_id)
        if self.event_type is not None:
            problem = event_type_problem(self.event_type)
            if problem is not None:
                raise ValueError(f"event_type {problem}")
            args += ("event_type", self.event_type)
        if self.events is not None:
            decode_events(self.events)
            args += ("events", self.events)
        if self.quarantine is not None:
            decode_quarantine(self.quarantine)
            args += ("quarantine", self.quarantine)
        if self.replayed_at is not None:
            problem = utc_z_problem(self.replayed_at)
            if problem is not None:
                raise ValueError(f"replayed_at {problem}")
            args += ("replayed_at", self.replayed_at)
        if self.replay_of is not None:
            decode_replay_of(self.replay_of)
            args += ("replay_of", self.replay_of)
        if self.merge_key is not None:
            problem = merge_key_problem(self.merge_key)
            if problem is not None:
                raise ValueError(f"merge_key {problem}")
            args += ("merge_key", self.merge_key)
        return args

    def to_fields(self) -> dict[str, bytes | str]:
        """The fields as ``XADD`` stores them (every value text or bytes)."""
        args = self.to_args()
        return {str(args[i]): _stored(args[i + 1]) for i in range(0, len(args), 2)}

    @classmethod
    def from_fields(cls, fields: Mapping[bytes, bytes]) -> QueueEntry:
        """The entry of a stream item's fields as redis-py returns them (bytes keys and
        values). Unknown extra fields are ignored; a missing or malformed one (the
        optional fields are checked when present, as :meth:`to_args` checks them) raises
        :class:`MalformedEntryError`. Whether ``events`` and ``replay_of`` have one item
        per record is the worker's to check (:func:`check_event_count`,
        :func:`check_replay_count`), where it counts the records anyway."""
        text: dict[bytes, str] = {}
        for name in _TEXT_FIELDS:
            value = fields.get(name)
            if not isinstance(value, bytes):
                raise MalformedEntryError(name.decode(), "missing")
            try:
                text[name] = value.decode()
            except UnicodeDecodeError:
                raise MalformedEntryError(name.decode(), "not UTF-8") from None
        records = fields.get(b"records")
        if not isinstance(records, bytes):
            raise MalformedEntryError("records", "missing")
        version = text[b"dataset_version"]
        if not (version.isascii() and version.isdigit() and len(version) <= 18):
            raise MalformedEntryError("dataset_version",
                                      f"not a version number: {version[:_SHOWN]!r}")
        received_at = text[b"received_at"]
        problem = utc_z_problem(received_at)
        if problem is not None:
            raise MalformedEntryError("received_at", problem)
        event_type = None
        raw_event_type = fields.get(b"event_type")
        if raw_event_type is not None:
            try:
                event_type = raw_event_type.decode()
            except UnicodeDecodeError:
                raise MalformedEntryError("event_type", "not UTF-8") from None
            problem = event_type_problem(event_type)
            if problem is not None:
                raise MalformedEntryError("event_type", problem)
        events = fields.get(b"events")
        if events is not None:
            decode_events(events)
        quarantine = fields.get(b"quarantine")
        if quarantine is not None:
            decode_quarantine(quarantine)
        replayed_at = None
        raw_replayed_at = fields.get(b"replayed_at")
        if raw_replayed_at is not None:
            try:
                replayed_at = raw_replayed_at.decode()
            except UnicodeDecodeError:
                raise MalformedEntryError("replayed_at", "not UTF-8") from None
            problem = utc_z_problem(replayed_at)
            if problem is not None:
                raise MalformedEntryError("replayed_at", problem)
        replay_of = fields.get(b"replay_of")
        if replay_of is not None:
            decode_replay_of(replay_of)
        merge_key = None
        raw_merge_key = fields.get(b"merge_key")
        if raw_merge_key is not None:
            try:
                merge_key = raw_merge_key.decode()
            except UnicodeDecodeError:
                raise MalformedEntryError("merge_key", "not UTF-8") from None
            problem = merge_key_problem(merge_key)
            if problem is not None:
                raise MalformedEntryError("merge_key", problem)
        return cls(
            records=records, trace_id=text[b"trace_id"], dataset_version=int(version),
            received_at=received_at, project_id=text[b"project_id"],
            dataset_id=text[b"dataset_id"], user_id=text[b"user_id"], event_type=event_type,
            events=events, quarantine=quarantine, replayed_at=replayed_at,
            replay_of=replay_of, merge_key=merge_key,
        )


def _stored(value: str | bytes | int) -> bytes | str:
    return str(value) if isinstance(value, int) else value
