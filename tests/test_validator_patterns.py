"""``pattern``: ECMA 262 semantics on RE2 (linear time), and refusal of what RE2 cannot run."""

from __future__ import annotations

import json
import time

import pytest

from validator import DefinitionError, compile_dataset
from validator.checker import MAX_STRING
from validator.ecma_regex import MAX_PROGRAM_SIZE, PatternError, compile_pattern


@pytest.mark.parametrize(("pattern", "text", "matches"), [
    (r"^\d$", "\u07c0", False),      # NKO digit: Unicode digit, not an ECMA \d
    (r"^\D$", "\u07c0", True),
    (r"^\w$", "é", False),
    (r"^\W$", "é", True),
    (r"^\s$", "\ufeff", True),       # ECMA whitespace includes U+FEFF
    (r"^\s$", "\x0b", True),         # and the vertical tab (RE2's \s does not)
    (r"^\S$", "\ufeff", False),
    (r"^[\s]$", "\u3000", True),
    (r"^[\S]$", "a", True),
    (r"^[\S]$", "\u2028", False),
    (r"^abc$", "abc\n", False),      # ECMA $ is the end of input only
    (r"^abc$", "abc", True),
    (r"a\$", "a$", True),
    (r"^[$]$", "$", True),
    (r"^[]a]+$", "]a", False),       # ECMA: [] is an empty class, matching nothing
    (r"^[^]$", "\n", True),          # ECMA: [^] is any character
    (r"^.$", "\r", False),           # . matches no line terminator
    (r"^.$", "\u2029", False),
    (r"^.$", "é", True),
    (r"^.$", "\U0001F432", True),    # one character, not two UTF-16 units
    (r"^\u00e9$", "é", True),
    (r"^\ud83d\udc32$", "\U0001F432", True),  # a surrogate pair is one character
    (r"^\cJ$", "\n", True),
    (r"^[\b]$", "\b", True),
    (r"\bfoo\b", "a foo b", True),
    (r"^[[:alpha:]]$", "a", False),  # ECMA has no POSIX classes: '[' is a plain character
    (r"^[[:alpha:]]$", "[]", True),
    (r"^(?<year>\d{4})$", "2026", True),
    (r"b", "abc", True),              # a search, not a full match
    (r"^.$", "\ud800", True),         # a lone surrogate (JSON "\ud800") is one character
])
def test_ecma_semantics(pattern: str, text: str, matches: bool) -> None:
    assert compile_pattern(pattern).search(text) is matches


def test_trailing_newline_cannot_slip_through_a_field_pattern() -> None:
    v = compile_dataset({"fields": {"code": {"type": "string", "pattern": "^[A-Z]{2}$"}}})
    record = {"timestamp": "2026-01-01T00:00:00Z", "context": {}, "code": "AB\n"}
    assert [e.code for e in v.validate(record)] == ["pattern_mismatch"]
    assert v.validate({**record, "code": "AB"}) == []
    body = json.dumps([record, {**record, "code": "AB"}]).encode()
    assert [(e.index, e.code) for e in v.validate_batch(body).errors] == [
        (0, "pattern_mismatch")]


@pytest.mark.parametrize(("pattern", "reason"), [
    (r"(a)\1", "backreferences"),
    (r"(?<x>a)\k<x>", "backreferences"),
    ("a(?=b)", "lookahead"),
    ("a(?!b)", "lookahead"),
    ("(?<=a)b", "lookbehind"),
    ("(?<!a)b", "lookbehind"),
    ("(?P<x>a)(?P<x>b)", "group name is used twice"),
    (r"\ud800", "lone surrogate"),
    ("(", "does not compile"),
    ("a{2,1}", "does not compile"),
    ("\\", "lone backslash"),
    (r"\p{digit}", "does not compile"),
    ("(.*a){999}", "too large"),
    (".{0,1000}x", "too large"),
])
def test_what_re2_cannot_run_is_refused_with_the_reason(pattern: str, reason: str) -> None:
    with pytest.raises(PatternError) as err:
        compile_pattern(pattern)
    assert reason in str(err.value)
    with pytest.raises(DefinitionError) as info:
        compile_dataset({"fields": {"x": {"type": "string", "pattern": pattern}}})
    assert info.value.problems == [("/fields/x/pattern", str(err.value))]


# Known ReDoS patterns (exponential or high-polynomial on a backtracking engine).
REDOS = [
    "(a+)+$", "(a|a)*b", "^(a|aa)+$", "(.*a){20}", "^a*a*a*a*a*a*a*a*b$", "(a*)*$", "(x+x+)+y",
    r"(\w+\.)*\w+@", r"^(\s*\S+)*$", r"^(([a-z])+.)+[A-Z]([a-z])+$",
    r"^([a-zA-Z0-9])(([\-.]|[_]+)?([a-zA-Z0-9]+))*(@){1}[a-z0-9]+[.]{1}(([a-z]{2,3})|"
    r"([a-z]{2,3}[.]{1}[a-z]{2,3}))$",
    r"^[a-z0-9._%+-]+@([a-z0-9-]+\.)+[a-z]{2,}$",
    "(a|aa){0,600}x",  # large (2,405 instructions) but under the limit: the slowest accepted
]
HOSTILE = ["a" * 100_000 + "!", ("a." * 50_000) + "!", ("ab " * 34_000)[:100_000] + "!"]


def _worst_seconds(pattern: str, size: int) -> float:
    search = compile_pattern(pattern).search
    worst = 0.0
    for text in HOSTILE:
        text = (text * (size // len(text) + 1))[:size]
        started = time.perf_counter()
        search(text)
        worst = max(worst, time.perf_counter() - started)
    return worst


@pytest.mark.parametrize("pattern", REDOS)
def test_redos_patterns_match_100kb_in_linear_time(pattern: str) -> None:
    """Accepted, and a 100 KB hostile value is checked fast; twice the value takes about
    twice the time (never a power of it)."""
    compile_dataset({"fields": {"x": {"type": "string", "pattern": pattern}}})
    _worst_seconds(pattern, 1000)  # RE2 builds its DFA lazily: not part of the measure
    small = min(_worst_seconds(pattern, 100_000) for _ in range(3))
    large = min(_worst_seconds(pattern, 200_000) for _ in range(3))
    assert small < 0.5, (pattern, small)
    # Linear: 2x the input, about 2x the time (generous for timer noise on a shared box;
    # a quadratic engine gives 4x, an exponential one never finishes).
    assert large < 3.5 * small + 0.002, (pattern, small, large)


@pytest.mark.parametrize("pattern", REDOS)
def test_redos_patterns_check_the_longest_record_value_fast(pattern: str) -> None:
    """Through the validator's paths (batch and single record) with the longest value a
    record may hold."""
    v = compile_dataset({"fields": {"x": {"type": "string", "pattern": pattern}}})
    record = {"timestamp": "2026-01-01T00:00:00Z", "context": {}, "x": "a" * (MAX_STRING - 1)
              + "!"}
    body = json.dumps([record] * 10).encode()
    started = time.perf_counter()
    result = v.validate_batch(body)
    v.validate(record)
    assert time.perf_counter() - started < 0.5
    assert result.count == 10


def test_program_size_limit_is_what_the_readme_says() -> None:
    assert MAX_PROGRAM_SIZE == 2500


@pytest.mark.parametrize("pattern", [
    "^[A-Z]{2}$", r"^\d{3}-\d{4}$", "(a|b)*", r"^(\w{1,63}\.){0,8}\w+$", "([a-z]+-){2}",
    r"^\S+@\S+$", r"(\d|\s)*", "^(abc|def)+$", r"^[a-z0-9._%+-]+@[a-z0-9.-]+\.[a-z]{2,}$",
    "(a+)+$", "(.*a){20}",  # catastrophic on a backtracking engine, harmless on RE2
])
def test_ordinary_patterns_are_accepted(pattern: str) -> None:
    compile_dataset({"fields": {"x": {"type": "string", "pattern": pattern}}})
