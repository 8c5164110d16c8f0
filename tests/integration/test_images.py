"""The cluster's container images (infra/docker/*.Dockerfile) build from the same set-up as a developer's machine.

No Docker engine runs here, so the images are not built: each Dockerfile is parsed, what it copies must exist,
its pip install steps are run (``--dry-run``) in the set-up's own environment for that image and must resolve,
and the command it starts must be one the installed platform knows.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import tomllib
from pathlib import Path

import pytest

from citybrain.settings import PROJECT_ROOT, Settings

DOCKER = PROJECT_ROOT / "infra" / "docker"
VENVS = {"streams": PROJECT_ROOT / ".venv" / "streams", "airflow": PROJECT_ROOT / ".venv" / "airflow"}


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    steps: list[tuple[str, str]] = []
    pending = ""
    for line in path.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip("\\").strip() + " "
        if not line.endswith("\\"):
            word, _, rest = pending.strip().partition(" ")
            steps.append((word.upper(), rest.strip()))
            pending = ""
    assert not pending, f"{path.name}: a continued line never ends"
    return steps


@pytest.mark.parametrize("image", sorted(VENVS))
def test_the_image_builds_from_the_setup(image: str) -> None:
    path = DOCKER / f"{image}.Dockerfile"
    steps = instructions(path)
    words = [w for w, _ in steps]
    assert words[0] == "FROM" and re.fullmatch(r"python:3\.11-slim-\w+", steps[0][1]), steps[0]   # the set-up's Python
    for word, args in steps:
        assert word in {"FROM", "RUN", "COPY", "WORKDIR", "ENV", "USER", "EXPOSE", "ENTRYPOINT", "CMD"}, word
        if word == "COPY":
            *sources, _target = shlex.split(args)
            for source in sources:
                assert (PROJECT_ROOT / source).exists(), f"{path.name}: COPY {source}: no such file in the repository"
    user = [a for w, a in steps if w == "USER"]
    assert user and user[-1] not in ("root", "0"), f"{path.name}: the image must not run as root"

    extras = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    python = VENVS[image] / "bin" / "python"
    installs = [a for w, a in steps if w == "RUN" and "pip install" in a]
    assert installs, f"{path.name} installs nothing"
    assert any(f'".[{image}]"' in a for a in installs), f"{path.name} must install the project with its {image} extra"
    for command in installs:
        argv = shlex.split(command)
        for spec in argv:
            m = re.fullmatch(r"\.\[(\w+)\]", spec)
            assert m is None or m[1] in extras, f"{path.name}: no extra {spec} in pyproject.toml"
        assert argv[:4] == ["python", "-m", "pip", "install"], command
        run = subprocess.run([str(python), *argv[1:], "--dry-run", "--quiet", "--disable-pip-version-check"],
                             cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, f"{path.name}: `{command}` does not resolve in the set-up:\n{run.stderr[-2000:]}"

    entry = shlex.split(dict(steps)["ENTRYPOINT"].replace("[", "").replace("]", "").replace(",", " "))
    cmd = shlex.split(dict(steps)["CMD"].replace("[", "").replace("]", "").replace(",", " "))
    run = subprocess.run([str(VENVS[image] / "bin" / entry[0]), *entry[1:], *cmd, "--help"], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, f"{path.name}: `{' '.join(entry + cmd)}` is not a command of the image:\n{run.stderr[-1000:]}"
    if image == "streams":
        exposed = {int(p) for w, a in steps if w == "EXPOSE" for p in a.split()}
        defaults = Settings.model_fields
        assert exposed == {defaults["gateway_port"].default, defaults["ui_port"].default}
