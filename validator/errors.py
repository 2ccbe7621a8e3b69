"""The validator's error types: definition problems, body problems, field and record errors.

Codes are stable snake_case strings (clients and metrics key on them); messages follow the
seed's grammar ("Invalid number field: amount") and never quote more than
:data:`MAX_QUOTED` characters of client input.
"""

from __future__ import annotations

from typing import NamedTuple

# Longest piece of client input (a field name, a value) a message quotes.
MAX_QUOTED = 200

# Field error codes, one per rule. Kept in one place so tests and docs can list them.
INVALID_TIMESTAMP = "invalid_timestamp"
INVALID_CONTEXT = "invalid_context"
EXTRA_FIELD = "extra_field"
MISSING_FIELD = "missing_field"
DUPLICATE_FIELD = "duplicate_field"
OUT_OF_RANGE = "out_of_range"
NOT_MULTIPLE = "not_multiple_of"
TOO_SHORT = "too_short"
TOO_LONG = "too_long"
PATTERN_MISMATCH = "pattern_mismatch"
NOT_IN_ENUM = "not_in_enum"
NOT_CONST = "not_const"
INVALID_FORMAT = "invalid_format"
NOT_UNIQUE = "not_unique"
TOO_DEEP = "too_deep"
NUMBER_NOT_FINITE = "number_not_finite"
INTEGER_TOO_LARGE = "integer_too_large"
STRING_TOO_LONG = "string_too_long"
INVALID_RECORD = "invalid_record"
# A value of none of the types a type list names (one type: invalid_<type>).
INVALID_TYPE = "invalid_type"


def type_code(kind: str) -> str:
    """``invalid_<kind>`` for a type word (string, number, integer, boolean, timestamp, ...)."""
    return f"invalid_{kind}"


def type_words(kinds: list[str]) -> str:
    """The type words of a type list for a message: ``string``, ``string or number``,
    ``string, number or boolean``."""
    return kinds[0] if len(kinds) == 1 else f"{', '.join(kinds[:-1])} or {kinds[-1]}"


def clip(text: str, limit: int = MAX_QUOTED) -> str:
    """``text`` cut to ``limit`` characters, the cut marked with an ellipsis."""
    return text if len(text) <= limit else text[:limit] + "…"


class FieldError(NamedTuple):
    """One problem of one record: a stable ``code``, the ``field`` path (``a.b[2].c``) and
    the human ``message``."""

    code: str
    field: str
    message: str


class RecordError(NamedTuple):
    """A :class:`FieldError` of the record at ``index`` in a batch."""

    index: int  # type: ignore[assignment]  # shadows tuple.index on purpose: the API name
    code: str
    field: str
    message: str


class DefinitionError(Exception):
    """A dataset definition that does not compile.

    ``problems`` lists every problem as ``(JSON Pointer into the definition, message)``.
    """

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        lines = "; ".join(f"{ptr or '/'}: {msg}" for ptr, msg in problems)
        super().__init__(f"invalid dataset definition: {lines}")


class BodyError(Exception):
    """A request body that is not a record or a batch at all (bad JSON, wrong shape, limits).

    ``code`` is stable snake_case, ``message`` the seed's text where it has one, ``status``
    the HTTP status (400, or 413 for a batch over the record limit); ``detail`` says where.
    """

    def __init__(self, code: str, message: str, status: int = 400, detail: str = "") -> None:
        self.code = code
        self.message = message
        self.status = status
        self.detail = detail
        super().__init__(f"{message} ({detail})" if detail else message)


INVALID_JSON = "Invalid JSON body"


def invalid_json(code: str = "invalid_json", detail: str = "") -> BodyError:
    """The seed's "Invalid JSON body" with a precise ``code``."""
    return BodyError(code, INVALID_JSON, 400, detail)
