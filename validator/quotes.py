"""Counting ``"`` bytes, the measure behind the duplicate-key checks of :mod:`validator.fast`.

``bytes.count`` of one byte runs at about 2.3 GB/s here (85 us for a 200 KB body); a numpy
comparison and count runs at memory speed (12 us), and ``np.add.reduceat`` gives the counts
of many consecutive spans in one call (kept as an array: callers compare the counts in
numpy too).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

_QUOTE = np.uint8(ord('"'))


def span_quotes(data: bytes, starts: Sequence[int] | npt.NDArray[np.intp],
                ) -> npt.NDArray[np.int32]:
    """The ``"`` count of each span of ``data`` from ``starts[k]`` to ``starts[k + 1]``
    (the last span runs to the end), as an array (callers compare it in numpy). ``starts``
    ascends, starts at 0 and holds no empty span."""
    if not len(starts):
        return np.zeros(0, np.int32)
    marks = np.frombuffer(data, np.uint8) == _QUOTE
    counts: npt.NDArray[np.int32] = np.add.reduceat(marks, np.asarray(starts, np.intp),
                                                   dtype=np.int32)
    return counts


def part_quotes(parts: Sequence[Any], joined: bytes) -> npt.NDArray[np.int32]:
    """The ``"`` count of each of ``parts`` (non-empty buffers; ``joined``: their join),
    in one numpy pass."""
    lens = np.fromiter(map(len, parts), np.intp, len(parts))
    starts = np.cumsum(lens)
    starts -= lens
    return span_quotes(joined, starts)
