"""Refuse ``pattern`` values that can backtrack catastrophically.

Python's ``re`` backtracks, and records are matched on the event loop: one pattern such as
``(a+)+$`` and a 30-character value would stall the whole service for minutes. So patterns
are checked when a dataset is registered. Refused:

* a variable-length repeat nested in a repeat of more than :data:`_MAX_OUTER` iterations
  (``(a+)+``, ``(\\w+\\.)*``, ``(.*a){20}``): the number of ways to split the input grows
  exponentially (or as a high power) with its length;
* a repeated alternation whose branches can begin with the same character (``(a|ab)*``).

This refuses a few harmless patterns too; a clear 400 at registration beats a stalled
service. Bounded forms (``(\\w{1,63}\\.){0,8}``) stay accepted.
"""

from __future__ import annotations

import re
from re import _parser as sre_parse  # type: ignore[attr-defined]  # private, stable since 3.11
from typing import Any

_UNBOUNDED = sre_parse.MAXREPEAT
_REPEATS = (sre_parse.MAX_REPEAT, sre_parse.MIN_REPEAT, sre_parse.POSSESSIVE_REPEAT)
# outer repeat counts up to this many iterations around a variable part stay polynomial
# and small enough not to matter on bounded field values
_MAX_OUTER = 10


class UnsafePatternError(ValueError):
    """The pattern can take exponential time on a short input."""


def check_pattern_safety(python_pattern: str, flags: int = re.ASCII) -> None:
    """Raise :class:`UnsafePatternError` if ``python_pattern`` can backtrack catastrophically."""
    _walk(list(sre_parse.parse(python_pattern, flags)), outer=1)


def _walk(items: list[tuple[Any, Any]], *, outer: int) -> None:
    for op, arg in items:
        if op in _REPEATS:
            low, high, sub = arg
            sub_items = list(sub)
            variable = low != high or _variable_width(sub_items)
            if variable and outer > _MAX_OUTER:
                raise UnsafePatternError("nested repetition")
            if high > 1 and high is not None:
                _check_branches(sub_items)
            inner = outer * (high if high != _UNBOUNDED else _MAX_OUTER + 1)
            _walk(sub_items, outer=min(inner, _MAX_OUTER + 1) if high > 1 else outer)
        elif op is sre_parse.SUBPATTERN:
            _walk(list(arg[-1]), outer=outer)
        elif op is sre_parse.BRANCH:
            for branch in arg[1]:
                _walk(list(branch), outer=outer)
        elif op in (sre_parse.ASSERT, sre_parse.ASSERT_NOT):
            _walk(list(arg[1]), outer=outer)


def _variable_width(items: list[tuple[Any, Any]]) -> bool:
    low, high = sre_parse.SubPattern(sre_parse.State(), items).getwidth()
    return bool(low != high)


def _first_literal(items: list[tuple[Any, Any]]) -> int | None:
    """The literal character a sequence must start with, or None when it is not one literal."""
    for op, arg in items:
        if op is sre_parse.LITERAL:
            return int(arg)
        if op is sre_parse.SUBPATTERN:
            return _first_literal(list(arg[-1]))
        return None
    return None


def _check_branches(items: list[tuple[Any, Any]]) -> None:
    """A repeated alternation must have branches that start differently."""
    for op, arg in items:
        if op is sre_parse.SUBPATTERN:
            _check_branches(list(arg[-1]))
        elif op is sre_parse.BRANCH:
            seen: set[int] = set()
            open_ended = 0
            for branch in arg[1]:
                first = _first_literal(list(branch))
                if first is None:
                    open_ended += 1
                elif first in seen:
                    raise UnsafePatternError("repeated alternation with overlapping branches")
                else:
                    seen.add(first)
            if open_ended > 1 or (open_ended and seen):
                # e.g. (\w|a)*: classes may overlap each other or a literal branch
                raise UnsafePatternError("repeated alternation with overlapping branches")
