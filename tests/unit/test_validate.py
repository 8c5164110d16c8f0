"""Compiled validation: every rejection names the field, the rule and a value excerpt."""

from __future__ import annotations

from typing import Any

import pytest

from citybrain.contracts.model import Contract
from citybrain.contracts.validate import RecordValidator


def test_examples_are_valid(contracts: dict[str, Contract]) -> None:
    for c in contracts.values():
        check = RecordValidator(c)
        for example in c.examples:
            assert check(example) is None, (c.topic, check(example))


@pytest.mark.parametrize("change, rule, field, excerpt", [
    ({"pm25": 99999}, "maximum", "pm25", "99999"),
    ({"pm25": "high"}, "type", "pm25", "high"),
    ({"colour": "grey"}, "unknown-field", "colour", "grey"),
    ({"type": "AirQualityForecast"}, "const", "type", "AirQualityForecast"),
    ({"dateObserved": "yesterday"}, "format", "dateObserved", "yesterday"),
    ({"location": {"type": "Point", "coordinates": [1.0]}}, "minItems", "location.coordinates", "[1.0]"),
    ({"location": {"type": "Point", "coordinates": [1.0, 2.0], "z": 1}}, "unknown-field", "location.z", "1"),
])
def test_rejection_names_field_rule_and_value(air: Contract, change: dict[str, Any], rule: str, field: str, excerpt: str) -> None:
    record = {**air.examples[0], **change}
    rejection = RecordValidator(air)(record)
    assert rejection is not None
    assert (rejection.rule, rejection.field) == (rule, field)
    assert excerpt in rejection.value_excerpt
    assert field.split(".")[-1] in rejection.message and rejection.fix


def test_missing_required_field_is_named(air: Contract) -> None:
    record = dict(air.examples[0])
    del record["dateObserved"]
    rejection = RecordValidator(air)(record)
    assert rejection is not None and (rejection.rule, rejection.field) == ("required", "dateObserved")


def test_a_reading_needs_a_position_or_a_device(air: Contract) -> None:
    """The models make both optional; CityBrain needs one of them to place a reading."""
    check = RecordValidator(air)
    record = dict(air.examples[0])
    assert check({k: v for k, v in record.items() if k != "refDevice"}) is None
    assert check({k: v for k, v in record.items() if k != "location"}) is None
    rejection = check({k: v for k, v in record.items() if k not in ("location", "refDevice")})
    assert rejection is not None and rejection.rule == "required"
    assert "location" in rejection.message and "refDevice" in rejection.message and rejection.fix


def test_long_values_are_cut_in_excerpts(air: Contract) -> None:
    rejection = RecordValidator(air)({**air.examples[0], "refDevice": "x" * 5000})
    assert rejection is not None and rejection.rule == "maxLength" and len(rejection.value_excerpt) <= 120
