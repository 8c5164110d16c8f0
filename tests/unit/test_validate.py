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


def _whole_schema_only(contract: Contract) -> Contract:
    """The same contract with every ``anyOf`` branch annotated, so the validator's by-presence pre-check does not
    recognise the groups and every record goes through the whole compiled schema."""
    def annotate(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: ([{**b, "description": "x"} for b in v] if k == "anyOf" else annotate(v))
                    for k, v in node.items()}
        if isinstance(node, list):
            return [annotate(v) for v in node]
        return node
    return Contract({**contract.raw, "schema": annotate(contract.schema)}, contract.source)


class _Mapping(dict):  # type: ignore[type-arg]
    """A dict subclass: not taken by the pre-check."""


_DEVICE_OR_PLACE = [
    {"drop": ("location",)}, {"drop": ("refDevice",)}, {"drop": ()}, {"drop": ("location", "refDevice")},
    {"drop": ("location",), "refDevice": 42}, {"drop": ("location",), "refDevice": None},
    {"drop": ("location",), "refDevice": ""}, {"drop": ("refDevice",), "location": {"type": "Point"}},
    {"drop": ("location", "refDevice", "id")}, {"drop": ("location", "id")}, {"drop": ("location",), "colour": 1},
    {"drop": ("location",), "pm25": -1}, {"drop": ("location", "refDevice"), "colour": 1},
]


@pytest.mark.parametrize("change", _DEVICE_OR_PLACE)
def test_presence_pre_check_agrees_with_the_whole_schema(air: Contract, change: dict[str, Any]) -> None:
    """Records with one, both, none of location/refDevice, of the wrong type, with other faults: the same verdict
    and message whether the pre-check picks the branch or fastjsonschema tries them."""
    fast, whole = RecordValidator(air), RecordValidator(_whole_schema_only(air))
    assert fast._rest is not fast._check and whole._rest is whole._check   # the two paths under test
    drop = change["drop"]
    record = {k: v for k, v in {**air.examples[0], **change}.items() if k != "drop" and k not in drop}
    for shaped in (record, _Mapping(record)):
        assert fast(shaped) == whole(shaped), (record, fast(shaped), whole(shaped))


@pytest.mark.parametrize("record", [
    {"x": 1, "a": 1}, {"y": 1, "b": 1, "c": 1}, {"x": 1, "b": 1}, {"a": 1}, {"x": 1, "y": 1, "a": "one"},
    {"x": 1, "a": 1, "z": 1}, {"x": 1, "a": 1, "kind": "other"}, {"x": 1, "a": 1, "n": "9"}, {}, [], "a", None,
])
def test_presence_pre_check_keeps_every_other_rule_in_order(record: Any) -> None:
    """A schema with a group at the top and one in ``allOf`` beside another ``allOf`` part, an enum and unknown
    fields: only the groups a record is known to satisfy are skipped."""
    schema = {
        "type": "object", "additionalProperties": False,
        "anyOf": [{"required": ["a"]}, {"required": ["b", "c"]}],
        "allOf": [{"anyOf": [{"required": ["x"]}, {"required": ["y"]}]}, {"properties": {"n": {"type": "integer"}}}],
        "properties": {k: {"type": "integer"} for k in "abcxyn"} | {"kind": {"enum": ["one"]}},
    }
    raw = {"contract": "raw.test.presence", "version": "1.0.0", "schema": schema}
    fast = RecordValidator(Contract(raw, None))
    whole = RecordValidator(_whole_schema_only(Contract(raw, None)))
    assert len(fast._groups) == 2 and not whole._groups
    assert fast(record) == whole(record), (fast(record), whole(record))
