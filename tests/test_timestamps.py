"""The one time formatter and parser: the texts it writes are the ones the service wrote
before it (so stored values keep sorting and comparing), and it reads both stamps."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone

import pytest

from strictgate.timestamps import parse_utc, utc_z

MOMENT = datetime(2026, 7, 1, 0, 0, 0, 123_456, UTC)


def test_utc_z_precisions() -> None:
    assert utc_z(MOMENT) == "2026-07-01T00:00:00.123Z"
    assert utc_z(MOMENT, "seconds") == "2026-07-01T00:00:00Z"
    assert utc_z(MOMENT, "microseconds") == "2026-07-01T00:00:00.123456Z"
    assert utc_z(MOMENT.replace(microsecond=0)) == "2026-07-01T00:00:00.000Z"


def test_utc_z_converts_offsets_and_takes_naive_as_utc() -> None:
    bucharest = MOMENT.astimezone(timezone(timedelta(hours=3)))
    assert utc_z(bucharest) == "2026-07-01T00:00:00.123Z"
    assert utc_z(MOMENT.replace(tzinfo=None)) == "2026-07-01T00:00:00.123Z"
    assert utc_z(MOMENT.replace(tzinfo=timezone(timedelta(0)))) == "2026-07-01T00:00:00.123Z"


def test_utc_z_writes_what_each_former_formatter_wrote() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        moment = datetime(2000, 1, 1, tzinfo=UTC) + timedelta(
            microseconds=rng.randrange(60 * 365 * 86_400 * 10**6))
        # the ingest handler's received_at, the quota headers, the registry's created_at
        assert utc_z(moment) == moment.isoformat(timespec="milliseconds").replace(
            "+00:00", "Z")
        assert utc_z(moment, "seconds") == moment.strftime("%Y-%m-%dT%H:%M:%SZ")
        assert utc_z(moment) == (moment.strftime("%Y-%m-%dT%H:%M:%S.")
                                 + f"{moment.microsecond // 1000:03d}Z")
        assert parse_utc(utc_z(moment, "microseconds")) == moment


@pytest.mark.parametrize("text", [
    "2026-07-01T00:00:00.123Z", "2026-07-01T00:00:00.123z", "2026-07-01T00:00:00.123+00:00",
    "2026-07-01T03:00:00.123+03:00",
])
def test_parse_utc_reads_z_and_offsets(text: str) -> None:
    parsed = parse_utc(text)
    assert parsed == MOMENT.replace(microsecond=123_000)
    assert parsed.tzinfo is UTC


@pytest.mark.parametrize("text", ["2026-07-01T00:00:00.123", "2026-07-01", "yesterday", ""])
def test_parse_utc_refuses_a_time_without_offset(text: str) -> None:
    with pytest.raises(ValueError):
        parse_utc(text)
