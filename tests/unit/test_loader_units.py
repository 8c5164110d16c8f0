"""Unit conversion for feed columns (pint) and the YAML 1.1 boolean guard of feed declarations."""

from __future__ import annotations

from typing import Any, Iterator

import pytest

from citybrain.contracts.model import Contract
from citybrain.ingest.units import UnitError, conversion, pint_expression
from citybrain.ingest.yaml_safe import BooleanWordError, load_yaml


def _x_units(schema: Any) -> Iterator[str]:
    if isinstance(schema, dict):
        if "x-unit" in schema:
            yield str(schema["x-unit"])
        for value in schema.values():
            yield from _x_units(value)
    elif isinstance(schema, list):
        for value in schema:
            yield from _x_units(value)


def test_every_unit_spelling_of_the_contracts_is_understood(contracts: dict[str, Contract]) -> None:
    spellings = {u for c in contracts.values() for u in _x_units(c.schema)}
    assert {"µg/m³", "mg/m³", "°C", "km/h"} <= spellings
    for unit in spellings:
        expression = pint_expression(unit)
        if expression is not None:   # None: converts only to itself (dB(A))
            assert conversion(expression, unit).scale == pytest.approx(1.0), unit


@pytest.mark.parametrize(("source", "target", "value", "expected"), [
    ("ug/m3", "mg/m³", 2299.0, 2.299),        # exact: divided by 1000, not multiplied by 0.001
    ("µg/m³", "mg/m³", 300.0, 0.3),
    ("μg/m3", "µg/m³", 41.0, 41.0),           # Greek mu, micro sign: the same unit
    ("mg/m3", "µg/m³", 1.5, 1500.0),
    ("degF", "°C", 212.0, 100.0),
    ("degF", "°C", 32.0, 0.0),
    ("K", "°C", 273.15, 0.0),
    ("m/s", "km/h", 10.0, 36.0),
    ("kPa", "hPa", 101.3, 1013.0),
])
def test_conversions_to_the_contract_unit(source: str, target: str, value: float, expected: float) -> None:
    assert conversion(source, target)(value) == pytest.approx(expected, abs=1e-12)


def test_mass_concentrations_convert_exactly() -> None:
    """Regression: CO exports in µg/m³ were sent as mg/m³ (1,000 times too high); 0.001 * x would send 2.2990000000000004."""
    to_mg = conversion("ug/m3", "mg/m³")
    assert [to_mg(x) for x in (300.0, 1399.0, 2299.0, 10000.0)] == [0.3, 1.399, 2.299, 10.0]


@pytest.mark.parametrize(("source", "target", "message"), [
    ("ppm", "mg/m³", r"'ppm' \(dimensionless\) cannot be converted to 'mg/m³'"),   # needs a molar mass
    ("km/h", "°C", "cannot be converted"),
    ("dB", "dB(A)", "converts only to itself"),
    ("bananas/m3", "mg/m³", "not a unit pint knows"),
])
def test_units_that_cannot_be_converted_say_why(source: str, target: str, message: str) -> None:
    with pytest.raises(UnitError, match=message):
        conversion(source, target)


@pytest.mark.parametrize("text, boolean", [("No: {}", False), ("a: {On: 0}", True), ("on: 1", True),
                                           ("a: [Off]", False), ("a: Yes", True), ("a: NO", False), ("true: 1", True)])
def test_yaml_11_boolean_words_are_refused_unquoted_naming_the_boolean_pyyaml_makes(text: str, boolean: bool) -> None:
    with pytest.raises(BooleanWordError, match=rf"f\.yaml, line 1, column \d+: the (key|value) .* reads it as the "
                                               rf"boolean {boolean}\. Fix: quote it"):
        load_yaml(text, "f.yaml")


def test_words_pyyaml_reads_as_text_are_not_refused() -> None:
    """y/n (YAML 1.1's spec lists them, PyYAML does not) and odd spellings (yEs) are the words they look like."""
    assert load_yaml("a: {N: 0, S: 180}\nb: [y, n, Y]\nc: yEs\n", "f.yaml") == {
        "a": {"N": 0, "S": 180}, "b": ["y", "n", "Y"], "c": "yEs"}


def test_quoted_words_and_real_booleans_are_kept() -> None:
    assert load_yaml('"No": {ignore: true}\na: ["N", "off"]\nb: |\n  yes\n', "f.yaml") == {
        "No": {"ignore": True}, "a": ["N", "off"], "b": "yes\n"}
