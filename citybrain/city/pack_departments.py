"""A city pack's own departments: what ``citybrain city import`` adds to the platform for the departments a
pack declares beyond CityBrain's built-in roles, made from the roles' templates.

For each such department (a 园林绿化局 as ``parks``):

- its dispatch contract ``dispatch.<id>.work_order.v1``, from the roles' template
  (:func:`citybrain.contracts.dispatch.dispatch_contract_text`: same version, same shape);
- its broker principal ``dept-<id>``, whose password is generated on the broker's reconciliation
  (``citybrain access apply``) as every department's is;
- its grants (:func:`citybrain.access.grants.department_grants`): its work orders, which carry the
  tickets and the fused city events in its remit, as the roles without feeds of their own have them.

``city check`` shows the plan (:func:`creation_plan`) and judges it (:func:`department_problems`: a
contract written from the names must load, lint and stay compatible with the one an earlier import
wrote); ``city import`` writes it into the state's city folder (:func:`write_departments`):
``departments.json``, ``contracts/`` and ``access.yaml``, where the contract loader
(:func:`citybrain.contracts.model.load_platform`) and the access model (:func:`citybrain.access.grants.load`)
find them, so topic creation, the stream workers, the lake, quality and the operations view take them
as they take the roles'. What an earlier pack added stays when a newer one leaves it out: its topic
keeps its history, as a withdrawn department's record does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from citybrain.access.grants import (CATALOG_TOPIC, CITY_ACCESS_FILE, city_access_text, department_grants,
                                     department_principal)
from citybrain.city.pack import Pack, Problem
from citybrain.contracts.compat import breaking
from citybrain.contracts.departments import CITY_DEPARTMENTS_FILE, DEPARTMENTS, city_departments
from citybrain.contracts.dispatch import dispatch_contract_text
from citybrain.contracts.lint import lint
from citybrain.contracts.model import Contract, ContractError, load_contract, load_contract_text
from citybrain.contracts.topics import work_orders

__all__ = ["Creation", "creation_plan", "department_problems", "own_departments", "write_departments"]


@dataclass(frozen=True)
class Creation:
    """What import makes for one of the pack's own departments: its dispatch topic (with its contract), its
    principal and that principal's grants (``read TOPIC`` / ``read group PREFIX*``)."""

    department: str
    name: str
    name_en: str
    topic: str
    principal: str
    grants: tuple[str, ...]


def own_departments(pack: Pack) -> dict[str, tuple[str, str]]:
    """The pack's departments beyond the built-in roles: id -> (name, English name; the name when it has none)."""
    return {d["department_id"]: (d["name"], d.get("name_en") or d["name"]) for d in pack.departments
            if isinstance(d, dict) and d.get("department_id") not in DEPARTMENTS}


def creation_plan(pack: Pack) -> list[Creation]:
    """What importing the pack would create for its own departments, one entry each."""
    plan = []
    for dept, (name, name_en) in own_departments(pack).items():
        principal = department_principal(dept)
        grants = [f"read {g['read']}" for g in department_grants(dept)]
        grants += [f"read {CATALOG_TOPIC}", f"read group {principal}.*"]
        plan.append(Creation(dept, name, name_en, work_orders(dept), principal, tuple(grants)))
    return plan


def _contract(dept: str, names: tuple[str, str]) -> Contract:
    text = dispatch_contract_text(dept, names)
    return load_contract_text(text, Path(f"{work_orders(dept)}.yaml"))


def department_problems(pack: Pack, contracts_dir: Path) -> list[Problem]:
    """The pack's own departments whose dispatch contract, written from their names, would not load, lint or
    match the template's title, or would break the contract an earlier import wrote into ``contracts_dir``."""
    problems: list[Problem] = []
    own = own_departments(pack)
    lines = {d.get("department_id"): f"line {n}" for n, d in enumerate(pack.departments, 1) if isinstance(d, dict)}
    known = {**DEPARTMENTS, **own}
    for dept, names in own.items():
        where = lines[dept]
        try:
            contract = _contract(dept, names)
        except ContractError as exc:
            contract, found = None, [str(exc)]
        else:
            found = lint(contract, known)
            if not found and contract.raw["title"] != f"Work orders dispatched to {names[1]} ({names[0]})":
                found = [f"the title reads {contract.raw['title']!r}"]
        if found:
            problems.append(Problem(
                "departments.jsonl", where, "department-names",
                f"department {dept}'s names ({names[0]!r}, {names[1]!r}) do not make a valid dispatch contract "
                f"{work_orders(dept)}: {found[0]}.",
                "write the names as plain text, without ': ', ' #', quotes or line breaks (YAML would read them as "
                "syntax)."))
            continue
        assert contract is not None
        earlier = contracts_dir / f"{contract.topic}.yaml"
        if not earlier.exists():
            continue
        old = load_contract(earlier)
        changes = breaking(old.schema, contract.schema, contract.compatibility)
        if changes:
            problems.append(Problem(
                "departments.jsonl", where, "breaking-change",
                f"department {dept}'s dispatch contract as imported before ({old.version}) and as this platform "
                f"writes it ({contract.version}) differ in a way that breaks its readers: {changes[0].message}.",
                "upgrade the platform's template with a compatible change (a new major version is a new topic), "
                "or keep importing with the platform that wrote it."))
    return problems


def write_departments(city_dir: Path, contracts_dir: Path, pack: Pack) -> list[Path]:
    """Write what the pack's own departments need (their record, dispatch contracts and grants), keeping what an
    earlier import wrote for departments this pack leaves out; the files written, none when the pack has no
    department beyond the roles and none was imported before."""
    departments = {**city_departments(city_dir), **own_departments(pack)}
    if not departments:
        return []
    written = []
    city_dir.mkdir(parents=True, exist_ok=True)
    contracts_dir.mkdir(parents=True, exist_ok=True)
    for dept, names in departments.items():
        path = contracts_dir / f"{work_orders(dept)}.yaml"
        path.write_text(dispatch_contract_text(dept, names), encoding="utf-8")
        written.append(path)
    record = city_dir / CITY_DEPARTMENTS_FILE
    record.write_text(json.dumps({d: {"name": zh, "name_en": en} for d, (zh, en) in departments.items()},
                                 ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    grants = city_dir / CITY_ACCESS_FILE
    grants.write_text(city_access_text(departments), encoding="utf-8")
    return [*written, record, grants]
