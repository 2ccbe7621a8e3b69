"""Benchmark of ``validate_batch`` on the seed's dataset, 1000-record JSON array bodies.

(a) all valid, (b) a mix: one record in ten broken, cycling through every error kind of the
seed (missing, extra, wrong string/number/boolean/timestamp, bad envelope timestamp and
context, duplicate key). Each body goes through ``validate_batch``, through fastjsonschema
(``orjson.loads`` + a compiled validator with a strict date-time format, per record) and
through ``orjson.loads`` alone. One process, the candidates interleaved in every repetition,
medians reported as records/s. ``--check`` exits 1 when a target is missed:
>= 3x fastjsonschema on (a) and (b), >= 0.5x ``orjson.loads`` alone on (a).
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


def mixed_body(records: list[dict[str, Any]]) -> bytes:
    """One record in ten broken, every kind in turn (the last kind: a repeated key)."""
    parts = []
    kinds = len(BREAKERS) + 1
    for i, rec in enumerate(records):
        r = dict(rec)
        kind = (i // 10) % kinds
        if i % 10 == 0 and kind < len(BREAKERS):
            BREAKERS[kind](r)
        raw = orjson.dumps(r)
        parts.append(_dup(raw) if i % 10 == 0 and kind == len(BREAKERS) else raw)
    return b"[" + b",".join(parts) + b"]"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=60)
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    args = parser.parse_args()

    definition = json.loads((ROOT / "schemas" / "examples" / "seed.json").read_text())
    v = compile_dataset(definition)
    fjs = fastjsonschema.compile(v.json_schema, formats={"date-time": is_date_time})
    fjs_error = fastjsonschema.JsonSchemaValueException

    records = seed_records(random.Random(4))
    bodies = {"a": orjson.dumps(records), "b": mixed_body(records)}
    assert v.validate_batch(bodies["a"]).ok
    mixed = v.validate_batch(bodies["b"])
    assert mixed.failed_records == N // 10, mixed.failed_records

    def ours(body: bytes) -> None:
        v.validate_batch(body)

    def fastjson(body: bytes) -> None:
        for record in orjson.loads(body):
            try:  # noqa: SIM105  (contextlib.suppress costs more per record)
                fjs(record)
            except fjs_error:
                pass

    def loads(body: bytes) -> None:
        orjson.loads(body)

    candidates = {"validate_batch": ours, "fastjsonschema": fastjson, "orjson.loads": loads}
    timings: dict[tuple[str, str], list[float]] = {
        (b, c): [] for b in bodies for c in candidates}
    for _ in range(args.reps):
        for b, body in bodies.items():
            for c, fn in candidates.items():
                t0 = time.perf_counter()
                fn(body)
                timings[(b, c)].append(time.perf_counter() - t0)

    rate = {k: N / statistics.median(ts) for k, ts in timings.items()}
    for b, label in (("a", "(a) all valid"), ("b", "(b) 10% invalid, every kind")):
        print(f"{label}: {len(bodies[b])} bytes")
        for c in candidates:
            print(f"  {c:16s} {rate[(b, c)]:>12,.0f} records/s")
    checks = [
        ("(a) validate_batch / fastjsonschema", rate[("a", "validate_batch")]
         / rate[("a", "fastjsonschema")], 3.0),
        ("(b) validate_batch / fastjsonschema", rate[("b", "validate_batch")]
         / rate[("b", "fastjsonschema")], 3.0),
        ("(a) validate_batch / orjson.loads", rate[("a", "validate_batch")]
         / rate[("a", "orjson.loads")], 0.5),
    ]
    missed = False
    for name, ratio, target in checks:
        ok = ratio >= target
        missed = missed or not ok
        print(f"{name}: {ratio:.2f}x (target >= {target}x) {'ok' if ok else 'MISSED'}")
    return 1 if (args.check and missed) else 0


if __name__ == "__main__":
    sys.exit(main())
