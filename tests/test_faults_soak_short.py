"""The soak (bench/soak.py, `make soak`) for a few seconds: a real server process with the
worker in-process, mixed traffic (valid, invalid, duplicate, over quota) at a steady rate;
the output holds exactly the admitted records and usage_total equals the output. Memory
figures need minutes to mean anything: they are checked by `make soak`, not here."""

from __future__ import annotations

from bench.soak import run_soak


def test_short_soak_output_is_exactly_the_admitted_records() -> None:
    report = run_soak(12.0, 60.0, 4.0, check_memory=False, capped_limit=100,
                      log=lambda *a, **k: None)
    assert report.problems == []
    assert report.records_admitted == report.records_written > 0
    assert {"202", "400", "429"} <= set(report.statuses)
    assert report.queue_len_end == 0
