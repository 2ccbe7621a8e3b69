"""Helpers for the lake tests: real payloads (through the real validator), queue entries,
and a writer process to run (and SIGKILL) from a test.

Run as a script: ``python -m tests.lake_support <lake dir> <entries.json> [kill]`` writes
the entries in batches of 10 with a :class:`strictgate.lake.writer.LakeWriter`; ``kill`` is
``before_commit`` (SIGKILL itself inside the transaction, right before COMMIT) or
``after_commit`` (SIGKILL itself right after the first commit returned, before anything
else, as a worker dying between commit and XACK).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import msgspec
import orjson

from strictgate.lake.engine import LakeConfig
from strictgate.lake.writer import LakeEntry, LakeWriter
from strictgate.queue_entry import QueueEntry
from validator.compiled import compile_dataset
from validator.definition import normalize

ROOT = Path(__file__).resolve().parent.parent
SEED = normalize(json.loads((ROOT / "schemas" / "examples" / "seed.json").read_text()))


def payload(definition: dict[str, Any], records: list[bytes]) -> bytes:
    """The queued payload of ``records`` (raw JSON texts) after the real validator."""
    result = compile_dataset(definition).validate_batch(b"[" + b",".join(records) + b"]")
    assert result.ok, result.errors
    return bytes(result.payload)


def seed_record(i: int, day: str = "2026-06-10") -> dict[str, Any]:
    """The ``i``-th seed record (distinct values)."""
    return {
        "timestamp": f"{day}T11:{(i // 60) % 60:02d}:{i % 60:02d}.{i % 1000:03d}Z",
        "context": {"source": "billing-service", "request_id": f"req_{i}"},
        "country": "RO", "plan": "pro", "amount": i * 0.5, "active": i % 2 == 0,
        "signup_at": "2026-06-01T08:00:00Z",
    }


def lake_entry(entry_id: str, project: str, dataset: str, version: int, trace_id: str,
               received_at: str, records: bytes) -> LakeEntry:
    """The writer's entry of ledger id ``entry_id`` (``<user>/<stream id>``) and a queue
    entry of those fields."""
    user, _, stream_id = entry_id.partition("/")
    return LakeEntry.of(stream_id, QueueEntry(
        records=records, trace_id=trace_id, dataset_version=version, received_at=received_at,
        project_id=project, dataset_id=dataset, user_id=user))


def seed_entries(n_entries: int, per_entry: int, *, start: int = 0, project: str = "p1",
                 dataset: str = "billing", version: int = 1,
                 received_at: str = "2026-06-10T11:00:00.123Z") -> list[LakeEntry]:
    """``n_entries`` entries of ``per_entry`` seed records, ids ``u/<start + n>-0``."""
    out = []
    for n in range(start, start + n_entries):
        records = [seed_record(n * per_entry + i) for i in range(per_entry)]
        out.append(lake_entry(f"u/{1781000000000 + n}-0", project, dataset, version,
                              f"trace{n}", received_at, orjson.dumps(records)))
    return out


def seed_definitions(project: str, dataset: str, version: int) -> dict[str, Any]:
    """Every dataset of the lake tests is the seed dataset."""
    return SEED


def dump_entries(entries: list[LakeEntry], path: Path) -> None:
    """Write entries for :func:`main` to read."""
    path.write_bytes(msgspec.json.encode(entries))


def load_entries(path: Path) -> list[LakeEntry]:
    """Read entries written by :func:`dump_entries`."""
    return msgspec.json.decode(path.read_bytes(), type=list[LakeEntry])


def main(argv: list[str]) -> int:
    """Write the entries of ``argv[1]`` into the lake at ``argv[0]``, 10 per commit."""
    lake_dir, entries_path = Path(argv[0]), Path(argv[1])
    kill = argv[2] if len(argv) > 2 else ""

    def suicide() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    (lake_dir / "stage").mkdir(parents=True, exist_ok=True)
    writer = LakeWriter(LakeConfig.local(lake_dir), seed_definitions,
                        stage_dir=lake_dir / "stage",
                        before_commit=suicide if kill == "before_commit" else None)
    entries = load_entries(entries_path)
    for i in range(0, len(entries), 10):
        result = writer.write(entries[i:i + 10])
        print(len(result.written), len(result.skipped), result.attempts, flush=True)
        if kill == "after_commit":
            suicide()
    writer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
