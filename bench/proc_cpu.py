"""CPU seconds of process trees read from /proc, counting processes that already exited: a
child the tree reaped (a compaction child, a restarted API process, a PostgreSQL backend
whose connection closed) is in its parent's ``cutime``/``cstime``."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from bench.peer_support import descendants

_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcTimes:
    """One process's CPU seconds: its own (user + system) and its reaped children's."""

    own: float
    children: float


def proc_times(pid: int) -> ProcTimes | None:
    """The CPU seconds of ``pid``, or None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after its last ")"
    fields = text[text.rindex(")") + 2:].split()
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return ProcTimes((utime + stime) / _TICKS, (cutime + cstime) / _TICKS)


def tree_cpu_seconds(roots: Iterable[int]) -> float:
    """User plus system CPU seconds used so far by ``roots``, every process below them, and
    every process of the tree that exited and was reaped. Each process counts once: while it
    lives, in its own fields; once reaped, in its parent's children fields. (A process that
    exits between two readings takes its time along unless its parent is in the tree.)"""
    total = 0.0
    for pid in descendants(roots):
        found = proc_times(pid)
        if found is not None:
            total += found.own + found.children
    return total


def postgres_server_pid() -> int | None:
    """The PID of the PostgreSQL postmaster of this machine (a ``postgres`` process whose
    parent is not one), or None when none runs or /proc hides it."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if Path(entry.path, "comm").read_text().strip() != "postgres":
                continue
            parent = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()[1]
            if Path(f"/proc/{parent}/comm").read_text().strip() != "postgres":
                return int(entry.name)
        except (OSError, IndexError):
            continue
    return None


def postgres_backend_cpu_seconds(dbname: str) -> float:
    """CPU seconds of the live PostgreSQL backends connected to ``dbname`` (their title
    reads ``postgres: <cluster>: <user> <dbname> <client> <state>``)."""
    total = 0.0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if Path(entry.path, "comm").read_text().strip() != "postgres":
                continue
            title = Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ").decode(
                errors="replace")
        except OSError:
            continue
        if f" {dbname} " in title and (found := proc_times(int(entry.name))) is not None:
            total += found.own
    return total
