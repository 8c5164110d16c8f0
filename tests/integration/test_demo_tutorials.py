"""Every command a tutorial shows is run, as the reader would type it, right after the demo's day (this file runs after
test_demo.py and before the other tests add their own data to the session's broker).

The commands are read from the tutorials' shell blocks (English and Chinese), so a tutorial that
drifts from the command line fails here. A command that cannot run in the shared test session (it
serves until interrupted, stops the session's broker, or names the reader's own folder) is listed in
``ELSEWHERE`` with the test that runs it instead; a command that is neither run nor listed fails.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from citybrain.settings import PROJECT_ROOT
from tests.integration.conftest import TEST_ENV

pytestmark = pytest.mark.integration

DOCS = PROJECT_ROOT / "docs"
TUTORIALS = sorted((DOCS / "tutorials").glob("*.md")) + sorted((DOCS / "zh" / "tutorials").glob("*.md"))
SHELL_BLOCK = re.compile(r"^```(?:bash|sh|console)\n(.*?)^```", re.M | re.S)

#: Commands run by another test (or not runnable beside it), by the start of their line: why, and where.
ELSEWHERE = {
    "make demo": "the demo fixture runs `citybrain demo` (tests/integration/test_demo.py)",
    "citybrain ui": "serves until interrupted; tests/integration/test_demo_ui.py serves and drives it in a browser",
    "citybrain broker down": "would stop the session's broker; tests/integration/test_second_city.py stops its own",
    "citybrain demo --pack": "a second city's whole demo: tests/integration/test_second_city.py",
    "citybrain city import": "changes the session's reference data; tests/integration/test_city_import.py imports",
    "citybrain dev simulate --pack": "a second city's day: tests/integration/test_second_city.py runs it in its demo",
    "citybrain city check mycity": "the reader's own pack folder; `city check examples/citypacks/linjiang` runs here",
    "citybrain query --pin": "pins a release id of the author's lake; tests/unit/test_scenarios.py pins releases",
    "export CITYBRAIN_LAKE_URI=": "the whole block: a lake on object storage, tests/integration/test_lake_s3.py",
}


def shell_blocks(page: Path) -> list[list[str]]:
    """The command lines of each of a page's shell blocks, in order (comments and expected output left out)."""
    blocks = []
    for block in SHELL_BLOCK.findall(page.read_text(encoding="utf-8")):
        lines = [line.strip().removeprefix("$ ") for line in block.splitlines()]
        blocks.append([line.split("  #", 1)[0].strip() for line in lines if line and not line.startswith("#")])
    return blocks


def shell_lines(page: Path) -> list[str]:
    return [line for block in shell_blocks(page) for line in block]


def runnable(page: Path) -> list[str]:
    """The lines this test runs: a block that starts with a command run elsewhere is left out whole (its
    ``export`` sets what the rest of it needs), else each line run elsewhere."""
    return [line for block in shell_blocks(page) if block and not elsewhere(block[0])
            for line in block if not elsewhere(line)]


def elsewhere(line: str) -> str | None:
    return next((why for start, why in ELSEWHERE.items() if line.startswith(start)), None)


def _expects_refusal(page: Path, line: str) -> bool:
    """The tutorial shows the command refused (its output line starts with ``# refused``)."""
    text = page.read_text(encoding="utf-8")
    at = text.find(line)
    return at >= 0 and text[at + len(line):].lstrip().startswith("# refused")


def test_every_tutorial_has_commands_and_every_skip_is_still_shown() -> None:
    """The lists can fail: a page without commands, or an ELSEWHERE entry no tutorial shows any more."""
    shown = {page.name: shell_lines(page) for page in TUTORIALS}
    assert all(shown.values()), f"tutorials without a shell block: {[p for p, c in shown.items() if not c]}"
    every = [line for lines in shown.values() for line in lines]
    stale = [start for start in ELSEWHERE if not any(line.startswith(start) for line in every)]
    assert not stale, f"ELSEWHERE names commands no tutorial shows: {stale}"


@pytest.mark.timeout(900)
@pytest.mark.parametrize("page", TUTORIALS, ids=lambda p: str(p.relative_to(DOCS)))
def test_the_tutorial_runs_as_written(page: Path, demo, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-2000:]
    for name in ("examples", ".venv"):   # the reader stands in a checkout; files they write land in tmp_path
        (tmp_path / name).symlink_to(PROJECT_ROOT / name)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYBRAIN_")}
    env.update(TEST_ENV)
    env.update(COLUMNS="200", PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
    ran = []
    for line in runnable(page):
        done = subprocess.run(["bash", "-c", line], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        said = (done.stdout + done.stderr)[-3000:]
        if _expects_refusal(page, line):
            assert done.returncode != 0 and "refused" in said, f"{page.name}: `{line}` was not refused:\n{said}"
        else:
            assert done.returncode == 0, f"{page.name}: `{line}` exited {done.returncode}:\n{said}"
        ran.append(line)
    assert ran, f"{page.name}: nothing ran"
