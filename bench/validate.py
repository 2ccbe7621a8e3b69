"""Benchmark of ``validate_batch`` on the seed's dataset, 1000-record JSON array bodies.

(a) all valid; (b) a mix: one record in ten broken, cycling through every error kind of the
seed (missing, extra, wrong string/number/boolean/timestamp, bad envelope timestamp and
context, duplicate key); (c) a producer's bad release: eight records in ten broken, cycling
through those kinds and more (an integer beyond int64, null in a non-nullable field, a
renamed field, no envelope timestamp, a context that is a string, two wrong types at once).
The seed's definition has no bounds, patterns or enums, so those kinds do not occur.

Each body goes through five candidates, interleaved in every repetition, in one process:

* ``validate_batch``: what a request under the ``reject`` policy runs (errors listed up to
  the cap, the others counted);
* ``all_errors``: ``validate_batch(..., all_errors=True)`` then ``failures()`` (each
  invalid record's bytes and errors) and ``valid_payload()`` (the valid records): what a
  request under the ``quarantine`` policy needs;
* ``fastjsonschema``: ``orjson.loads`` + a compiled validator with a strict date-time format,
  per record, stopping at the first error of each (the error discarded);
* ``fastjsonschema+errors``: the same, keeping each failing record's index and first error
  (what ``all_errors`` is compared with);
* ``orjson.loads`` alone.

Medians over the repetitions, as records/s; the whole measurement is repeated ``--runs``
times (3; the machine is shared and noisy) and each ratio's median over the runs is what
counts. ``--check`` exits 1 when a target is missed by those medians: >= 3x fastjsonschema
on (a), (b) and (c); >= 1.5x fastjsonschema+errors with ``all_errors`` on (c); >= 0.5x
``orjson.loads`` alone on (a).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fastjsonschema
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from validator import compile_dataset  # noqa: E402
from validator.formats import is_date_time  # noqa: E402

N = 1000
BODIES = {"a": "(a) all valid", "b": "(b) 10% invalid, every kind",
          "c": "(c) 80% invalid, a bad release"}
CANDIDATES = ("validate_batch", "all_errors", "fastjsonschema", "fastjsonschema+errors",
              "orjson.loads")
# (body, numerator, denominator, target or None: shown only)
RATIOS: list[tuple[str, str, str, float | None]] = [
    ("a", "validate_batch", "fastjsonschema", 3.0),
    ("b", "validate_batch", "fastjsonschema", 3.0),
    ("c", "validate_batch", "fastjsonschema", 3.0),
    ("c", "all_errors", "fastjsonschema+errors", 1.5),
    ("a", "validate_batch", "orjson.loads", 0.5),
    ("b", "all_errors", "fastjsonschema+errors", None),
]


def seed_records(rng: random.Random) -> list[dict[str, Any]]:
    """Valid records of the seed's dataset, varied like real traffic."""
    out = []
    for i in range(N):
        out.append({
            "timestamp": f"2026-06-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:{i % 59:02d}Z",
            "context": {"source": "billing-service", "request_id": f"req_{i}"},
            "country": rng.choice(["RO", "US", "DE", "FR", "JP"]),
            "plan": rng.choice(["pro", "free", "team"]),
            "amount": rng.choice([20, 5, 42.5, 13.37, 0, 1999.99]),
            "active": rng.random() < 0.5,
            "signup_at": f"2026-05-{1 + i % 28:02d}T08:00:00.{i:03d}+02:00",
        })
    return out


def _dup(body: bytes) -> bytes:
    return body.replace(b'"plan":', b'"plan":"x","plan":', 1)


def _rename(r: dict[str, Any]) -> None:
    r["amount_cents"] = r.pop("amount")


BREAKERS: list[Callable[[dict[str, Any]], None]] = [
    lambda r: r.pop("amount"),
    lambda r: r.update(extra="not allowed"),
    lambda r: r.update(country=7),
    lambda r: r.update(amount="12.5"),
    lambda r: r.update(active=1),
    lambda r: r.update(signup_at="2026-06-10T10:00:00+0200"),
    lambda r: r.update(timestamp="2026-02-30T10:00:00Z"),
    lambda r: r.update(context=[]),
]
# More of what a bad release sends (body (c) only, so (b) stays comparable).
RELEASE_BREAKERS: list[Callable[[dict[str, Any]], None]] = [
    lambda r: r.update(amount=2**63),
    lambda r: r.update(plan=None),
    _rename,
    lambda r: r.pop("timestamp"),
    lambda r: r.update(context="billing-service"),
    lambda r: r.update(signup_at="yesterday"),
    lambda r: r.update(country=None, active="true"),
]


def broken_body(records: list[dict[str, Any]], bad: Callable[[int], bool],
                breakers: list[Callable[[dict[str, Any]], None]],
                kind_of: Callable[[int], int]) -> bytes:
    """``records`` with those ``bad`` picks broken, by breaker ``kind_of(i)`` (the kind
    past the last breaker: a repeated key)."""
    parts = []
    for i, rec in enumerate(records):
        r = dict(rec)
        kind = kind_of(i)
        if bad(i) and kind < len(breakers):
            breakers[kind](r)
        raw = orjson.dumps(r)
        parts.append(_dup(raw) if bad(i) and kind == len(breakers) else raw)
    return b"[" + b",".join(parts) + b"]"


def mixed_body(records: list[dict[str, Any]]) -> bytes:
    """One record in ten broken, every kind in turn (the last kind: a repeated key)."""
    kinds = len(BREAKERS) + 1
    return broken_body(records, lambda i: i % 10 == 0, BREAKERS, lambda i: (i // 10) % kinds)


def release_body(records: list[dict[str, Any]]) -> bytes:
    """Eight records in ten broken, every kind of both lists in turn."""
    breakers = BREAKERS + RELEASE_BREAKERS
    kinds = len(breakers) + 1
    return broken_body(records, lambda i: i % 10 < 8, breakers,
                       lambda i: (i // 10 * 8 + i % 10) % kinds)


def measure(reps: int) -> dict[tuple[str, str], float]:
    """Records/s of every candidate on every body: medians over ``reps`` interleaved
    repetitions."""
    definition = json.loads((ROOT / "schemas" / "examples" / "seed.json").read_text())
    v = compile_dataset(definition)
    fjs = fastjsonschema.compile(v.json_schema, formats={"date-time": is_date_time})
    fjs_error = fastjsonschema.JsonSchemaValueException

    records = seed_records(random.Random(4))
    bodies = {"a": orjson.dumps(records), "b": mixed_body(records),
              "c": release_body(records)}
    assert v.validate_batch(bodies["a"]).ok
    mixed = v.validate_batch(bodies["b"])
    assert mixed.failed_records == N // 10, mixed.failed_records
    release = v.validate_batch(bodies["c"], all_errors=True)
    assert release.failed_records == N * 8 // 10, release.failed_records
    assert len(release.failures()) == N * 8 // 10
    assert release.valid_payload()[0] == N * 2 // 10

    def ours(body: bytes) -> None:
        v.validate_batch(body)

    def quarantine(body: bytes) -> None:
        result = v.validate_batch(body, all_errors=True)
        result.failures()
        result.valid_payload()

    def fastjson(body: bytes) -> None:
        for record in orjson.loads(body):
            try:  # noqa: SIM105  (contextlib.suppress costs more per record)
                fjs(record)
            except fjs_error:
                pass

    def fastjson_errors(body: bytes) -> None:
        errors = []
        for i, record in enumerate(orjson.loads(body)):
            try:
                fjs(record)
            except fjs_error as exc:
                errors.append((i, exc.message))

    def loads(body: bytes) -> None:
        orjson.loads(body)

    candidates = dict(zip(CANDIDATES, (ours, quarantine, fastjson, fastjson_errors, loads),
                          strict=True))
    timings: dict[tuple[str, str], list[float]] = {
        (b, c): [] for b in bodies for c in candidates}
    for _ in range(reps):
        for b, body in bodies.items():
            for c, fn in candidates.items():
                t0 = time.perf_counter()
                fn(body)
                timings[(b, c)].append(time.perf_counter() - t0)
    rates = {k: N / statistics.median(ts) for k, ts in timings.items()}
    print(f"{'records/s':34s}" + "".join(f"{c:>23s}" for c in CANDIDATES))
    for b, label in BODIES.items():
        print(f"{label + f' ({len(bodies[b]) // 1000} KB)':34s}"
              + "".join(f"{rates[(b, c)]:>23,.0f}" for c in CANDIDATES))
    return rates


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=60)
    parser.add_argument("--runs", type=int, default=3, help="whole measurements, one process")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    args = parser.parse_args()

    ratios: list[list[float]] = [[] for _ in RATIOS]
    for run in range(args.runs):
        if args.runs > 1:
            print(f"run {run + 1} of {args.runs}")
        rates = measure(args.reps)
        for k, (b, top, bottom, target) in enumerate(RATIOS):
            ratio = rates[(b, top)] / rates[(b, bottom)]
            ratios[k].append(ratio)
            aim = f"(target >= {target}x)" if target else "(no target)"
            print(f"  ({b}) {top} / {bottom}: {ratio:.2f}x {aim}")
    missed = False
    if args.runs > 1:
        print(f"median of {args.runs} runs")
    for k, (b, top, bottom, target) in enumerate(RATIOS):
        if target is None:
            continue
        ratio = statistics.median(ratios[k])
        ok = ratio >= target
        missed = missed or not ok
        spread = f" (runs {min(ratios[k]):.2f}-{max(ratios[k]):.2f})" if args.runs > 1 else ""
        print(f"({b}) {top} / {bottom}: {ratio:.2f}x{spread} (target >= {target}x) "
              f"{'ok' if ok else 'MISSED'}")
    return 1 if (args.check and missed) else 0


if __name__ == "__main__":
    sys.exit(main())
