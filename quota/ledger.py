"""The usage ledger: an append-only JSON Lines file, one row per user, month and flush id.

Rows are written with one ``write`` and an ``fsync`` per batch. A crash in the middle of a
write can leave a torn last line; :meth:`Ledger.repair_tail` cuts it off before the next
append (the flush that wrote it had not deleted its pending keys yet, so the rows are written
again). A row is identified by ``(flush_id, user_id, period)``: the flush never writes the same
identity twice, which is what makes replaying a crashed flush safe.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import orjson

RowId = tuple[str, str, str]
"""``(flush_id, user_id, period)``."""


@dataclasses.dataclass(frozen=True, slots=True)
class LedgerRow:
    """Records of one user and month moved out of Redis by one flush."""

    flush_id: str
    user_id: str
    period: str
    records: int
    flushed_at: str

    @property
    def row_id(self) -> RowId:
        """The identity that is written at most once."""
        return (self.flush_id, self.user_id, self.period)

    def to_line(self) -> bytes:
        """The row as one JSON line."""
        return orjson.dumps(dataclasses.asdict(self)) + b"\n"


class Ledger:
    """One ledger file (created on first append, parent directories included)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def rows(self) -> Iterator[LedgerRow]:
        """Every complete row, in file order (a torn last line is skipped)."""
        if not self.path.exists():
            return
        with self.path.open("rb") as handle:
            for line in handle:
                if not line.endswith(b"\n"):
                    return
                yield LedgerRow(**orjson.loads(line))

    def present(self, flush_ids: Iterable[str]) -> set[RowId]:
        """Row ids already written by any of ``flush_ids``."""
        wanted = set(flush_ids)
        if not wanted:
            return set()
        return {row.row_id for row in self.rows() if row.flush_id in wanted}

    def totals(self) -> dict[tuple[str, str], int]:
        """Records per ``(user_id, period)`` over the whole ledger."""
        totals: dict[tuple[str, str], int] = {}
        for row in self.rows():
            key = (row.user_id, row.period)
            totals[key] = totals.get(key, 0) + row.records
        return totals

    def repair_tail(self) -> None:
        """Cut a torn last line (a crash during a write) so the next append starts clean."""
        if not self.path.exists():
            return
        with self.path.open("r+b") as handle:
            size = handle.seek(0, os.SEEK_END)
            if size == 0:
                return
            handle.seek(size - 1)
            if handle.read(1) == b"\n":
                return
            # Walk back to the last newline; everything after it is the torn row.
            position = size
            block = 4096
            keep = 0
            while position > 0:
                start = max(0, position - block)
                handle.seek(start)
                chunk = handle.read(position - start)
                cut = chunk.rfind(b"\n")
                if cut >= 0:
                    keep = start + cut + 1
                    break
                position = start
            handle.truncate(keep)
            handle.flush()
            os.fsync(handle.fileno())

    def append(self, rows: Iterable[LedgerRow]) -> int:
        """Append ``rows`` durably (write, then fsync); returns how many were written."""
        data = b"".join(row.to_line() for row in rows)
        if not data:
            return 0
        created = not self.path.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            # Make the new file's directory entry durable too.
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        return data.count(b"\n")
