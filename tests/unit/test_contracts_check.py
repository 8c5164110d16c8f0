"""`contracts check` against git history: breaking changes without a new major fail, with the field and rule."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from citybrain.contracts.check import check
from tests.conftest import SCHEMAS

FILE = "raw.hotline.ticket_event.v1.yaml"


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def _repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    (repo / "schemas").mkdir(parents=True)
    doc = yaml.safe_load((SCHEMAS / FILE).read_text(encoding="utf-8"))
    doc["version"] = "1.0.0"   # released as 1.0.0 here, whatever minor the contract is at today
    (repo / "schemas" / FILE).write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), encoding="utf-8")
    _git(repo, "init", "-q")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@example.org", "add", ".")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-qm", "release 1.0.0")
    return repo


def _edit(repo: Path, fn) -> None:  # type: ignore[no-untyped-def]
    path = repo / "schemas" / FILE
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    fn(doc)
    path.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), encoding="utf-8")


def _commit(repo: Path) -> None:
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-qam", "change")


def _remove_reopened(doc) -> None:  # type: ignore[no-untyped-def]
    doc["schema"]["properties"]["event_type"]["enum"].remove("reopened")
    doc["version"] = "1.1.0"


def test_committed_enum_removal_without_new_major_fails(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    _edit(repo, _remove_reopened)
    _commit(repo)  # caught on main too, not only in a working tree
    report = check(repo / "schemas")
    assert not report.ok
    [problem] = report.problems
    assert "field `event_type`" in problem and "enum-value-removed" in problem and "'reopened'" in problem
    assert "raw.hotline.ticket_event.v2" in problem  # the fix names the new major


def test_compatible_change_with_minor_bump_passes(tmp_path: Path) -> None:
    repo = _repo(tmp_path)

    def add_optional(doc):  # type: ignore[no-untyped-def]
        doc["schema"]["properties"]["channel"] = {"type": "string", "maxLength": 20, "x-classification": "public"}
        doc["version"] = "1.1.0"
    _edit(repo, add_optional)
    _commit(repo)
    report = check(repo / "schemas")
    assert report.ok, report.problems
    assert report.compared == [("raw.hotline.ticket_event.v1", "1.0.0", "1.1.0")]


def test_change_without_version_bump_fails(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    _edit(repo, lambda d: d["schema"]["properties"]["note"].update({"maxLength": 3000}))
    report = check(repo / "schemas")
    assert any("version is still 1.0.0" in p for p in report.problems), report.problems


def test_made_required_fails_and_new_major_file_passes(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    _edit(repo, lambda d: (d["schema"]["required"].append("department"), d.update(version="1.1.0")))
    assert any("optional-made-required" in p and "`department`" in p for p in check(repo / "schemas").problems)

    # The right way: keep v1 as released, publish the breaking change as a new major file.
    _git(repo, "checkout", "--", f"schemas/{FILE}")
    v2 = yaml.safe_load((repo / "schemas" / FILE).read_text(encoding="utf-8"))
    v2["version"] = "2.0.0"
    v2["schema"]["required"].append("department")
    for example in v2["examples"]:
        example.setdefault("department", "hotline_12345")
    (repo / "schemas" / "raw.hotline.ticket_event.v2.yaml").write_text(yaml.safe_dump(v2, allow_unicode=True), encoding="utf-8")
    report = check(repo / "schemas")
    assert report.ok, report.problems
    assert "raw.hotline.ticket_event.v2" in report.new


def test_deleting_a_released_contract_fails(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    (repo / "schemas" / FILE).unlink()
    assert any("was deleted" in p for p in check(repo / "schemas").problems)


def test_outside_git_is_reported_not_passed(tmp_path: Path) -> None:
    (tmp_path / "schemas").mkdir()
    shutil.copy(SCHEMAS / FILE, tmp_path / "schemas" / FILE)
    report = check(tmp_path / "schemas")
    assert not report.ok and not report.git_checked
