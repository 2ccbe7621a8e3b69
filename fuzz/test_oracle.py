"""The oracle is trusted only after it agrees with the JSON-Schema-Test-Suite on timestamps."""

from __future__ import annotations

import json

import pytest

from fuzz.oracle import is_rfc3339_date_time, is_rfc3339_time
from fuzz.strategies import suite_format_cases


@pytest.mark.parametrize(("fmt", "check"), [("date-time", is_rfc3339_date_time),
                                            ("time", is_rfc3339_time)])
def test_oracle_timestamps_match_the_suite(fmt: str, check: object) -> None:
    cases = suite_format_cases(fmt)
    assert len(cases) > 20, f"suite file for {fmt} not found or empty"
    wrong = [(data, valid) for data, valid in cases if check(data) != valid]  # type: ignore[operator]
    assert not wrong, "oracle disagrees with the suite on: " + json.dumps(wrong)
