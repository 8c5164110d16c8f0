"""The docs site builds with --strict, its generated reference included, and every `citybrain` command a
tutorial shows is one the real command line takes."""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from citybrain.cli import app
from citybrain.settings import PROJECT_ROOT

DOCS = PROJECT_ROOT / "docs"
TUTORIALS = sorted((DOCS / "tutorials").glob("*.md")) + sorted((DOCS / "zh" / "tutorials").glob("*.md"))
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.M | re.S)


def tutorial_commands() -> list[tuple[str, str]]:
    """(page, command line) of every line of a tutorial's code blocks that runs `citybrain`."""
    found = []
    for page in TUTORIALS:
        for block in FENCE.findall(page.read_text(encoding="utf-8")):
            for line in block.splitlines():
                line = line.strip().removeprefix("$ ")
                if line.startswith("citybrain "):
                    found.append((str(page.relative_to(PROJECT_ROOT)), line))
    return found


def resolve(line: str) -> tuple[list[str], Any]:
    """The command path of a `citybrain ...` line in the real click tree, its options and arguments checked.

    Raises AssertionError naming what the command line does not take.
    """
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split, lexer.commenters = True, "#"
    words = list(lexer)
    shell = next((i for i, w in enumerate(words) if set(w) <= set("|&;<>()")), len(words))
    words = words[1:shell]                               # the command, without a redirection or a pipe after it
    command = typer.main.get_command(app)
    ctx = command.context_class(command, info_name="citybrain")
    path: list[str] = []
    while words and hasattr(command, "list_commands") and not words[0].startswith("-"):
        sub = command.get_command(ctx, words[0])
        assert sub is not None, f"`{line}`: `citybrain {' '.join(path)}` has no command {words[0]!r}"
        path.append(words.pop(0))
        command, ctx = sub, sub.context_class(sub, info_name=path[-1], parent=ctx)
    options = {name: p for p in command.get_params(ctx) if p.param_type_name == "option"
               for name in p.opts + p.secondary_opts}
    arguments = [p for p in command.get_params(ctx) if p.param_type_name == "argument"]
    positional = 0
    while words:
        word = words.pop(0)
        if word.startswith("-") and len(word) > 1:
            name, has_value = word.split("=", 1)[0], "=" in word
            assert name in options, f"`{line}`: `citybrain {' '.join(path)}` has no option {name} (it has {sorted(options)})"
            if not options[name].is_flag and not has_value:
                assert words, f"`{line}`: option {name} needs a value"
                words.pop(0)
        else:
            positional += 1
    unlimited = any(p.nargs == -1 for p in arguments)
    required = sum(p.nargs if p.nargs > 0 else 1 for p in arguments if p.required)
    assert positional >= required, f"`{line}`: `citybrain {' '.join(path)}` needs {required} argument(s), got {positional}"
    assert unlimited or positional <= sum(p.nargs for p in arguments), \
        f"`{line}`: `citybrain {' '.join(path)}` takes {sum(p.nargs for p in arguments)} argument(s), got {positional}"
    return path, command


def test_the_site_builds_strictly_with_its_generated_reference_and_names_no_machine_path(tmp_path: Path) -> None:
    missing = [name for name in ("mkdocs", "material") if importlib.util.find_spec(name) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} is not installed in {sys.executable}'s environment, so the docs cannot be "
                    "built. Fix: .venv/streams/bin/pip install 'mkdocs-material>=9.5' (or install the dev extra).")
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
                           str(PROJECT_ROOT / "mkdocs.yml"), "--site-dir", str(site)],
                          cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout}\n{done.stderr}"
    cli = (site / "reference" / "cli" / "index.html").read_text(encoding="utf-8")
    assert "citybrain city check" in cli and "citybrain access client-config" in cli
    assert "CITYBRAIN_BOOTSTRAP_SERVERS" in (site / "reference" / "settings" / "index.html").read_text(encoding="utf-8")
    assert "dispatch.police.work_order.v1" in (site / "reference" / "topics" / "index.html").read_text(encoding="utf-8")
    assert "csv-row-shape" in (site / "reference" / "dead-letters" / "index.html").read_text(encoding="utf-8")
    assert (site / "zh" / "tutorials" / "demo" / "index.html").exists()
    leaks = [str(p.relative_to(site)) for p in site.rglob("*") if p.suffix in (".html", ".json")
             and str(PROJECT_ROOT) in p.read_text(encoding="utf-8", errors="replace")]
    assert not leaks, f"pages naming this checkout's path {PROJECT_ROOT}: {leaks}"


def test_the_docs_sources_name_no_machine_path() -> None:
    sources = [PROJECT_ROOT / "README.md", PROJECT_ROOT / "mkdocs.yml", *DOCS.rglob("*.md")]
    leaks = [str(p.relative_to(PROJECT_ROOT)) for p in sources
             if re.search(r"(?<![\w.])/(work|tmp|home|root|Users)/", p.read_text(encoding="utf-8"))]
    assert not leaks, f"docs naming a machine's paths: {leaks}. Fix: write paths relative to the repository."


def test_the_tutorials_show_commands_and_each_is_one_the_command_line_takes() -> None:
    commands = tutorial_commands()
    pages = {page for page, _ in commands}
    assert len(pages) == len(TUTORIALS) >= 8, f"tutorials without a `citybrain` command: {set(map(str, TUTORIALS)) - pages}"
    runner = CliRunner()
    problems = []
    for page, line in commands:
        try:
            path, _ = resolve(line)
        except AssertionError as exc:
            problems.append(f"{page}: {exc}")
            continue
        result = runner.invoke(app, [*path, "--help"])
        if result.exit_code != 0:
            problems.append(f"{page}: `citybrain {' '.join(path)} --help` exited {result.exit_code}: {result.output[-300:]}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("line, complaint", [
    ("citybrain city chek mycity", "has no command 'chek'"),
    ("citybrain demo --pak examples/citypacks/linjiang", "has no option --pak"),
    ("citybrain city check", "needs 1 argument(s), got 0"),
    ("citybrain city check a b", "takes 1 argument(s), got 2"),
    ("citybrain access client-config police --jsn > police.json", "has no option --jsn"),
])
def test_a_command_line_the_cli_does_not_take_is_named(line: str, complaint: str) -> None:
    with pytest.raises(AssertionError, match=re.escape(complaint)):
        resolve(line)
