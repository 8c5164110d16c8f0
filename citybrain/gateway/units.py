"""Units as the FIWARE standards give them: an attribute's UN/CEFACT ``unitCode`` read against its contract.

NGSI v2 carries it in the attribute's metadata (``"metadata": {"unitCode": {"value": "GP"}}``), NGSI-LD
as the Property's ``unitCode``. A contract field with an ``x-unit`` is read in that unit: a value sent
in the same unit is taken as it is, one sent in another unit CityBrain can convert is converted (and
named in a ``unit-converted`` warning), and a code CityBrain does not know, or one that cannot be the
field's unit (metres for a concentration), is refused with the reason: a number in an unknown unit
has no meaning the platform may guess. Without a ``unitCode`` the model's unit is assumed, as the
models say.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from citybrain.contracts.validate import Rejection
from citybrain.gateway.lint import LintWarning
from citybrain.gateway.fiware import ld_term

#: UN/CEFACT Recommendation 20 codes for the units the sensor contracts use, and a few they convert from.
UNIT_CODES = {
    "GQ": "µg/m³", "GP": "mg/m³", "CEL": "°C", "KEL": "K", "FAH": "°F", "MTR": "m", "CMT": "cm", "MMT": "mm",
    "KMH": "km/h", "MTS": "m/s", "A97": "hPa", "PAL": "Pa", "2N": "dB(A)", "DD": "°", "P1": "%", "C62": "1",
}
#: (sent unit, contract unit) -> the value in the contract's unit.
CONVERT: dict[tuple[str, str], Callable[[float], float]] = {
    ("mg/m³", "µg/m³"): lambda v: v * 1000, ("µg/m³", "mg/m³"): lambda v: v / 1000,
    ("K", "°C"): lambda v: v - 273.15, ("°F", "°C"): lambda v: (v - 32) * 5 / 9,
    ("cm", "m"): lambda v: v / 100, ("mm", "m"): lambda v: v / 1000, ("m", "mm"): lambda v: v * 1000,
    ("cm", "mm"): lambda v: v * 10, ("mm", "cm"): lambda v: v / 10, ("m", "cm"): lambda v: v * 100,
    ("m/s", "km/h"): lambda v: v * 3.6, ("km/h", "m/s"): lambda v: v / 3.6, ("Pa", "hPa"): lambda v: v / 100,
}


def unit_codes(entity: Any) -> dict[str, str]:
    """Attribute -> the unitCode the sender gave it, in NGSI v2 (metadata) or NGSI-LD (sub-property) form."""
    if not isinstance(entity, dict):
        return {}
    out = {}
    for name, attr in entity.items():
        if isinstance(attr, list):
            attr = next((a for a in attr if isinstance(a, dict)), None)
        if not isinstance(attr, dict):
            continue
        code = attr.get("unitCode")
        meta = attr.get("metadata")
        if code is None and isinstance(meta, dict) and isinstance(meta.get("unitCode"), dict):
            code = meta["unitCode"].get("value")
        if isinstance(code, str):
            out[ld_term(name)] = code
    return out


def apply_units(entity: dict[str, Any], codes: Mapping[str, str], props: Mapping[str, Mapping[str, Any]]
                ) -> tuple[dict[str, Any], list[LintWarning], Rejection | None]:
    """The entity with each value in its contract's unit, a warning per conversion, or why a unit was refused."""
    out, warnings = dict(entity), []
    for name, code in sorted(codes.items()):
        wanted = (props.get(name) or {}).get("x-unit")
        value = out.get(name)
        if not wanted or not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        sent = UNIT_CODES.get(code)
        if sent == wanted:
            continue
        convert = CONVERT.get((sent, wanted)) if sent else None
        if convert is None:
            what = f"unitCode {code!r} ({sent})" if sent else f"unitCode {code!r}, which CityBrain does not know,"
            return entity, warnings, Rejection(
                "unit", name, f"`{name}` is sent in {what} but the contract reads it in {wanted}; send it in {wanted}"
                f"{_code_of(wanted)}, or without a unitCode in the model's unit", str(value))
        out[name] = round(convert(float(value)), 6)
        warnings.append(LintWarning(name, "unit-converted", f"`{name}` {value} {sent} (unitCode {code}) read as "
                                    f"{out[name]} {wanted}, the contract's unit"))
    return out, warnings, None


def _code_of(unit: str) -> str:
    code = next((c for c, u in UNIT_CODES.items() if u == unit), None)
    return f" (unitCode {code})" if code else ""
