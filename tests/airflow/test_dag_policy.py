"""The DAG policy (Airflow's best practices, astro-cli's DAG tests): every DAG in dags/ imports without
errors, has tags, an owner, at least two retries on every task, ``catchup=False`` and a ``doc_md``; the
DAG files print nothing (task output goes through logging) and parsing them imports nothing heavy (the
scheduler parses them every few seconds: Arrow, DuckDB, Great Expectations and the Kafka clients belong
inside the tasks). Each rule is shown to refuse a DAG file built to break it.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

from citybrain.settings import PROJECT_ROOT

DAGS = PROJECT_ROOT / "dags"
MIN_RETRIES = 2
#: Top-level packages a DAG file must not import while it is parsed: each takes long to import or
#: opens connections, and only a task needs it.
HEAVY = ("aiokafka", "duckdb", "faust", "great_expectations", "kafka", "pandas", "polars", "pyarrow")

#: Run in a fresh interpreter: imports each DAG file in turn and writes, per file, the heavy packages that
#: importing it loaded first, each with the module whose import statement pulled it in. Airflow's own SDK
#: is imported before, so it is not blamed on a file.
_PROBE = """
import importlib.util, json, sys
from pathlib import Path

folder, heavy, out = Path(sys.argv[1]), set(sys.argv[2].split(",")), Path(sys.argv[3])
sys.path.insert(0, str(folder))          # as Airflow puts the DAG folder on the path
importer = {}


class Blame:                              # which module first imports each heavy package
    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        if top in heavy and top not in importer:
            frame = sys._getframe(1)
            while frame and frame.f_globals.get("__name__", "").startswith(("importlib", "_frozen_importlib")):
                frame = frame.f_back
            importer[top] = frame.f_globals.get("__name__", "?") if frame else "?"
        return None


import airflow.sdk  # noqa: E402,F401

sys.meta_path.insert(0, Blame())
found = {}
for path in sorted(folder.glob("*.py")):
    name = f"dag_policy_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    try:
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
    except Exception:
        pass                             # an import error is the DagBag rule's to report
    found[path.name] = {pkg: importer[pkg].replace(name, path.name) for pkg in sorted(importer)
                        if not any(pkg in seen for seen in found.values())}
out.write_text(json.dumps(found))
"""


class Problem(NamedTuple):
    """A broken rule: where (a DAG id or a file name), which rule, and what to do about it."""

    where: str
    rule: str
    detail: str


def dagbag_problems(folder: Path) -> list[Problem]:
    """The rules Airflow's DagBag can answer: import errors, tags, owner, retries, catchup, doc_md."""
    from airflow.configuration import conf
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(folder))
    problems = [Problem(Path(path).name, "import", f"{error.strip().splitlines()[-1]}. Fix: make the file import "
                        "cleanly (`airflow dags list-import-errors` shows the traceback).")
                for path, error in sorted(bag.import_errors.items())]
    if not bag.dags and not bag.import_errors:
        problems.append(Problem(folder.name, "dags", f"no DAG found in {folder}. Fix: point the policy at the DAG folder."))
    default_owner = conf.get("operators", "default_owner")
    for dag_id, dag in sorted(bag.dags.items()):
        if not dag.tags:
            problems.append(Problem(dag_id, "tags", "no tags. Fix: `tags=[\"citybrain\", <room>]` on the DAG."))
        unowned = sorted(t.task_id for t in dag.tasks if not t.owner or t.owner == default_owner)
        if unowned:
            problems.append(Problem(dag_id, "owner", f"task(s) {', '.join(unowned)} have Airflow's default owner "
                                    f"{default_owner!r}. Fix: `\"owner\": \"citybrain-<room>\"` in default_args."))
        few = sorted(f"{t.task_id}={t.retries}" for t in dag.tasks if (t.retries or 0) < MIN_RETRIES)
        if few:
            problems.append(Problem(dag_id, "retries", f"task retries {', '.join(few)} below {MIN_RETRIES}. Fix: "
                                    f"`\"retries\": {MIN_RETRIES}` in default_args, and no lower retries on a task."))
        if dag.catchup is not False:
            problems.append(Problem(dag_id, "catchup", f"catchup={dag.catchup!r}: a new or paused DAG would run "
                                    "every missed interval. Fix: `catchup=False`."))
        if not (dag.doc_md or "").strip():
            problems.append(Problem(dag_id, "doc_md", "no documentation in the UI. Fix: `doc_md=__doc__` with a "
                                    "module docstring that says what the DAG does and when it runs."))
    return problems


def print_problems(folder: Path) -> list[Problem]:
    """``print`` in a DAG file: task output goes through ``logging`` (STYLE.md: no print outside the CLI)."""
    problems = []
    for path in sorted(folder.glob("*.py")):
        try:
            tree = ast.parse(path.read_text(), filename=str(path))
        except SyntaxError:
            continue                     # the DagBag rule reports it
        lines = [node.lineno for node in ast.walk(tree)
                 if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print"]
        if lines:
            problems.append(Problem(path.name, "print", f"print() on line(s) {', '.join(map(str, sorted(lines)))}. "
                                    "Fix: `log = logging.getLogger(__name__)` and `log.info(...)`."))
    return problems


def parse_time_problems(folder: Path, scratch: Path) -> list[Problem]:
    """Heavy packages imported while the DAG files are parsed, by the file that pulled each in first."""
    out = scratch / "parse_time_imports.json"
    done = subprocess.run([sys.executable, "-c", _PROBE, str(folder), ",".join(HEAVY), str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"the parse-time import probe failed:\n{done.stderr[-3000:]}"
    return [Problem(name, "heavy_import", "parsing it imports " + ", ".join(f"{pkg} (imported by {by})"
                                                                     for pkg, by in heavy.items())
                    + ". Fix: import it inside the task, or lazily in the module that imports it.")
            for name, heavy in json.loads(out.read_text()).items() if heavy]


def check(folder: Path, scratch: Path) -> list[Problem]:
    """Every rule of the policy over the DAG files of ``folder``."""
    return dagbag_problems(folder) + print_problems(folder) + parse_time_problems(folder, scratch)


def _report(problems: list[Problem]) -> str:
    return "\n".join(f"{p.where}: [{p.rule}] {p.detail}" for p in problems)


def test_every_dag_imports_and_has_tags_an_owner_retries_no_catchup_and_docs() -> None:
    problems = dagbag_problems(DAGS)
    assert not problems, _report(problems)


def test_the_dag_files_log_rather_than_print() -> None:
    problems = print_problems(DAGS)
    assert not problems, _report(problems)


def test_parsing_the_dag_files_imports_nothing_heavy(tmp_path: Path) -> None:
    problems = parse_time_problems(DAGS, tmp_path)
    assert not problems, _report(problems)


GOOD = '''"""{dag_id}: a DAG that keeps every rule of the policy."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

from airflow.sdk import dag, task

log = logging.getLogger(__name__)


@dag(dag_id="{dag_id}", schedule=None, start_date=datetime(2026, 1, 1, tzinfo=timezone.utc), catchup=False,
     tags=["citybrain"], doc_md=__doc__,
     default_args={{"owner": "citybrain-test", "retries": 2, "retry_delay": timedelta(minutes=1)}})
def {dag_id}():
    @task
    def work() -> int:
        log.info("working")
        return 1

    work()


{dag_id}()
'''

#: One DAG file per rule, each the good one with a single thing broken: (file stem, text replaced, by, rule).
BROKEN = [
    ("import_error", "import dag, task", "import dag, task, no_such_name", "import"),
    ("no_tags", 'tags=["citybrain"]', "tags=[]", "tags"),
    ("no_owner", '"owner": "citybrain-test", ', "", "owner"),
    ("one_retry", '"retries": 2', '"retries": 1', "retries"),
    ("task_without_retries", "    @task\n", "    @task(retries=0)\n", "retries"),
    ("catches_up", "catchup=False", "catchup=True", "catchup"),
    ("no_doc", "doc_md=__doc__", "doc_md=None", "doc_md"),
    ("prints", 'log.info("working")', 'print("working")', "print"),
    ("heavy", "import logging\n", "import logging\n\nimport pyarrow  # noqa: F401\n", "heavy_import"),
]


def test_the_policy_refuses_a_dag_file_that_breaks_any_one_rule(tmp_path: Path) -> None:
    """Each rule can fail: next to a DAG that keeps them all, each file breaks exactly one and is refused for it."""
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "good.py").write_text(GOOD.format(dag_id="good"))
    for stem, old, new, _rule in BROKEN:
        good = GOOD.format(dag_id=stem)
        assert old in good, f"{stem}: the good DAG no longer holds {old!r}; update BROKEN"
        (dags / f"{stem}.py").write_text(good.replace(old, new, 1))
    found = {(p.where, p.rule) for p in check(dags, tmp_path)}
    by_file = {"import": "import_error.py", "print": "prints.py", "heavy_import": "heavy.py"}
    assert found == {(by_file.get(rule, stem), rule) for stem, _old, _new, rule in BROKEN}


def test_an_empty_dag_folder_is_refused_rather_than_passed(tmp_path: Path) -> None:
    assert [p.rule for p in dagbag_problems(tmp_path)] == ["dags"]

