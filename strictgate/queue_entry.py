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

Every value but ``records`` is UTF-8 text.

The admission script stores the fields with ``XADD`` (:meth:`QueueEntry.to_args`); the
worker reads them with :meth:`QueueEntry.from_fields`, which refuses a malformed entry with
:class:`MalformedEntryError` (the worker then moves it to the dead-letter stream).
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from strictgate.timestamps import parse_utc

FIELD_NAMES = ("records", "trace_id", "dataset_version", "received_at", "project_id",
               "dataset_id", "user_id")
"""The stream entry's field names, in the order they are stored (every entry has them)."""

OPTIONAL_FIELD_NAMES = ("event_type",)
"""Fields stored after :data:`FIELD_NAMES` only when set."""

EVENT_TYPE_MAX_CHARS = 200
"""The longest ``event_type``, in characters."""

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

    def to_args(self) -> tuple[str | bytes | int, ...]:
        """Field, value pairs in one flat tuple, as ``XADD`` takes them (the admission
        script's trailing arguments). An int is sent as its decimal text. An
        ``event_type`` that :func:`event_type_problem` refuses raises ValueError: it never
        reaches a queue."""
        # a flat tuple, not a dict: this runs once per admitted request. The event type is
        # checked here, not at construction, so an entry without one costs nothing more.
        if self.event_type is None:
            return ("records", self.records, "trace_id", self.trace_id,
                    "dataset_version", self.dataset_version, "received_at", self.received_at,
                    "project_id", self.project_id, "dataset_id", self.dataset_id,
                    "user_id", self.user_id)
        problem = event_type_problem(self.event_type)
        if problem is not None:
            raise ValueError(f"event_type {problem}")
        return ("records", self.records, "trace_id", self.trace_id,
                "dataset_version", self.dataset_version, "received_at", self.received_at,
                "project_id", self.project_id, "dataset_id", self.dataset_id,
                "user_id", self.user_id, "event_type", self.event_type)

    def to_fields(self) -> dict[str, bytes | str]:
        """The fields as ``XADD`` stores them (every value text or bytes)."""
        args = self.to_args()
        return {str(args[i]): _stored(args[i + 1]) for i in range(0, len(args), 2)}

    @classmethod
    def from_fields(cls, fields: Mapping[bytes, bytes]) -> QueueEntry:
        """The entry of a stream item's fields as redis-py returns them (bytes keys and
        values). Unknown extra fields are ignored; a missing or malformed one (an
        ``event_type`` is optional, but checked when present) raises
        :class:`MalformedEntryError`."""
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
        try:
            if not received_at.endswith("Z"):
                raise ValueError(received_at)
            parse_utc(received_at)
        except ValueError:
            raise MalformedEntryError(
                "received_at", f"not an RFC 3339 UTC time ending in Z: {received_at[:_SHOWN]!r}",
            ) from None
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
        return cls(
            records=records, trace_id=text[b"trace_id"], dataset_version=int(version),
            received_at=received_at, project_id=text[b"project_id"],
            dataset_id=text[b"dataset_id"], user_id=text[b"user_id"], event_type=event_type,
        )


def _stored(value: str | bytes | int) -> bytes | str:
    return str(value) if isinstance(value, int) else value
