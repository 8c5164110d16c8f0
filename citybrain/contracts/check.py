"""`citybrain contracts check`: lint, then compare each contract with its last released version.

The last released version of a contract is the newest version of its file in git history
whose ``version`` differs from the one in the working tree. A committed breaking change is
therefore caught on ``main`` too, not only on an uncommitted working tree. A contract whose
schema differs from the committed one under the same version fails as "changed without a
version bump".
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from citybrain.contracts.compat import Change, breaking
from citybrain.contracts.lint import lint_all
from citybrain.contracts.model import Contract, ContractError, contract_files, load_all, load_contract_text


@dataclass
class CheckReport:
    problems: list[str] = field(default_factory=list)
    compared: list[tuple[str, str, str]] = field(default_factory=list)  # topic, released, current
    new: list[str] = field(default_factory=list)
    compatible_changes: list[tuple[str, Change]] = field(default_factory=list)
    git_checked: bool = True

    @property
    def ok(self) -> bool:
        return not self.problems


def check(schemas_dir: Path) -> CheckReport:
    report = CheckReport()
    try:
        contracts = load_all(schemas_dir)
    except ContractError as exc:
        report.problems.append(str(exc))
        return report
    report.problems.extend(lint_all(contracts))

    repo = _git_root(schemas_dir)
    if repo is None:
        report.git_checked = False
        report.problems.append(
            f"{schemas_dir} is not inside a git checkout, so contracts cannot be compared with their "
            "released versions. Fix: run the check from a clone of the repository."
        )
        return report
    rel_dir = schemas_dir.resolve().relative_to(repo)

    for contract in contracts.values():
        _check_one(repo, rel_dir, contract, report)

    present = {p.name for p in contract_files(schemas_dir)}
    for name in _committed_files(repo, rel_dir):
        if name in present:
            continue
        old = _load_at(repo, "HEAD", rel_dir / name)
        if old is not None and not old.raw.get("deprecated"):
            report.problems.append(
                f"{name}: contract {old.topic} was deleted while consumers may still read it. "
                "Fix: restore it, mark it `deprecated: true` in one release, and delete it in a later one."
            )
    return report


def _check_one(repo: Path, rel_dir: Path, current: Contract, report: CheckReport) -> None:
    assert current.source is not None
    rel = rel_dir / current.source.name
    where = current.source.name
    head = _load_at(repo, "HEAD", rel)
    if head is not None and head.version == current.version and _fingerprint(head) != _fingerprint(current):
        report.problems.append(
            f"{where}: the schema or topic settings changed but the version is still {current.version}. "
            "Fix: bump the minor version for a compatible change (new major, as a new file, for a breaking one)."
        )
    released = _previous_release(repo, rel, current.version)
    if released is None:
        report.new.append(current.topic)
        return
    report.compared.append((current.topic, released.version, current.version))
    if _version_tuple(current.version) < _version_tuple(released.version):
        report.problems.append(f"{where}: version went down from {released.version} to {current.version}.")
    if released.major != current.major:
        return  # a different topic; the file name lint keeps majors apart
    mode = current.compatibility
    for change in breaking(released.schema, current.schema, mode):
        report.problems.append(
            f"{where}: field `{change.field}`: {change.message} [rule {change.rule}] — this breaks "
            f"{mode} compatibility with released {released.version}. Fix: revert it, or publish the change "
            f"as a new major ({current.id}.v{current.major + 1}, file {current.id}.v{current.major + 1}.yaml) "
            f"and keep {current.topic} until its consumers move."
        )
    for change in _metadata_breaks(released, current):
        report.problems.append(f"{where}: {change}")


def _metadata_breaks(old: Contract, new: Contract) -> list[str]:
    out = []
    # a record the old contract accepted carries its key field (lint makes it required): the new contract must
    # key it by the same field, so a new key list may only start with it
    if old.key_fields[0] != new.key_fields[0] or (len(old.key_fields) > 1 and old.key_fields != new.key_fields):
        out.append(f"key changed from `{old.raw['key']}` to `{new.raw['key']}`; records of one key would "
                   "land on different partitions. Fix: a new major.")
    if new.partitions < old.partitions:
        out.append(f"topic.partitions went down from {old.partitions} to {new.partitions}; Kafka cannot "
                   "remove partitions. Fix: keep it, or a new major.")
    if old.cleanup_policy != new.cleanup_policy:
        out.append(f"topic.cleanup_policy changed from {old.cleanup_policy} to {new.cleanup_policy}; consumers "
                   "rely on it (compacted topics are read as tables). Fix: a new major.")
    return out


def _fingerprint(c: Contract) -> tuple[str, str]:
    import json

    return json.dumps(c.schema, sort_keys=True), json.dumps(c.raw.get("topic"), sort_keys=True)


def _version_tuple(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in v.split("."))


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)


def _git_root(path: Path) -> Path | None:
    proc = _git(path, "rev-parse", "--show-toplevel")
    return Path(proc.stdout.strip()).resolve() if proc.returncode == 0 else None


def _load_at(repo: Path, rev: str, rel: Path) -> Contract | None:
    proc = _git(repo, "show", f"{rev}:{rel.as_posix()}")
    if proc.returncode != 0:
        return None
    try:
        return load_contract_text(proc.stdout, source=rel)
    except ContractError:
        return None


def _previous_release(repo: Path, rel: Path, current_version: str) -> Contract | None:
    """The newest committed version of this file whose version differs from the current one."""
    proc = _git(repo, "log", "--format=%H", "--", rel.as_posix())
    for commit in proc.stdout.split():
        old = _load_at(repo, commit, rel)
        if old is not None and old.version != current_version:
            return old
    return None


def _committed_files(repo: Path, rel_dir: Path) -> list[str]:
    proc = _git(repo, "ls-tree", "--name-only", "HEAD", f"{rel_dir.as_posix()}/")
    return [Path(p).name for p in proc.stdout.split() if p.endswith(".yaml") and not Path(p).name.startswith("_")]
