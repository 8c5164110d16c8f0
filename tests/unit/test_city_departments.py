"""Departments are data (issue 31): a city pack may declare a department beyond CityBrain's roles (临江市's
园林绿化局 as ``parks``). ``city check`` shows what import creates for it; import writes its dispatch contract
(the roles' template), its principal and its grants where the contract loader and the access model find them;
a routing rule or service naming an undeclared department, a bad id and names that break the contract are
refused, each naming the file, the line, the rule and the fix. The simulated city gets nothing of it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator

import pytest
import yaml
from typer.testing import CliRunner

from citybrain import access
from citybrain.city.pack import Pack, pack_from_city
from citybrain.city.pack_departments import Creation, creation_plan, department_problems, write_departments
from citybrain.city.pack_import import contract_problems
from citybrain.contracts.compat import diff
from citybrain.contracts.departments import known_departments
from citybrain.contracts.dispatch import dispatch_contract_text
from citybrain.contracts.lint import lint, lint_all
from citybrain.contracts.model import Contract, load_platform
from citybrain.settings import get_settings, load_settings
from citybrain.sim.city import build_city
from tests.unit.test_city_pack import _rules, small_city

PARKS_TOPIC = "dispatch.parks.work_order.v1"


def parks_city() -> Pack:
    """临江市 with its 园林绿化局: a department beyond the roles, a service it answers for (with the city's
    services centre as co-department) and the rule that routes it there."""
    pack = small_city()
    pack.departments.append({"department_id": "parks", "name": "园林绿化局", "name_en": "Parks and Greening Bureau",
                             "remit": ["fallen_tree"]})
    pack.services.append({"service_code": "parks.fallen_tree", "name": "树木倒伏", "group": "parks",
                          "category": "fallen_tree", "department": "parks", "co_departments": ["urban_management"],
                          "sla_hours": 24, "priority": "normal", "keywords": ["倒树"]})
    pack.routing.append({"rule_id": "parks.fallen_tree", "category": "fallen_tree", "service_code": "parks.fallen_tree",
                         "department": "parks", "sla_hours": 24, "priority": "normal"})
    return pack


def test_a_department_beyond_the_roles_passes_the_check_and_the_plan_names_its_topic_principal_and_grants(
        tmp_path: Path, contracts: dict[str, Contract]) -> None:
    pack = parks_city()
    assert _rules(tmp_path, pack) == []
    assert contract_problems(pack, contracts) == []           # its records fit the reference topics
    assert department_problems(pack, tmp_path / "no-earlier-import") == []
    assert creation_plan(pack) == [Creation(
        "parks", "园林绿化局", "Parks and Greening Bureau", PARKS_TOPIC, "dept-parks",
        (f"read {PARKS_TOPIC}", "read dispatch.command.urge.v1", "read dispatch.command.whistle.v1",
         "read dispatch.command.reply.v1", "read catalog.contracts.registry.v1", "read group dept-parks.*"))]


def test_the_simulated_city_declares_no_department_beyond_the_roles_and_import_writes_nothing_for_it(
        tmp_path: Path, contracts: dict[str, Contract]) -> None:
    settings = load_settings({"CITYBRAIN_STATE_DIR": str(tmp_path / "state")})
    pack = pack_from_city(build_city(7))
    assert creation_plan(pack) == []
    assert write_departments(settings.city_dir, settings.city_contracts_dir, pack) == []
    assert not settings.city_dir.exists()
    assert load_platform(settings) == contracts              # the platform runs on the repo's contracts alone


def test_import_writes_the_contract_principal_and_grants_where_contracts_and_access_are_loaded(
        tmp_path: Path, contracts: dict[str, Contract]) -> None:
    settings = load_settings({"CITYBRAIN_STATE_DIR": str(tmp_path / "state")})
    settings.city_dir.mkdir(parents=True)
    written = write_departments(settings.city_dir, settings.city_contracts_dir, parks_city())
    assert [p.name for p in written] == [f"{PARKS_TOPIC}.yaml", "departments.json", "access.yaml"]

    platform = load_platform(settings)
    assert set(platform) == set(contracts) | {PARKS_TOPIC}   # the repo's contracts untouched, the city's beside them
    parks = platform[PARKS_TOPIC]
    roles = contracts["dispatch.police.work_order.v1"].version   # the template's version, the roles' own
    assert (parks.owner, parks.version, parks.raw["title"]) == ("parks", roles, "Work orders dispatched to Parks and "
                                                                "Greening Bureau (园林绿化局)")
    # A contract like any other: lint passes with the city's departments known, and not without them.
    known = known_departments(settings.city_dir)
    assert known["parks"] == ("园林绿化局", "Parks and Greening Bureau") and lint_all(platform, known) == []
    assert any("owner 'parks' is not a known department" in p for p in lint(parks))
    # The roles' shape: against the police's orders only the department's constant differs.
    police = contracts["dispatch.police.work_order.v1"]
    assert {c.field for c in diff(police.schema, parks.schema)} == {"department"}
    assert parks.examples[0]["department"] == "parks" and parks.topic_configs() == police.topic_configs()

    model = access.load(access.ACCESS_FILE, platform, settings.city_dir)
    assert model.principal_of("parks") == "dept-parks"
    assert set(access.topics_of(model, "dept-parks", platform)) == {
        PARKS_TOPIC, "catalog.contracts.registry.v1", "dispatch.command.urge.v1", "dispatch.command.whistle.v1",
        "dispatch.command.reply.v1"}
    # Among departments, only its own; the silver lake sink copies every dispatch topic (its `dispatch.` prefix).
    assert {g.principal for g in access.who_can(model, PARKS_TOPIC)} == {"dept-parks", "svc-lake-silver"}
    roles_only = access.declared_acl_set(access.load(access.ACCESS_FILE, contracts, tmp_path / "no-city"))
    assert access.declared_acl_set(model) - roles_only == {
        ("User:dept-parks", "TOPIC", PARKS_TOPIC, "LITERAL", "READ"),
        ("User:dept-parks", "TOPIC", "catalog.contracts.registry.v1", "LITERAL", "READ"),
        ("User:dept-parks", "TOPIC", "dispatch.command.urge.v1", "LITERAL", "READ"),
        ("User:dept-parks", "TOPIC", "dispatch.command.reply.v1", "LITERAL", "READ"),
        ("User:dept-parks", "TOPIC", "dispatch.command.whistle.v1", "LITERAL", "READ"),
        ("User:dept-parks", "GROUP", "dept-parks.", "PREFIXED", "READ")}
    assert roles_only < access.declared_acl_set(model)        # the roles' ACLs stay as they are


def test_the_citys_access_file_may_only_name_the_citys_own_departments(tmp_path: Path,
                                                                      contracts: dict[str, Contract]) -> None:
    settings = load_settings({"CITYBRAIN_STATE_DIR": str(tmp_path / "state")})
    settings.city_dir.mkdir(parents=True)
    write_departments(settings.city_dir, settings.city_contracts_dir, parks_city())
    (settings.city_dir / "departments.json").write_text("{}")       # the record of parks lost
    with pytest.raises(access.AccessError, match=r"principals.dept-parks.department: 'parks' is not a department"):
        access.load(access.ACCESS_FILE, load_platform(settings), settings.city_dir)
    doc = yaml.safe_load((settings.city_dir / "access.yaml").read_text())
    doc["principals"] = {"dept-police": {"department": "police"}}         # a role's principal declared again
    (settings.city_dir / "departments.json").write_text(json.dumps({"parks": {"name": "园林绿化局", "name_en": "Parks"}}))
    (settings.city_dir / "access.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(access.AccessError, match="dept-police in access.yaml: the principal is already declared"):
        access.load(access.ACCESS_FILE, load_platform(settings), settings.city_dir)


def test_a_routing_rule_or_service_naming_an_undeclared_department_is_refused_naming_field_value_and_fix(
        tmp_path: Path) -> None:
    pack = parks_city()
    pack.departments.pop()                                            # parks routed to, but not declared
    pack.services[-1]["co_departments"] = ["forestry"]
    found = _rules(tmp_path, pack)
    assert found == [("services.jsonl", "line 3", "unknown-department"), ("services.jsonl", "line 3", "unknown-department"),
                     ("routing.jsonl", "line 4", "unknown-department")]
    from citybrain.city.pack_check import check_pack
    _pack, problems = check_pack(tmp_path)
    rule = problems[-1]
    assert "rule parks.fallen_tree: department 'parks' is not a department departments.jsonl declares" in rule.message
    assert rule.fix.startswith("declare 'parks' in departments.jsonl")
    assert "service parks.fallen_tree: co_departments 'forestry' is not a department" in problems[1].message


@pytest.mark.parametrize("bad, rule", [("parks_", "department-id"), ("parks__greening", "department-id"),
                                       ("territorial", "department-id"), ("Parks", "pattern")])
def test_a_bad_department_id_is_refused(tmp_path: Path, bad: str, rule: str) -> None:
    pack = parks_city()
    pack.departments[-1]["department_id"] = bad
    for record in (pack.services[-1], pack.routing[-1]):
        record["department"] = bad if rule != "pattern" else "parks"
    found = [r for r in _rules(tmp_path, pack) if r[0] == "departments.jsonl"]
    assert found == [("departments.jsonl", "line 4", rule)]


def test_names_that_would_break_the_contract_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    for name_en in ("Parks: Greening", "Parks #1"):
        pack = parks_city()
        pack.departments[-1]["name_en"] = name_en
        problems = department_problems(pack, tmp_path)
        assert [(p.file, p.where, p.rule) for p in problems] == [("departments.jsonl", "line 4", "department-names")]
        assert repr(name_en) in problems[0].message


def test_reimporting_with_new_names_is_compatible_and_a_breaking_earlier_contract_is_named(tmp_path: Path) -> None:
    contracts_dir = tmp_path / "contracts"
    write_departments(tmp_path, contracts_dir, parks_city())
    renamed = parks_city()
    renamed.departments[-1]["name"] = "市园林绿化局"
    assert department_problems(renamed, contracts_dir) == []
    # An earlier import by a platform whose template allowed a third role: the current one would refuse its records.
    path = contracts_dir / f"{PARKS_TOPIC}.yaml"
    path.write_text(dispatch_contract_text("parks", ("园林绿化局", "Parks")).replace("enum: [lead, support]",
                                                                                     "enum: [lead, support, observer]"))
    problems = department_problems(renamed, contracts_dir)
    assert [(p.where, p.rule) for p in problems] == [("line 4", "breaking-change")] and "role" in problems[0].message


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    for key in [k for k in os.environ if k.startswith("CITYBRAIN_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("CITYBRAIN_STATE_DIR", str(tmp_path / "state"))
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def test_city_check_shows_what_import_would_create_as_a_table_and_as_json(cli: CliRunner, tmp_path: Path) -> None:
    from citybrain.cli import app

    parks_city().write(tmp_path / "pack")
    result = cli.invoke(app, ["city", "check", str(tmp_path / "pack"), "--json"])
    assert result.exit_code == 0, result.stdout
    report = json.loads(result.stdout)
    assert report["passed"] and report["creates"] == [{
        "department": "parks", "name": "园林绿化局", "name_en": "Parks and Greening Bureau", "topic": PARKS_TOPIC,
        "principal": "dept-parks",
        "grants": [f"read {PARKS_TOPIC}", "read dispatch.command.urge.v1", "read dispatch.command.whistle.v1",
                   "read dispatch.command.reply.v1", "read catalog.contracts.registry.v1", "read group dept-parks.*"]}]
    table = cli.invoke(app, ["city", "check", str(tmp_path / "pack")])
    assert table.exit_code == 0 and "import creates" in table.stdout and "dept-parks" in table.stdout
