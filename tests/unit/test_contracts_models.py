"""The sensor contracts follow their pinned Smart Data Models: generated, complete, and open to the models' own data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from citybrain.contracts.model import Contract, load_all
from citybrain.contracts.sdm import ModelError, model_specs, stale_model_contracts, write_model_contracts
from citybrain.contracts.validate import RecordValidator
from citybrain.gateway.fiware import ENTITY_CONTRACTS
from citybrain.gateway.lint import lint
from citybrain.settings import PROJECT_ROOT

SCHEMAS = PROJECT_ROOT / "schemas"
MODELS = ("AirQualityObserved", "NoiseLevelObserved", "TrafficFlowObserved", "FloodMonitoring", "WeatherObserved")


def test_the_committed_sensor_contracts_are_what_the_generator_writes() -> None:
    assert {s["model"] for s in model_specs(SCHEMAS)} == set(MODELS)
    assert stale_model_contracts(SCHEMAS) == []


def test_a_hand_edit_of_a_generated_contract_is_caught_and_rewritten(tmp_path: Path) -> None:
    schemas = tmp_path / "schemas"
    shutil.copytree(SCHEMAS, schemas)
    path = schemas / "raw.sensor.noise_level.v1.yaml"
    path.write_text(path.read_text(encoding="utf-8").replace("maximum: 160", "maximum: 200", 1), encoding="utf-8")
    (schemas / "raw.sensor.weather.v1.yaml").unlink()
    assert stale_model_contracts(schemas) == ["raw.sensor.noise_level", "raw.sensor.weather"]
    write_model_contracts(schemas)
    assert stale_model_contracts(schemas) == []
    assert path.read_text(encoding="utf-8") == (SCHEMAS / path.name).read_text(encoding="utf-8")


def test_a_missing_pinned_model_file_is_named_with_the_fix(tmp_path: Path) -> None:
    schemas = tmp_path / "schemas"
    shutil.copytree(SCHEMAS, schemas)
    (schemas / "fiware" / "common-schema.json").unlink()
    with pytest.raises(ModelError, match="common-schema.json.*Fix"):
        stale_model_contracts(schemas)


@pytest.mark.parametrize("model", MODELS)
def test_every_attribute_of_the_model_is_in_its_contract(model: str) -> None:
    contract = _contract(model)
    schema = json.loads((SCHEMAS / "fiware" / model / "schema.json").read_text(encoding="utf-8"))
    own = set()
    for part in schema.get("allOf", []):
        own |= set(part.get("properties", {}))
    own |= set(schema.get("properties", {}))
    assert own and own <= set(contract.schema["properties"]), own - set(contract.schema["properties"])
    assert contract.schema["additionalProperties"] is False        # beyond the model: still refused


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("form", ["example.json"])
def test_the_models_own_keyvalues_example_is_valid_after_the_lint(model: str, form: str) -> None:
    contract = _contract(model)
    entity = json.loads((SCHEMAS / "fiware" / model / "examples" / form).read_text(encoding="utf-8"))
    fixed, _warnings = lint(entity, contract.schema["properties"])
    assert RecordValidator(contract)(fixed) is None, RecordValidator(contract)(fixed)


@pytest.mark.parametrize("model, field, bad, rule", [
    ("AirQualityObserved", "pm25", 99999, "maximum"),            # CityBrain's plausible range (the model has none)
    ("WeatherObserved", "precipitation", -1, "minimum"),
    ("NoiseLevelObserved", "colour", "grey", "unknown-field"),   # beyond the model
    ("TrafficFlowObserved", "laneDirection", "sideways", "enum"),  # the model's own enum
])
def test_values_the_model_or_citybrain_rules_out_are_refused_by_name(model: str, field: str, bad: object, rule: str) -> None:
    contract = _contract(model)
    rejection = RecordValidator(contract)({**contract.examples[0], field: bad})
    assert rejection is not None and (rejection.field, rejection.rule) == (field, rule)


def test_a_reading_without_time_or_place_is_refused_naming_both_choices() -> None:
    traffic = _contract("TrafficFlowObserved")
    example = dict(traffic.examples[0])
    for name in ("dateObservedTo", "dateObservedFrom"):
        example.pop(name)
    rejection = RecordValidator(traffic)(example)
    assert rejection is not None and rejection.rule == "required"
    assert "dateObservedTo" in rejection.message and "dateObserved" in rejection.message
    water = _contract("FloodMonitoring")
    placed_by_station = {k: v for k, v in water.examples[0].items() if k not in ("location", "refDevice")}
    assert RecordValidator(water)({**placed_by_station, "stationID": "HZ-1"}) is None
    rejection = RecordValidator(water)(placed_by_station)
    assert rejection is not None and "stationID" in rejection.message


def test_the_overlay_pins_every_model_at_a_commit() -> None:
    overlay = yaml.safe_load((SCHEMAS / "fiware" / "models.yaml").read_text(encoding="utf-8"))
    pinned = {f for source in overlay["sources"] for f in source["files"]}
    assert all(len(source["commit"]) == 40 for source in overlay["sources"])
    assert set(MODELS) <= pinned and set(ENTITY_CONTRACTS) == set(MODELS)


def _contract(model: str) -> Contract:
    contracts = load_all(SCHEMAS)
    return contracts[f"{ENTITY_CONTRACTS[model]}.v1"]
