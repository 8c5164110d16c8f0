"""CityBrain installed from its wheel works outside a checkout (issue 34, item 1).

The wheel is built from the repository (offline: no build isolation, so the set-up's setuptools builds it), installed
into a fresh virtual environment in a temporary folder that borrows the set-up's installed dependencies (a ``.pth``
file, nothing downloaded), and its commands run from another temporary folder with no PYTHONPATH: the contracts, the
city-pack schemas, the access and subscription templates, the fusion worker's module and the view's static files must
all come from the package. Also here: a deployment's config folder before the templates, the vendored ECharts as
its README pins it, and the constraints files against pyproject.toml's requirements.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from citybrain.settings import PROJECT_ROOT, load_settings, packaged

DATA = PROJECT_ROOT / "citybrain" / "data"
LINJIANG = PROJECT_ROOT / "examples" / "citypacks" / "linjiang"

#: Serves the view's static files from the installed package, as a browser asks for them, and prints what it got.
VIEW_SCRIPT = """
import asyncio, hashlib, sys
from aiohttp.test_utils import TestClient, TestServer
from citybrain import access
from citybrain.access.trail import AuditTrail
from citybrain.contracts.model import load_platform
from citybrain.settings import get_settings
from citybrain.ui.server import OperationsView

settings = get_settings()
contracts = load_platform(settings)
view = OperationsView(settings, contracts, access.load(settings.access_file, contracts),
                      AuditTrail("ui", settings.state_dir / "audit", lambda record: None))

async def fetch():
    async with TestClient(TestServer(view.app())) as client:
        for route in ("/", "/static/app.js", "/vendor/echarts.min.js", "/vendor/ECHARTS-LICENSE"):
            answer = await client.get(route)
            print(route, answer.status, hashlib.sha256(await answer.read()).hexdigest())

asyncio.run(fetch())
"""


def _source_tree(dest: Path) -> Path:
    """What the wheel is built from: pyproject, README, the package, and the repository's folders its data links to."""
    dest.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(PROJECT_ROOT / name, dest / name)
    shutil.copytree(PROJECT_ROOT / "citybrain", dest / "citybrain", symlinks=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    for link in (p for p in DATA.iterdir() if p.is_symlink()):
        target = link.resolve().relative_to(PROJECT_ROOT)
        (dest / target).parent.mkdir(parents=True, exist_ok=True)
        if link.is_dir():
            shutil.copytree(link.resolve(), dest / target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(link.resolve(), dest / target)
    return dest


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, str]]:
    """(the wheel, the fresh environment, the environment variables of a shell outside the checkout)."""
    have = metadata.version("setuptools")
    assert int(have.split(".")[0]) >= 77, (f"setuptools {have} cannot build the wheel (pyproject.toml needs >= 77). "
                                           "Fix: `make setup` installs the dev extra's setuptools.")
    root = tmp_path_factory.mktemp("wheel")
    source = _source_tree(root / "source")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    built = subprocess.run([*pip, "wheel", "--no-deps", "--no-index", "--no-build-isolation", "-w", str(root / "dist"),
                            str(source)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    wheel = next((root / "dist").glob("citybrain-*.whl"))

    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    done = subprocess.run([*pip, "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    # The dependencies the set-up installed, after the fresh environment's own site-packages (so its citybrain wins);
    # a path in a .pth is only added to sys.path, so the set-up's editable install of the checkout is not.
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    borrowed = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    assert borrowed, f"no site-packages on this interpreter's path ({sysconfig.get_paths()['purelib']})"
    Path(purelib, "zz-citybrain-deps.pth").write_text("\n".join(borrowed) + "\n")

    home = root / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("CITYBRAIN_")}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", HOME=str(home),
               CITYBRAIN_STATE_DIR=str(root / "state"), CITYBRAIN_METRICS_PORT="0")
    return wheel, venv, env


def _run(venv: Path, env: dict[str, str], cwd: Path, *argv: str, extra: dict[str, str] | None = None
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(venv / "bin" / argv[0]), *argv[1:]], cwd=cwd, env={**env, **(extra or {})},
                          capture_output=True, text=True, timeout=120)


def test_the_wheel_carries_every_file_of_the_package_data(installed: tuple[Path, Path, dict[str, str]]) -> None:
    wheel, _venv, _env = installed
    with zipfile.ZipFile(wheel) as whl:
        names = set(whl.namelist())
        shipped = {(Path(folder) / f).relative_to(PROJECT_ROOT).as_posix(): Path(folder) / f   # through the links
                   for folder, _dirs, files in os.walk(DATA, followlinks=True) for f in files}
        assert len(shipped) > 150
        assert shipped and set(shipped) <= names, sorted(set(shipped) - names)[:10]
        for name in ("citybrain/data/schemas/citypack/manifest.schema.json", "citybrain/data/echarts/echarts.min.js",
                     "citybrain/data/access.yaml"):
            assert whl.read(name) == shipped[name].read_bytes(), name   # copies of the checkout's files
        assert "citybrain/streams/fusion/__main__.py" in names and "citybrain/ui/static/index.html" in names


def test_the_installed_commands_find_everything_in_the_package(installed: tuple[Path, Path, dict[str, str]],
                                                               tmp_path: Path) -> None:
    _wheel, venv, env = installed
    where = _run(venv, env, tmp_path, "python", "-c", "import citybrain.settings as s; g = s.get_settings(); "
                 "print(s.IN_CHECKOUT, s.__file__, g.schemas_dir, g.access_file, g.subscriptions_file)")
    assert where.returncode == 0, where.stderr
    in_checkout, *paths = where.stdout.split()
    assert in_checkout == "False" and all(p.startswith(str(venv)) for p in paths), where.stdout

    assert _run(venv, env, tmp_path, "citybrain", "--help").returncode == 0
    listed = _run(venv, env, tmp_path, "citybrain", "contracts", "list")
    assert listed.returncode == 0, listed.stderr
    topics = {line.split("\t")[0] for line in listed.stdout.splitlines()[1:]}
    assert topics == {p.stem for p in (PROJECT_ROOT / "schemas").glob("*.yaml")}
    shown = _run(venv, env, tmp_path, "citybrain", "contracts", "show", "raw.hotline.service_request.v1")
    assert shown.returncode == 0 and "phone" in shown.stdout, shown.stderr

    shutil.copytree(LINJIANG, tmp_path / "linjiang")
    checked = _run(venv, env, tmp_path, "citybrain", "city", "check", "linjiang")
    assert checked.returncode == 0 and "passes" in checked.stdout, checked.stdout + checked.stderr
    (tmp_path / "linjiang" / "manifest.json").write_text('{"format": "citybrain.citypack/1"}')
    broken = _run(venv, env, tmp_path, "citybrain", "city", "check", "linjiang")   # the city-pack schemas judge it
    assert broken.returncode != 0 and "manifest.json" in broken.stdout + broken.stderr

    shown = _run(venv, env, tmp_path, "citybrain", "access", "show")
    assert shown.returncode == 0 and "dept-police" in shown.stdout, shown.stderr
    subs = _run(venv, env, tmp_path, "citybrain", "notify", "check")
    assert subs.returncode == 0, subs.stderr


def test_a_deployments_config_folder_comes_before_the_templates(installed: tuple[Path, Path, dict[str, str]],
                                                                 tmp_path: Path) -> None:
    _wheel, venv, env = installed
    config = tmp_path / "etc"
    config.mkdir()
    (config / "access.yaml").write_text("principals:\n  dept-nobody: {department: nowhere}\n")
    refused = _run(venv, env, tmp_path, "citybrain", "access", "show", extra={"CITYBRAIN_CONFIG_DIR": str(config)})
    assert refused.returncode != 0 and "access.yaml" in refused.stdout + refused.stderr, refused.stdout
    subs = _run(venv, env, tmp_path, "citybrain", "notify", "check", extra={"CITYBRAIN_CONFIG_DIR": str(config)})
    assert subs.returncode != 0   # its subscriptions are the template's, checked against the broken access file


def test_the_fusion_worker_runs_from_the_package(installed: tuple[Path, Path, dict[str, str]], tmp_path: Path) -> None:
    """Regression: `citybrain streams fusion` started streams/fusion_worker.py of the checkout, absent from an install."""
    _wheel, venv, env = installed
    # An external cluster's address: the worker's command line builds its app without the embedded broker's
    # credentials; --help stops before it connects.
    helped = _run(venv, env, tmp_path, "python", "-m", "citybrain.streams.fusion", "--help",
                  extra={"CITYBRAIN_BOOTSTRAP_SERVERS": "127.0.0.1:9"})
    assert helped.returncode == 0 and "worker" in helped.stdout, helped.stderr[-2000:]


def test_the_view_serves_its_pages_and_echarts_from_the_package(installed: tuple[Path, Path, dict[str, str]],
                                                                 tmp_path: Path) -> None:
    _wheel, venv, env = installed
    served = _run(venv, env, tmp_path, "python", "-c", VIEW_SCRIPT)
    assert served.returncode == 0, served.stderr[-2000:]
    answers = {route: (int(status), digest) for route, status, digest in
               (line.split() for line in served.stdout.splitlines())}
    assert {route: status for route, (status, _) in answers.items()} == dict.fromkeys(answers, 200)
    assert answers["/vendor/echarts.min.js"][1] == _sha256(DATA / "echarts" / "echarts.min.js")
    assert answers["/vendor/ECHARTS-LICENSE"][1] == _sha256(DATA / "echarts" / "LICENSE")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- without a wheel --------------------------------------------------------------------------------


def test_the_checkout_reads_its_own_folders_through_the_package_data() -> None:
    settings = load_settings({})
    assert settings.schemas_dir == PROJECT_ROOT / "schemas" and settings.expectations_dir == PROJECT_ROOT / "expectations"
    assert settings.feeds_dir == PROJECT_ROOT / "infra" / "feeds"
    assert settings.access_file == PROJECT_ROOT / "infra" / "access.yaml"
    assert packaged("schemas", "citypack") == PROJECT_ROOT / "schemas" / "citypack"


def test_a_config_folder_overrides_only_the_files_it_has(tmp_path: Path) -> None:
    (tmp_path / "access.yaml").write_text("principals: {}\n")
    settings = load_settings({"CITYBRAIN_CONFIG_DIR": str(tmp_path)})
    assert settings.access_file == tmp_path / "access.yaml"
    assert settings.subscriptions_file == packaged("subscriptions.yaml")


def test_the_vendored_echarts_is_the_release_its_readme_pins() -> None:
    pinned = dict(re.findall(r"\| `([\w.]+)` \| `([0-9a-f]{64})` \|", (DATA / "README.md").read_text(encoding="utf-8")))
    assert set(pinned) == {"echarts.min.js", "LICENSE", "NOTICE"}
    assert {name: _sha256(DATA / "echarts" / name) for name in pinned} == pinned


def unmet(requirements: list[str], constraints: str) -> list[str]:
    """The requirements a constraints file leaves unpinned or pins to a version they do not allow."""
    pins = {}
    for line in constraints.splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[re.sub(r"[-_.]+", "-", name.strip().lower())] = version.strip()
    missing = []
    for text in requirements:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate():
            continue
        version = pins.get(re.sub(r"[-_.]+", "-", req.name.lower()))
        if version is None or not req.specifier.contains(version, prereleases=True):
            missing.append(f"{text} (pinned: {version})")
    return missing


@pytest.mark.parametrize("env", ["streams", "airflow"])
def test_each_environments_constraints_pin_what_pyproject_requires(env: str) -> None:
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    required = [*project["dependencies"], *project["optional-dependencies"][env]]
    constraints = (PROJECT_ROOT / "infra" / "constraints" / f"{env}.txt").read_text()
    assert not unmet(required, constraints), f"Fix: `make constraints` after `make setup`: {unmet(required, constraints)}"
    assert not re.search(r"^(-e |citybrain\b)", constraints, re.M), "the constraints must not pin CityBrain itself"


def test_a_constraint_outside_a_requirement_is_found() -> None:
    assert unmet(["pyarrow>=17", "rich>=13"], "pyarrow==16.1.0\n") == ["pyarrow>=17 (pinned: 16.1.0)",
                                                                      "rich>=13 (pinned: None)"]
    assert unmet(["Pint>=0.24,<1"], "# a note\npint==0.24.4\n") == []
