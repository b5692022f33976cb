"""The ``portrait`` command: every registered command is listed in ``portrait --help`` and in
the README's command list, each command's own ``--help`` works, and a stray argument is a
usage error rather than a traceback."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from serve.cli import OFFLINE_COMMANDS, build_parser, main

README = Path(__file__).resolve().parents[2] / "README.md"


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The parser's subcommands by name (none for a leaf command)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def command_paths(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()
                  ) -> Iterator[tuple[str, ...]]:
    """Every command and sub-action below ``parser`` (``("token", "create")``, ...)."""
    for name, child in subcommands(parser).items():
        yield (*prefix, name)
        yield from command_paths(child, (*prefix, name))


def listed(text: str, pattern: str) -> set[str]:
    """Command names after ``pattern`` in ``text``; ``evaluate|tune|ab`` gives three."""
    return {name for group in re.findall(pattern, text, re.M) for name in group.split("|")}


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    # The description's table: one "portrait NAME" line per command (the usage line and the
    # choices argparse writes itself would list them whatever the table says).
    table = listed(capsys.readouterr().out, r"^\s+portrait ([a-z|-]+)")
    registered = set(subcommands(build_parser()))
    assert {"erase-user", "master-key"} <= registered
    assert registered - table == set(), "missing from `portrait --help`"
    assert table - registered == set(), "listed in `portrait --help` but not a command"


def test_readme_lists_every_command() -> None:
    text = README.read_text()
    section = text.split("\n## Other commands\n", 1)[1].split("\n## ", 1)[0]
    mentioned = listed(section, r"(?:bin/portrait|\./dev) ([a-z|-]+)")
    missing = set(subcommands(build_parser())) - mentioned
    assert not missing, f"README's 'Other commands' does not show: {sorted(missing)}"


@pytest.mark.parametrize(
    "path", [p for p in command_paths(build_parser()) if p[0] not in OFFLINE_COMMANDS],
    ids=" ".join)
def test_each_command_has_help(path: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*path, "--help"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: portrait {' '.join(path)}")


def test_a_stray_argument_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["migrate", "--bogus"])
    assert exited.value.code == 2
    assert "unrecognised arguments: --bogus" in capsys.readouterr().err
