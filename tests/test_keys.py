"""Key layout: exact names, hash tags and month boundaries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from quota import keys


def test_quota_keys_follow_design_layout() -> None:
    assert keys.quota_limit_key("u1") == "quota_limit:datasets:{u1}"
    assert keys.usage_total_key("u1", "2026-06") == "usage_total:datasets:{u1}:2026-06"
    assert keys.usage_delta_key("u1", "2026-06") == "usage_delta:datasets:{u1}:2026-06"


def test_queue_and_idempotency_keys_share_the_users_hash_tag() -> None:
    assert keys.queue_key("u1", "p1", "13") == "queue:datasets:{u1}:p1:13"
    assert keys.idempotency_key("u1", "p1", "abc").startswith("idem:datasets:{u1}:")


def test_period_is_utc_calendar_month() -> None:
    assert keys.period_of(datetime(2026, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)) == "2026-12"
    assert keys.period_of(datetime(2027, 1, 1, 0, 0, 0, tzinfo=UTC)) == "2027-01"
    # 00:30 on 1 Jan at +01:00 is still December in UTC
    plus_one = timezone(timedelta(hours=1))
    assert keys.period_of(datetime(2027, 1, 1, 0, 30, tzinfo=plus_one)) == "2026-12"


@pytest.mark.parametrize("bad", ["", "a b", "-x", "x" * 129, "a:b", "{u}", "é"])
def test_bad_ids_are_refused(bad: str) -> None:
    with pytest.raises(keys.InvalidIdError):
        keys.quota_limit_key(bad)
