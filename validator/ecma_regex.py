"""JSON Schema ``pattern`` (ECMA 262 syntax and verdicts) on RE2, a linear-time engine.

Records are matched on the event loop, so a pattern must never take more than linear time:
on a backtracking engine (Python's ``re``) ``^a*a*a*a*a*a*a*a*b$`` took 30 s on a 50-character
value, and no guard over such an engine can be complete. RE2 matches in time linear in the
value whatever the pattern; what it cannot do at all (backreferences, lookahead, lookbehind)
is refused when the dataset is registered (:class:`PatternError`, with the reason).

A pattern is rewritten so RE2 gives ECMA 262's verdict:

* ``\\d``, ``\\w``, ``\\b`` and their complements are ASCII in both dialects;
* ``\\s``/``\\S`` are spelled out as ECMA's set (RE2's ``\\s`` is ``[\\t\\n\\f\\r ]`` only);
* ``$`` is the end of the input only (``\\z``): ``^[A-Z]{2}$`` must not accept ``"AB\\n"``;
* ``.`` is any character but a line terminator (``\\n``, ``\\r``, U+2028, U+2029);
* ``\\uXXXX`` (a surrogate pair as one character) and ``\\cX`` become RE2 escapes, ``[\\b]``
  is a backspace, ``[]`` matches nothing and ``[^]`` any character, ``[`` inside a class is
  a plain character (RE2 would read ``[[:alpha:]]`` as a POSIX class);
* values are searched, not anchored, as JSON Schema says.
"""

from __future__ import annotations

import re
from typing import Any

import re2  # type: ignore[import-untyped]  # google-re2 ships no type information

# ECMA 262 WhiteSpace and LineTerminator code points (what \s matches there), as ranges.
_SPACE_RANGES = ((0x09, 0x0D), (0x20, 0x20), (0xA0, 0xA0), (0x1680, 0x1680),
                 (0x2000, 0x200A), (0x2028, 0x2029), (0x202F, 0x202F), (0x205F, 0x205F),
                 (0x3000, 0x3000), (0xFEFF, 0xFEFF))
_MAX_CODE_POINT = 0x10FFFF


def _ranges(ranges: list[tuple[int, int]] | tuple[tuple[int, int], ...]) -> str:
    return "".join(f"\\x{{{a:x}}}" if a == b else f"\\x{{{a:x}}}-\\x{{{b:x}}}"
                   for a, b in ranges)


def _complement(ranges: tuple[tuple[int, int], ...]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    low = 0
    for a, b in ranges:
        if a > low:
            out.append((low, a - 1))
        low = b + 1
    if low <= _MAX_CODE_POINT:
        out.append((low, _MAX_CODE_POINT))
    return out


_SPACE = _ranges(_SPACE_RANGES)  # a class body: \s inside [...]
_NOT_SPACE = _ranges(_complement(_SPACE_RANGES))  # \S inside [...]
_ANY = f"\\x{{0}}-\\x{{{_MAX_CODE_POINT:x}}}"
_DOT = "[^\\n\\r\\x{2028}\\x{2029}]"
_HEX4 = re.compile(r"[0-9a-fA-F]{4}")
_GROUP_NAME = re.compile(r"\(\?P?<([A-Za-z_$][\w$]*)>")
_ENGINE = "patterns run on RE2, a linear-time engine"
# RE2's time is linear in the value but grows with the compiled program (its NFA follows up
# to one thread per instruction): at this size a 100 KB value takes at worst about 10 ms.
MAX_PROGRAM_SIZE = 2500


class PatternError(ValueError):
    """A ``pattern`` that is not valid ECMA 262 or that RE2 cannot run; the message says
    why, in words a client can act on."""


def _unicode_escape(pattern: str, i: int) -> tuple[str, int] | None:
    """The RE2 spelling of the ``\\uXXXX`` escape at ``i`` (a surrogate pair, two escapes,
    is one character) and the position after it; None when no 4 hex digits follow."""
    if not _HEX4.fullmatch(pattern, i + 2, i + 6):
        return None
    code = int(pattern[i + 2:i + 6], 16)
    end = i + 6
    if 0xD800 <= code <= 0xDBFF and pattern[end:end + 2] == "\\u" and _HEX4.fullmatch(
            pattern, end + 2, end + 6):
        low = int(pattern[end + 2:end + 6], 16)
        if 0xDC00 <= low <= 0xDFFF:
            code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
            end += 6
    if 0xD800 <= code <= 0xDFFF:
        raise PatternError(f"\\u{code:04x} is a lone surrogate, which RE2 (UTF-8) cannot"
                           " match")
    return f"\\x{{{code:x}}}", end


def _escape(pattern: str, i: int, in_class: bool) -> tuple[str, int]:
    """The RE2 spelling of the escape at ``pattern[i]`` (a backslash) and the position
    after it."""
    if i + 1 >= len(pattern):
        raise PatternError("pattern ends with a lone backslash")
    char = pattern[i + 1]
    if char == "s":
        return (_SPACE if in_class else f"[{_SPACE}]"), i + 2
    if char == "S":
        return (_NOT_SPACE if in_class else f"[{_NOT_SPACE}]"), i + 2
    if char == "u":
        spelled = _unicode_escape(pattern, i)
        if spelled is not None:
            return spelled
    if char == "c" and pattern[i + 2:i + 3].isascii() and pattern[i + 2:i + 3].isalpha():
        return f"\\x{{{ord(pattern[i + 2]) % 32:x}}}", i + 3
    if char == "b" and in_class:
        return "\\x{8}", i + 2
    if not in_class and (char in "123456789" or char == "k"):
        raise PatternError(f"backreferences (\\{char}) are not supported ({_ENGINE})")
    return pattern[i:i + 2], i + 2


def translate(pattern: str) -> str:
    """Rewrite an ECMA 262 pattern in RE2's syntax with the same verdicts (see the module
    docstring); raises :class:`PatternError` for what RE2 cannot run."""
    out: list[str] = []
    in_class = False
    i = 0
    n = len(pattern)
    while i < n:
        char = pattern[i]
        if char == "\\":
            spelled, i = _escape(pattern, i, in_class)
            out.append(spelled)
            continue
        if in_class:
            if char == "]":
                in_class = False
            elif char == "[":
                char = "\\["
        elif char == "[":
            if pattern.startswith("[]", i):
                out.append(f"[^{_ANY}]")  # ECMA: the empty class matches nothing
                i += 2
                continue
            if pattern.startswith("[^]", i):
                out.append(f"[{_ANY}]")  # ECMA: any character at all
                i += 3
                continue
            in_class = True
            if pattern.startswith("[^", i):
                out.append("[^")
                i += 2
                continue
        elif char == "$":
            char = "\\z"
        elif char == ".":
            char = _DOT
        elif char == "(" and pattern.startswith("(?", i):
            if pattern.startswith(("(?=", "(?!"), i):
                raise PatternError(f"lookahead ((?= or (?!) is not supported ({_ENGINE})")
            if pattern.startswith(("(?<=", "(?<!"), i):
                raise PatternError(f"lookbehind ((?<= or (?<!) is not supported ({_ENGINE})")
        out.append(char)
        i += 1
    names = _GROUP_NAME.findall(pattern)
    if len(set(names)) != len(names):
        raise PatternError("a group name is used twice")
    return "".join(out)


class EcmaPattern:
    """A compiled ``pattern``: :meth:`search` gives ECMA 262's verdict in linear time."""

    __slots__ = ("_match", "source")

    def __init__(self, source: str, regexp: Any) -> None:
        self.source = source
        self._match = regexp.Match

    def search(self, text: str) -> bool:
        """Whether the pattern matches somewhere in ``text``."""
        # A lone surrogate (a JSON "\ud800" escape) has no UTF-8 form: "surrogatepass"
        # keeps it as three bytes, which '.' and negated classes match as one character.
        data = text.encode("utf-8", "surrogatepass")
        return bool(self._match(_UNANCHORED, data, 0, len(data))[0][0] >= 0)


_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # errors are reported to the client, not to stderr
_OPTIONS.never_capture = True  # only "does it match": no group bookkeeping
_UNANCHORED = re2._re2.RE2.Anchor.UNANCHORED


def compile_pattern(pattern: str) -> EcmaPattern:
    """Compile an ECMA 262 ``pattern``; raises :class:`PatternError` when it is not valid
    or RE2 cannot run it."""
    translated = translate(pattern)
    try:
        compiled = re2.compile(translated, _OPTIONS)
    except re2.error as exc:
        reason = exc.args[0].decode("utf-8", "replace") if exc.args and isinstance(
            exc.args[0], bytes) else str(exc)
        raise PatternError(f"pattern does not compile ({_ENGINE}): {reason[:200]}") from None
    regexp = compiled._regexp
    size = max(regexp.ProgramSize(), regexp.ReverseProgramSize())
    if size > MAX_PROGRAM_SIZE:
        raise PatternError(f"pattern too large to match in bounded time (RE2 program of {size}"
                           f" instructions, at most {MAX_PROGRAM_SIZE}): counted repeats such as"
                           " {0,1000} expand; bound lengths with minLength/maxLength instead")
    return EcmaPattern(pattern, regexp)
