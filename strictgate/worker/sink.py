"""The JSON Lines sink: output files written atomically and durably.

A batch of lines is written to a hidden temp file, fsynced, and only later renamed to its
final name (then the directory is fsynced). The worker records the final name in Redis
between the two steps, which is what lets a restarted worker finish or skip a half-done
batch without writing any record twice. Every failure of the file system is raised as
:class:`strictgate.worker.health.SinkError` (cause and path), never as a bare ``OSError``.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from strictgate.worker.health import SinkError

# how this sink is named in metrics and logs
SINK_NAME = "jsonl"


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
    """Write ``lines`` (each without newline) to ``final``'s temp file and fsync it.

    On failure the temp file is removed (a full disk must not fill up with empty temp files)
    and :class:`SinkError` names the cause and the path.
    """
    tmp = temp_path(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SinkError.from_os_error(exc, "creating", final.parent) from exc
    try:
        with open(tmp, "wb") as fh:
            fh.write(b"\n".join(lines) + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        _discard_quietly(final)
        raise SinkError.from_os_error(exc, "writing", tmp) from exc


def stage_batch(groups: dict[Path, list[bytes]]) -> None:
    """:func:`stage` every file of one batch; if one fails, none stays staged."""
    staged: list[Path] = []
    try:
        for final, lines in groups.items():
            stage(final, lines)
            staged.append(final)
    except BaseException:
        for final in staged:
            _discard_quietly(final)
        raise


def publish(final: Path) -> bool:
    """Rename the staged temp file to ``final`` and fsync the directory.

    Returns True when ``final`` exists afterwards (renamed now or already published).
    """
    tmp = temp_path(final)
    try:
        os.replace(tmp, final)
    except FileNotFoundError:
        return final.exists()
    except OSError as exc:
        raise SinkError.from_os_error(exc, "renaming", tmp) from exc
    try:
        _fsync_dir(final.parent)
    except OSError as exc:
        raise SinkError.from_os_error(exc, "syncing", final.parent) from exc
    return True


def discard(final: Path) -> None:
    """Remove a staged temp file that will not be published."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temp_path(final))


def _discard_quietly(final: Path) -> None:
    # cleanup on the failure path: the original error is the one to report
    with contextlib.suppress(OSError):
        discard(final)
