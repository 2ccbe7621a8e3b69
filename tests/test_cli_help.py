"""First contact with the CLI: every command and argument has a help text
(no raw docstring), and ``--version`` prints the package version."""

from __future__ import annotations

import argparse
import tomllib
from collections.abc import Iterator

import pytest

from strictgate.cli import build_parser
from tests.serve_proc import ROOT, clean_env, run_cli

PYPROJECT_VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
RAW_DOCSTRING_MARKS = ("``", ":func:", ":class:", "console script")


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
              ) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _commands(child, (*path, name))


COMMANDS = list(_commands(build_parser()))


def test_every_command_is_walked() -> None:
    names = {" ".join(path) for path, _ in COMMANDS}
    assert {"serve", "worker", "usage flush", "quota set", "quota get", "datasets put",
            "datasets get", "datasets list", "datasets delete", "keys create", "keys list",
            "keys revoke"} <= names


@pytest.mark.parametrize(("path", "parser"), COMMANDS,
                         ids=[" ".join(p) or "strictgate" for p, _ in COMMANDS])
def test_help_describes_the_command_and_names_each_argument(
    path: tuple[str, ...], parser: argparse.ArgumentParser
) -> None:
    text = parser.format_help()
    assert not any(mark in text for mark in RAW_DOCSTRING_MARKS), text
    assert parser.description, f"{path} has no description"
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                assert choice.help and choice.dest in text, (path, choice.dest)
            continue
        assert action.help, f"{path}: {action.dest} has no help"
        shown = action.option_strings[0] if action.option_strings else action.dest
        assert shown in text and str(action.help % {"prog": parser.prog}) in " ".join(
            text.split()), (path, shown)


def test_help_and_version_from_the_shell() -> None:
    env = clean_env()
    done = run_cli(env, "--help")
    assert done.returncode == 0 and done.stdout.startswith("usage: strictgate")
    assert not any(mark in done.stdout for mark in RAW_DOCSTRING_MARKS)
    for command in ("serve", "usage", "quota", "datasets", "keys", "worker"):
        assert f"    {command} " in done.stdout
    done = run_cli(env, "--version")
    assert (done.returncode, done.stdout) == (0, f"strictgate {PYPROJECT_VERSION}\n")
    done = run_cli(env, "quota", "set", "--help")
    assert done.returncode == 0 and "user_id     the user" in done.stdout
