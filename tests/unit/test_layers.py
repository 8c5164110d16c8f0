"""The floor plan holds: rooms import only the rooms below them, and the package root is the foundation only."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from citybrain.settings import PROJECT_ROOT

#: metrics.py: every room from the edge to the notifier counts into it, so it sits below them all (it imports no room).
#: logs.py: every service's log format and rotation, set up before any room runs (it imports only the settings).
FOUNDATION = {"__init__.py", "settings.py", "errors.py", "times.py", "geo.py", "metrics.py", "logs.py"}


def _lint_imports(config: Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("lint-imports")
    return subprocess.run([str(exe), str(config), "--no-cache"], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=120)


def test_imports_point_down_the_layers_of_pyproject() -> None:
    done = _lint_imports(PROJECT_ROOT / "pyproject.toml")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "BROKEN" not in done.stdout and done.stdout.count("KEPT") >= 3


def test_an_upward_import_breaks_the_layers(tmp_path: Path) -> None:
    """The layer check can fail: a copy of the package where the lake imports the quality room is refused."""
    import shutil

    pkg = tmp_path / "citybrain"
    shutil.copytree(PROJECT_ROOT / "citybrain", pkg, ignore=shutil.ignore_patterns("__pycache__", "static"))
    writer = pkg / "lake" / "writer.py"
    writer.write_text(writer.read_text() + "\nfrom citybrain.quality import runner  # noqa: E402,F401\n")
    config = tmp_path / "pyproject.toml"
    config.write_text((PROJECT_ROOT / "pyproject.toml").read_text())
    done = subprocess.run([str(Path(sys.executable).with_name("lint-imports")), str(config), "--no-cache"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert done.returncode != 0, done.stdout
    assert "citybrain.lake.writer -> citybrain.quality.runner" in done.stdout


def test_the_package_root_holds_only_the_foundation() -> None:
    loose = {p.name for p in (PROJECT_ROOT / "citybrain").glob("*.py")} - FOUNDATION
    assert not loose, f"modules at the package root beyond the foundation: {sorted(loose)}; move each into its room"
