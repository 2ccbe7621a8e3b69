"""Values read back as sent, through the real validator, writer, Parquet files and reader;
the documented rules of lake.tables for the edges (leap second, nanoseconds, offsets,
-0.0, 1e308, int64 bounds, non-ASCII, JSON-looking strings, absent vs null)."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from strictgate.lake.engine import LakeConfig
from strictgate.lake.reader import LakeReader
from strictgate.lake.tables import Layout, plan_layout, record_struct
from strictgate.lake.writer import LakeWriter
from tests.lake_support import lake_entry, payload
from validator.definition import normalize

DEFINITION = normalize({"fields": {
    "s": "string", "n": "number", "i": "integer", "b": "boolean", "t": "timestamp",
    "o": {"type": "object", "additionalProperties": True},
    "a": {"type": "array"},
    "u": {"type": ["string", "number"]},
    "opt": {"type": ["string", "null"], "required": False},
    "optn": {"type": "number", "required": False},
}})

RECORDS = [
    # leap second, nanoseconds with an offset, -0.0, int64 min, non-ASCII, explicit null
    b'{"timestamp":"2016-12-31T23:59:60Z","context":{"ip":"1.2.3.4"},"s":"\\u00e9\xe2\x82\xac'
    b'\xf0\x9f\x98\x80 \\"q\\"","n":-0.0,"i":-9223372036854775808,"b":true,'
    b'"t":"2026-01-01T00:00:00.123456789+05:30","o":{},"a":[],"u":"x","opt":null}',
    # lowercase t/z, 1e308, int64 max, a string that is JSON, nested -0.0 and int64 max
    b'{"timestamp":"2026-06-10t10:00:00z","context":{ "a" : [1, 2.50, "\\u00e9"] },'
    b'"s":"{\\"a\\":1}","n":1e308,"i":9223372036854775807,"b":false,'
    b'"t":"2026-06-10T10:00:00-08:00","o":{"k":1.0,"big":9223372036854775807,"neg":-0.0},'
    b'"a":[1,"x",null,{"z":[]}],"u":"{\\"x\\":1}","optn":5e-324}',
    # an underflowing number, integers written as 1.0 and 1e2, an integer in a number field
    b'{"timestamp":"2026-06-10T10:00:00.5Z","context":{},"s":"","n":1.5e-400,"i":1.0,'
    b'"b":true,"t":"2026-06-10T10:00:00Z","o":{"n":null},"a":[[]],"u":3.5,"opt":"v","optn":5}',
    b'{"timestamp":"2026-06-10T10:00:00Z","context":{},"s":"x","n":5,"i":1e2,"b":true,'
    b'"t":"2017-01-01T00:59:60.999999999+01:00","o":{},"a":[],"u":"3.5"}',
]


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> tuple[LakeConfig, list[dict[str, Any]]]:
    """The RECORDS written once; the records read back."""
    config = LakeConfig.local(tmp_path_factory.mktemp("values"))
    writer = LakeWriter(config, lambda p, d, v: DEFINITION)
    entry = lake_entry("u/1-0", "p1", "edges", 1, "trace-1", "2026-06-10T11:00:00.123Z",
                       payload(DEFINITION, RECORDS))
    assert writer.write([entry]).records == len(RECORDS)
    writer.close()
    reader = LakeReader(config, b"k" * 32)
    page = reader.page("p1", "edges", limit=10)
    reader.close()
    return config, page.records


def test_every_value_reads_back_equal(lake: tuple[LakeConfig, list[dict[str, Any]]]) -> None:
    _, records = lake
    assert len(records) == len(RECORDS)
    for sent_text, got in zip(RECORDS, records, strict=True):
        sent = orjson.loads(sent_text)
        fields = {k: v for k, v in got.items() if not k.startswith("__")}
        assert fields == sent
        assert got["__traceId"] == "trace-1" and got["__datasetVersion"] == 1
        assert got["__receivedAt"] == "2026-06-10T11:00:00.123Z"


def test_timestamps_come_back_as_their_exact_text(
        lake: tuple[LakeConfig, list[dict[str, Any]]]) -> None:
    _, records = lake
    assert records[0]["timestamp"] == "2016-12-31T23:59:60Z"
    assert records[0]["t"] == "2026-01-01T00:00:00.123456789+05:30"
    assert records[1]["timestamp"] == "2026-06-10t10:00:00z"


def test_numbers_follow_the_written_rules(lake: tuple[LakeConfig, list[dict[str, Any]]]) -> None:
    _, r = lake
    assert math.copysign(1.0, r[0]["n"]) == -1.0 and r[0]["n"] == 0.0
    assert r[1]["n"] == 1e308 and r[1]["optn"] == 5e-324
    assert r[2]["n"] == 0.0  # 1.5e-400 is below the smallest double
    assert r[3]["n"] == 5.0 and isinstance(r[3]["n"], float)  # a number field is a double
    assert (r[0]["i"], r[1]["i"]) == (-(2**63), 2**63 - 1)
    assert (r[2]["i"], r[3]["i"]) == (1, 100) and isinstance(r[2]["i"], int)
    assert math.copysign(1.0, r[1]["o"]["neg"]) == -1.0
    assert r[1]["o"]["big"] == 2**63 - 1


def test_strings_stay_strings(lake: tuple[LakeConfig, list[dict[str, Any]]]) -> None:
    _, r = lake
    assert r[0]["s"] == 'é€😀 "q"'
    assert r[1]["s"] == '{"a":1}' and r[1]["u"] == '{"x":1}'
    assert r[2]["u"] == 3.5 and r[3]["u"] == "3.5"


def test_absent_and_null_differ(lake: tuple[LakeConfig, list[dict[str, Any]]]) -> None:
    _, r = lake
    assert "opt" in r[0] and r[0]["opt"] is None and "optn" not in r[0]
    assert "opt" not in r[1] and r[1]["optn"] == 5e-324
    assert "opt" not in r[3] and "optn" not in r[3]


def test_typed_columns_for_queries(lake: tuple[LakeConfig, list[dict[str, Any]]]) -> None:
    config, _ = lake
    reader = LakeReader(config, b"k" * 32)
    _, rows = reader.sql('SELECT "timestamp", t, "timestamp__text" FROM p1.edges'
                         ' ORDER BY "__seq"')
    reader.close()
    utc = UTC
    # leap second -> the next second; nanoseconds truncated; offsets -> UTC; t/z read
    assert rows[0][0] == datetime(2017, 1, 1, tzinfo=utc)
    assert rows[0][1] == datetime(2025, 12, 31, 18, 30, 0, 123456, tzinfo=utc)
    assert rows[1][0] == datetime(2026, 6, 10, 10, tzinfo=utc)
    assert rows[1][1] == datetime(2026, 6, 10, 18, tzinfo=utc)
    assert rows[3][1] == datetime(2017, 1, 1, 0, 0, 0, 999999, tzinfo=utc)
    assert rows[0][2] == "2016-12-31T23:59:60Z"


# The same fields, all required, plus a name that needs quoting: read typed (STRUCT) by the
# JSON reader instead of as JSON then transformed (lake.tables.insert_sql); same values.
REQUIRED = normalize({"fields": {
    **{k: v for k, v in DEFINITION["fields"].items() if k not in ("opt", "optn")},
    "it's \"q\".x": "string"}})
REQUIRED_RECORDS = [
    orjson.dumps({**{k: v for k, v in orjson.loads(r).items() if k not in ("opt", "optn")},
                  "it's \"q\".x": f"q{n}"}) for n, r in enumerate(RECORDS)]
SAME_COLUMNS = ('"timestamp", "timestamp__text", context, s, n, i, b, t, t__text, o, a, u,'
                ' "__receivedAt", "__seq", "__traceId"')


def test_all_required_fields_are_read_typed_with_the_same_values(
        lake: tuple[LakeConfig, list[dict[str, Any]]],
        tmp_path_factory: pytest.TempPathFactory) -> None:
    config = LakeConfig.local(tmp_path_factory.mktemp("typed"))
    writer = LakeWriter(config, lambda p, d, v: REQUIRED)
    assert record_struct(writer.layout("p1", "edges", 1)) is not None
    entry = lake_entry("u/1-0", "p1", "edges", 1, "trace-1", "2026-06-10T11:00:00.123Z",
                       payload(REQUIRED, REQUIRED_RECORDS))
    assert writer.write([entry]).records == len(RECORDS)
    writer.close()
    reader = LakeReader(config, b"k" * 32)
    records = reader.page("p1", "edges", limit=10).records
    _, typed_rows = reader.sql(f'SELECT {SAME_COLUMNS} FROM p1.edges ORDER BY "__seq"')
    reader.close()
    for n, (sent_text, got) in enumerate(zip(REQUIRED_RECORDS, records, strict=True)):
        assert {k: v for k, v in got.items() if not k.startswith("__")} \
            == orjson.loads(sent_text)
        assert got["it's \"q\".x"] == f"q{n}"
    reader = LakeReader(lake[0], b"k" * 32)
    _, json_rows = reader.sql(f'SELECT {SAME_COLUMNS} FROM p1.edges ORDER BY "__seq"')
    reader.close()
    assert repr(typed_rows) == repr(json_rows)  # repr: -0.0 and 0.0 compare equal


def test_records_are_read_as_json_when_a_struct_cannot_hold_them() -> None:
    def layout_of(fields: dict[str, Any]) -> Layout:
        return plan_layout("p", "d", 1, normalize({"fields": fields}), {}, [])[0]

    assert record_struct(layout_of({"a": "string", "b": "number"})) is not None
    # absent and null would read alike; STRUCT names are case-insensitive
    assert record_struct(layout_of({"a": {"type": "string", "required": False}})) is None
    assert record_struct(layout_of({"a": "string", "A": "string"})) is None
