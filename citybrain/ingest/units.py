"""Unit conversion for feed columns: a department's unit to the contract field's ``x-unit``, with pint.

Contracts spell units the way people write them (``µg/m³``, ``mg/m³``, ``°C``, ``km/h``, ``dB(A)``);
:data:`SPELLINGS` maps each spelling pint cannot parse to a pint expression. A conversion is
worked out once per column, as a scale and an offset (or an exact divisor), so the per-cell cost is one multiply-add;
a unit pint cannot convert to the field's unit raises :class:`UnitError` before any row is read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import pint

__all__ = ["SPELLINGS", "UnitError", "Conversion", "conversion", "pint_expression"]

_MICRO_GRAM_M3 = "microgram / meter ** 3"
_MILLI_GRAM_M3 = "milligram / meter ** 3"

#: Spellings (in contracts and in departments' exports) that pint does not parse as meant, as pint expressions.
#: ``None``: a unit pint has no linear form for (A-weighted decibels): it converts only to itself.
SPELLINGS: dict[str, str | None] = {
    "µg/m³": _MICRO_GRAM_M3, "μg/m³": _MICRO_GRAM_M3, "ug/m³": _MICRO_GRAM_M3,
    "µg/m3": _MICRO_GRAM_M3, "μg/m3": _MICRO_GRAM_M3, "ug/m3": _MICRO_GRAM_M3, "ug/m^3": _MICRO_GRAM_M3,
    "mg/m³": _MILLI_GRAM_M3, "mg/m3": _MILLI_GRAM_M3, "mg/m^3": _MILLI_GRAM_M3,
    "°C": "degC", "℃": "degC", "°F": "degF", "℉": "degF", "°": "degree",
    "km/h": "kilometer / hour", "m/s": "meter / second", "hPa": "hectopascal",
    "l/m²": "liter / meter ** 2", "vehicles/h": "1 / hour", "dB(A)": None, "dB": None,
}

_POWER = re.compile(r"([A-Za-z])([23])\b")


class UnitError(ValueError):
    """A unit is unknown, or cannot be converted to the field's unit."""


@dataclass(frozen=True)
class Conversion:
    """``value * scale + offset`` (or ``value / divisor`` when the scale is an exact reciprocal: 2299 µg/m³ is
    2.299 mg/m³, not 2.2990000000000004). Offset results are rounded to 9 decimals, past any instrument's
    precision, so 32 °F is 0 °C and not 3.6e-14."""

    source: str
    target: str
    scale: float = 1.0
    offset: float = 0.0
    divisor: int = 0

    @property
    def identity(self) -> bool:
        return self.scale == 1.0 and self.offset == 0.0 and not self.divisor

    def __call__(self, value: float) -> float:
        if self.divisor:
            return value / self.divisor
        if self.offset:
            return round(value * self.scale + self.offset, 9)
        return value * self.scale


def pint_expression(unit: str) -> str | None:
    """The pint expression for a unit as written (``ug/m3`` -> ``microgram / meter ** 3``); None: no pint form."""
    text = unit.strip()
    if text in SPELLINGS:
        return SPELLINGS[text]
    text = text.replace("³", "**3").replace("²", "**2").replace("^", "**").replace("µ", "u").replace("μ", "u")
    return _POWER.sub(r"\1**\2", text)


@lru_cache(maxsize=1)
def _registry() -> pint.UnitRegistry:
    import pint

    return pint.UnitRegistry()


def _quantity_units(unit: str) -> pint.Unit | None:
    import pint

    expression = pint_expression(unit)
    if expression is None:
        return None
    try:
        return _registry().parse_units(expression)
    except (pint.errors.UndefinedUnitError, pint.errors.DefinitionSyntaxError, AttributeError, TypeError,
            ValueError, AssertionError) as exc:
        raise UnitError(f"unit {unit!r} is not a unit pint knows ({exc}); write it as pint does, e.g. "
                        "ug/m3, mg/m3, degC, km/h, hPa") from None


@lru_cache(maxsize=256)
def conversion(source: str, target: str) -> Conversion:
    """How to turn a value in ``source`` into one in ``target``; raises UnitError when pint cannot."""
    import pint

    if source.strip() == target.strip():
        return Conversion(source, target)
    from_units, to_units = _quantity_units(source), _quantity_units(target)
    if from_units is None or to_units is None:
        raise UnitError(f"{source!r} cannot be converted to {target!r}: "
                        f"{(source if from_units is None else target)!r} converts only to itself")
    quantity = _registry().Quantity
    try:
        zero = float(quantity(0.0, from_units).to(to_units).magnitude)
        # the slope as a difference of two quantities: exact for offset units too (°F to °C is 5/9)
        step = quantity(1.0, to_units) - quantity(0.0, to_units)
        scale = float((quantity(1.0, from_units) - quantity(0.0, from_units)).to(step.units).magnitude)
    except pint.errors.DimensionalityError as exc:
        raise UnitError(f"{source!r} ({exc.dim1 or 'dimensionless'}) cannot be converted to {target!r} "
                        f"({exc.dim2 or 'dimensionless'})") from None
    reciprocal = 1.0 / scale if scale else 0.0
    if zero == 0.0 and scale < 1.0 and reciprocal > 1.0 and abs(reciprocal - round(reciprocal)) < 1e-9 * reciprocal:
        return Conversion(source, target, scale, 0.0, int(round(reciprocal)))
    return Conversion(source, target, scale, zero)
