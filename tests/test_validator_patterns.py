"""``pattern``: ECMA 262 semantics on Python's engine, and refusal of catastrophic patterns."""

from __future__ import annotations

import pytest

from validator import DefinitionError, compile_dataset
from validator.ecma_regex import compile_pattern, translate
from validator.regex_safety import UnsafePatternError, check_pattern_safety


@pytest.mark.parametrize(("pattern", "text", "matches"), [
    (r"^\d$", "\u07c0", False),      # NKO digit: Unicode digit, not an ECMA \d
    (r"^\D$", "\u07c0", True),
    (r"^\w$", "é", False),
    (r"^\W$", "é", True),
    (r"^\s$", "\ufeff", True),       # ECMA whitespace includes U+FEFF
    (r"^\S$", "\ufeff", False),
    (r"^[\s]$", "\u3000", True),
    (r"^abc$", "abc\n", False),      # ECMA $ is the end of input only
    (r"^abc$", "abc", True),
    (r"a\$", "a$", True),
    (r"^[$]$", "$", True),
    (r"^[]a]+$", "]a", True),
])
def test_ecma_semantics(pattern: str, text: str, matches: bool) -> None:
    assert bool(compile_pattern(pattern).search(text)) is matches


def test_trailing_newline_cannot_slip_through_a_field_pattern() -> None:
    v = compile_dataset({"fields": {"code": {"type": "string", "pattern": "^[A-Z]{2}$"}}})
    record = {"timestamp": "2026-01-01T00:00:00Z", "context": {}, "code": "AB\n"}
    assert [e.code for e in v.validate(record)] == ["pattern_mismatch"]
    assert v.validate({**record, "code": "AB"}) == []


@pytest.mark.parametrize("pattern", [
    "(a+)+$", "(a*)*", "(a|a)*", "(a|ab)*", r"(\w+\.)*\w+$", "(.*a){20}", "(x+x+)+y",
])
def test_catastrophic_patterns_are_refused(pattern: str) -> None:
    with pytest.raises(UnsafePatternError):
        check_pattern_safety(translate(pattern))
    with pytest.raises(DefinitionError) as info:
        compile_dataset({"fields": {"x": {"type": "string", "pattern": pattern}}})
    assert info.value.problems[0][0] == "/fields/x/pattern"


@pytest.mark.parametrize("pattern", [
    "^[A-Z]{2}$", r"^\d{3}-\d{4}$", "(a|b)*", r"^(\w{1,63}\.){0,8}\w+$", "([a-z]+-){2}",
    r"^\S+@\S+$", r"(\d|\s)*", "^(abc|def)+$", r"^[a-z0-9._%+-]+@[a-z0-9.-]+\.[a-z]{2,}$",
])
def test_ordinary_patterns_are_accepted(pattern: str) -> None:
    check_pattern_safety(translate(pattern))
    compile_dataset({"fields": {"x": {"type": "string", "pattern": pattern}}})
