"""Compatibility rules, each on a pair of schemas built to break (or keep) it."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from citybrain.contracts.compat import breaking, diff

BASE: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["id", "status"],
    "properties": {
        "id": {"type": "string"},
        "status": {"enum": ["open", "closed", "reopened"]},
        "level": {"type": "number", "minimum": 0, "maximum": 10},
        "note": {"type": "string", "maxLength": 100},
        "place": {"type": "object", "additionalProperties": False, "required": ["street"],
                  "properties": {"street": {"type": "string"}, "code": {"type": "integer"}}},
    },
}


def changed(fn) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    new = copy.deepcopy(BASE)
    fn(new)
    return new


def rules(new: dict[str, Any], mode: str) -> set[str]:
    return {c.rule for c in breaking(BASE, new, mode)}


def test_identical_schemas_have_no_changes() -> None:
    assert diff(BASE, copy.deepcopy(BASE)) == []


def test_enum_value_removed_breaks_backward_and_names_the_field() -> None:
    new = changed(lambda s: s["properties"]["status"].update({"enum": ["open", "closed"]}))
    found = breaking(BASE, new, "backward")
    assert [(c.field, c.rule) for c in found] == [("status", "enum-value-removed")]
    assert "'reopened'" in found[0].message


def test_enum_value_added_is_backward_compatible_but_breaks_forward() -> None:
    new = changed(lambda s: s["properties"]["status"]["enum"].append("archived"))
    assert rules(new, "backward") == set()
    assert rules(new, "forward") == {"enum-value-added"}
    assert rules(new, "full") == {"enum-value-added"}


@pytest.mark.parametrize("fn, rule", [
    (lambda s: s["properties"].pop("note"), "field-removed"),
    (lambda s: s["properties"].__setitem__("remark", s["properties"].pop("note")), "field-renamed"),
    (lambda s: s["properties"]["level"].update({"type": "integer"}), "type-narrowed"),
    (lambda s: s["properties"]["level"].update({"maximum": 5}), "range-narrowed"),
    (lambda s: s["properties"]["level"].update({"minimum": 1}), "range-narrowed"),
    (lambda s: s["properties"]["note"].update({"maxLength": 50}), "range-narrowed"),
    (lambda s: s["required"].append("level"), "optional-made-required"),
    (lambda s: (s["properties"].__setitem__("x", {"type": "string"}), s["required"].append("x")), "required-field-added"),
    (lambda s: s["properties"]["note"].update({"pattern": "^[a-z]+$"}), "pattern-changed"),
    (lambda s: s["properties"]["place"]["properties"]["code"].update({"type": "string"}), "type-narrowed"),
    (lambda s: s["properties"]["place"]["properties"].pop("code"), "field-removed"),
])
def test_backward_breaking_changes(fn, rule: str) -> None:  # type: ignore[no-untyped-def]
    assert rule in rules(changed(fn), "backward")


@pytest.mark.parametrize("fn", [
    lambda s: s["properties"].__setitem__("extra", {"type": "string"}),
    lambda s: s["properties"]["level"].update({"maximum": 100}),
    lambda s: s["properties"]["level"].pop("minimum"),
    lambda s: s["properties"]["level"].update({"type": ["number", "null"]}),
    lambda s: s["required"].remove("status"),
    lambda s: s["properties"]["status"]["enum"].append("archived"),
])
def test_widening_changes_are_backward_compatible(fn) -> None:  # type: ignore[no-untyped-def]
    new = changed(fn)
    assert rules(new, "backward") == set()
    assert rules(new, "forward") != set()


def test_nested_field_path_is_named() -> None:
    new = changed(lambda s: s["properties"]["place"]["properties"]["code"].update({"type": "string"}))
    assert [c.field for c in breaking(BASE, new, "backward")] == ["place.code"]


def test_mode_none_accepts_anything() -> None:
    assert rules(changed(lambda s: s["properties"].pop("status")), "none") == set()


@pytest.mark.parametrize("old, new", [
    ("^[0-9]{6}$", "^[0-9A-Za-z][0-9A-Za-z -]{1,9}$"),      # China's postal codes -> any country's
    ("^[0-9]{5}(-[0-9]{4})?$", "^[0-9A-Za-z][0-9A-Za-z -]{1,9}$"),
    ("^[a-z]+$", "^[a-z]*$"),
    ("^(ab|c)+$", "^[abc]+$"),
])
def test_a_widened_pattern_is_backward_compatible_but_breaks_forward(old: str, new: str) -> None:
    before = changed(lambda s: s["properties"]["note"].update({"pattern": old}))
    after = changed(lambda s: s["properties"]["note"].update({"pattern": new}))
    assert breaking(before, after, "backward") == []
    assert [c.rule for c in breaking(before, after, "forward")] == ["pattern-widened"]


@pytest.mark.parametrize("old, new", [
    ("^[0-9A-Za-z][0-9A-Za-z -]{1,9}$", "^[0-9]{6}$"),      # narrowed
    ("^[0-9]{6}$", "^[0-9]{5}$"),                           # changed: no value passes both
    ("^[abc]+$", "^(ab|c)+$"),                              # "a" is lost
    ("^\\d{6}$", "^[0-9]{6}$"),                             # \d is any Unicode digit: not judged, breaking
    ("[0-9]{6}", "[0-9A-Z]{6}"),                            # unanchored: not judged, breaking
])
def test_a_pattern_not_proved_wider_breaks_backward(old: str, new: str) -> None:
    before = changed(lambda s: s["properties"]["note"].update({"pattern": old}))
    after = changed(lambda s: s["properties"]["note"].update({"pattern": new}))
    assert [c.rule for c in breaking(before, after, "backward")] == ["pattern-changed"]
