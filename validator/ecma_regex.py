"""JSON Schema ``pattern`` semantics (ECMA 262) on Python's ``re`` engine.

JSON Schema says patterns are ECMA 262 regular expressions. Python's ``re`` differs where it
matters for validation: ``\\d`` and ``\\w`` match any Unicode digit or letter (ECMA: ASCII
only), ``\\s`` misses U+FEFF (ECMA includes it), and ``$`` also matches before a trailing
newline (ECMA: only at the end), so ``^[A-Z]{2}$`` would let ``"AB\\n"`` through. This module
rewrites a pattern so Python gives the ECMA verdict.
"""

from __future__ import annotations

import re

# ECMA 262 WhiteSpace and LineTerminator code points (what \s matches there).
_ECMA_SPACE = (
    "\\t\\n\\x0b\\x0c\\r \\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000"
    "\\ufeff"
)


def translate(pattern: str) -> str:
    """Rewrite an ECMA 262 pattern for Python's ``re`` used with :data:`re.ASCII`.

    ``re.ASCII`` gives ``\\d``, ``\\w`` and ``\\b`` their ECMA (ASCII) meaning; ``\\s``/``\\S``
    are spelled out as ECMA's set, and an unescaped ``$`` outside a class becomes ``\\Z``.
    """
    out: list[str] = []
    in_class = False
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\" and i + 1 < len(pattern):
            escaped = pattern[i + 1]
            if escaped == "s":
                out.append(_ECMA_SPACE if in_class else f"[{_ECMA_SPACE}]")
            elif escaped == "S" and not in_class:
                out.append(f"[^{_ECMA_SPACE}]")
            else:
                out.append(pattern[i:i + 2])
            i += 2
            continue
        if in_class:
            if char == "]":
                in_class = False
        elif char == "[":
            in_class = True
            out.append(char)
            # a leading "]" (or "^]") is a literal in both dialects, not the class end
            if pattern[i + 1:i + 2] == "^":
                out.append("^")
                i += 1
            if pattern[i + 1:i + 2] == "]":
                out.append("\\]")
                i += 1
            i += 1
            continue
        elif char == "$":
            out.append("\\Z")
            i += 1
            continue
        out.append(char)
        i += 1
    return "".join(out)


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """Compile an ECMA 262 ``pattern`` (raises :class:`re.error` when it is not valid)."""
    return re.compile(translate(pattern), re.ASCII)
