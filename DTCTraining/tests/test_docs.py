"""The README and docs/ describe the `dtc` command line that exists: every sub-command is shown in the README,
and every option written after `dtc COMMAND` in a doc is one that `dtc COMMAND --help` lists."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import run_dtc
from dtc_training.cli import COMMANDS

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# a command line ends at the end of the line, a closing backquote or a shell comment
COMMAND_LINE = re.compile(r"\bdtc (%s)\b([^\n`#]*)" % "|".join(map(re.escape, COMMANDS)))
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def options_of(command: str) -> set[str]:
    return set(OPTION.findall(run_dtc(command, "--help").stdout))


def documented_options(text: str) -> list[tuple[str, str, str]]:
    """(command, option, the command line) for each option on a `dtc COMMAND ...` line; continuations joined."""
    text = text.replace("\\\n", " ")
    return [(m[1], option, m[0]) for m in COMMAND_LINE.finditer(text) for option in OPTION.findall(m[2])]


def test_the_pattern_reads_options_after_the_command_across_continued_lines():
    text = "x `dtc infer --model m a.nrrd -o b` y\ndtc train --datalist d \\\n    --resume  # dtc --version\n"
    assert [(command, option) for command, option, _ in documented_options(text)] == [
        ("infer", "--model"), ("train", "--datalist"), ("train", "--resume")]


@pytest.mark.skipif(not (REPO / "docs").is_dir(), reason="the repository's docs are not beside this package")
def test_every_documented_option_exists():
    known = {command: options_of(command) for command in COMMANDS}
    unknown = [f"{doc.relative_to(REPO)}: dtc {command} has no {option} (in: {line.strip()[:100]})"
               for doc in DOCS for command, option, line in documented_options(doc.read_text(encoding="utf-8"))
               if option not in known[command]]
    assert not unknown, "\n".join(unknown)


@pytest.mark.skipif(not (REPO / "README.md").is_file(), reason="the repository's README is not beside this package")
def test_the_readme_shows_every_command():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert [c for c in COMMANDS if f"dtc {c}" not in readme] == []
