"""The JSON Lines sink: output files written atomically and durably.

A batch of lines is written to a hidden temp file, fsynced, and only later renamed to its
final name (then the directory is fsynced). The worker records the final name in Redis
between the two steps, which is what lets a restarted worker finish or skip a half-done
batch without writing any record twice.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def output_dir(root: Path, project_id: str, dataset_id: str, day: str) -> Path:
    """``<root>/<project_id>/<dataset_id>/<YYYY-MM-DD>``."""
    return root / project_id / dataset_id / day


def temp_path(final: Path) -> Path:
    """The hidden temp file a final file is staged in."""
    return final.with_name("." + final.name + ".tmp")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def stage(final: Path, lines: list[bytes]) -> None:
    """Write ``lines`` (each without newline) to ``final``'s temp file and fsync it."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(final)
    with open(tmp, "wb") as fh:
        fh.write(b"\n".join(lines) + b"\n")
        fh.flush()
        os.fsync(fh.fileno())


def publish(final: Path) -> bool:
    """Rename the staged temp file to ``final`` and fsync the directory.

    Returns True when ``final`` exists afterwards (renamed now or already published).
    """
    tmp = temp_path(final)
    try:
        os.replace(tmp, final)
    except FileNotFoundError:
        return final.exists()
    _fsync_dir(final.parent)
    return True


def discard(final: Path) -> None:
    """Remove a staged temp file that will not be published."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temp_path(final))
