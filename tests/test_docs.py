"""The docs stay true to the repository: every relative link in README.md, docs/ and
kubeflow/README.md resolves (the file, and the heading an `#anchor` names), and every
`medtfx` command line they show is one the command's parser accepts, with a config that
loads. Nothing is run: the parser is built from pipeline/cli as `medtfx` builds it."""

from __future__ import annotations

import argparse
import contextlib
import glob
import io
import os
import re
import shlex

import pytest

from pipeline.cli import build_parser
from pipeline.config import load_config
from pipeline.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = sorted(["README.md", "kubeflow/README.md",
                *(os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "docs", "*.md")))])

FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.M | re.S)
INLINE_CODE = re.compile(r"`[^`\n]+`")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6} +(.+?) *#*$", re.M)
PROGRAMS = ("medtfx", ".venv/bin/medtfx")
# A synopsis names its values by placeholders: only its flags are checked.
SYNOPSIS = ("[", "|", "...")


def read(page: str) -> str:
    with open(os.path.join(REPO, page)) as f:
        return f.read()


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, code marks and punctuation dropped,
    spaces as hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "").lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """The anchors of a page's headings (outside code blocks); a repeated heading gets
    -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    out = set()
    for heading in HEADING.findall(FENCE.sub("", text)):
        base = slug(heading)
        out.add(f"{base}-{seen[base]}" if base in seen else base)
        seen[base] = seen.get(base, 0) + 1
    return out


def broken_links(page: str, text: str) -> list[str]:
    """Each relative link of the page (outside code) whose file or heading is missing."""
    broken = []
    for target in LINK.findall(INLINE_CODE.sub("", FENCE.sub("", text))):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = os.path.normpath(os.path.join(REPO, os.path.dirname(page), path)) if path \
            else os.path.join(REPO, page)
        if not os.path.exists(file):
            broken.append(f"{page}: {target}: no such file")
        elif anchor and anchor not in anchors(open(file).read()):
            broken.append(f"{page}: {target}: no heading #{anchor} in {os.path.relpath(file, REPO)}")
    return broken


def command_lines(text: str) -> list[tuple[list[str], bool]]:
    """The `medtfx` command lines of a page as argument lists (without the program), each
    with whether it is a whole command to run: each line of a code block that runs
    `medtfx`, `.venv/bin/medtfx` or `make run ARGS=...` (continuation lines joined, a `$ `
    prompt and comments dropped) is; an inline code span that starts with `medtfx ` names a
    command and some of its options in prose."""
    lines = []
    for block in FENCE.findall(text):
        lines += [(line.strip().removeprefix("$ "), True)
                  for line in block.replace("\\\n", " ").splitlines()]
    lines += [(span.strip("`"), False) for span in INLINE_CODE.findall(FENCE.sub("", text))]
    commands = []
    for line, whole in lines:
        try:
            words = shlex.split(re.sub(r"(^|\s)#.*", "", line))
        except ValueError:  # not a command line: an unbalanced quote in prose or output
            continue
        if words and words[0] in PROGRAMS:
            commands.append((words[1:], whole))
        elif words[:2] == ["make", "run"]:
            args = [w.removeprefix("ARGS=") for w in words[2:] if w.startswith("ARGS=")]
            commands.append((["run", *shlex.split(args[0] if args else "")], whole))
    return commands


def unaccepted(argv: list[str], whole: bool = True) -> str | None:
    """Why `medtfx` refuses `argv` (None when it accepts it): an unknown command or flag;
    for a whole command line (not a synopsis), also a missing or malformed value, or a
    config (`--config`, `--set`) that does not load."""
    parser, words = build_parser(), list(argv)
    while words and re.fullmatch(r"[a-z][\w-]*", words[0]):  # the command, a sub-command
        choices = next((a.choices for a in parser._actions
                        if isinstance(a, argparse._SubParsersAction)), None)
        if choices is None:
            break
        if words[0] not in choices:
            return f"no command {words[0]!r}"
        parser = choices[words.pop(0)]
    flags = set(re.findall(r"(?<![\w-])--?[a-zA-Z][\w-]*", " ".join(words)))
    unknown = sorted(flags - set(parser._option_string_actions))
    if unknown:
        return f"{parser.prog} has no option {', '.join(unknown)}"
    if not whole or any(mark in word for word in argv for mark in SYNOPSIS):
        return None  # named in prose, or a synopsis
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            args = build_parser().parse_args(argv)
    except SystemExit:
        return err.getvalue().strip().splitlines()[-1]
    return config_error(args)


def config_error(args: argparse.Namespace) -> str | None:
    """Why the config a command line names, with its --set overrides, does not load."""
    if not hasattr(args, "set"):
        return None
    try:
        load_config(args.config and os.path.join(REPO, args.config), args.set)
    except ConfigError as err:
        return str(err)
    return None


@pytest.mark.parametrize("page", PAGES)
def test_every_relative_link_resolves(page):
    assert broken_links(page, read(page)) == []


@pytest.mark.parametrize("page", PAGES)
def test_every_medtfx_command_line_is_accepted_by_its_parser(page):
    commands = command_lines(read(page))
    refused = {shlex.join(argv): why for argv, whole in commands
               if (why := unaccepted(argv, whole))}
    assert refused == {}


def test_the_readme_shows_the_tour_and_the_command_ci_runs():
    """The front door: the tour's five commands, and `make test`, which .ci/run calls."""
    readme = read("README.md")
    assert {argv[0] for argv, whole in command_lines(readme) if whole} >= {
        "run", "report", "predict", "retrain", "compile-kfp"}
    assert "make test" in read(".ci/run") and "make test " in readme


def test_a_missing_file_or_heading_and_an_unknown_flag_are_caught():
    text = ("[a](docs/performance.md#how-a-stage-is-measured) [b](docs/nowhere.md) "
            "[c](docs/data.md#no-such-heading)\n```sh\nmedtfx run --no-such-flag\n"
            "medtfx predict --out scores.txt img.png\nmedtfx rollback --to 3\n"
            "medtfx run --set trainer.backbone=efficientnet_b0 --set epochs=two\n```\n"
            "In prose, `medtfx predict --out FILE.csv` names an option, `medtfx report --outt` "
            "none.\n")
    assert [line.split(": ")[1] for line in broken_links("README.md", text)] == [
        "docs/nowhere.md", "docs/data.md#no-such-heading"]
    assert [unaccepted(*command) is None for command in command_lines(text)] == [
        False, False, True, False, True, False]
    assert unaccepted(["data", "synth", "--out", "DIR", "[--images", "N]"]) is None
    assert "has no option --nope" in unaccepted(["compile-kfp", "...", "--nope"])
