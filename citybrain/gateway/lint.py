"""The Smart Data Models' known defects, linted rather than fatal.

Vendors copy the models' own examples, and some of those break the models' schemas in ways whose
meaning is still plain. Such an entity is taken in its corrected form and each correction is a
named warning in the answer (per record, and counted in ``X-CityBrain-Lint-Warnings``); what is
not plain stays refused by the contract with its reason.

- ``coordinates-as-text``: ``"coordinates": ["117.45", "38.70"]`` read as numbers;
- ``location-not-a-point``: a LineString or MultiPoint (a road segment's sensor) read as the Point
  of its middle vertex;
- ``date-interval``: ``dateObserved`` as an ISO 8601 interval ``start/end``: for the models that
  carry both ends (noise, traffic) ``dateObservedFrom``/``dateObservedTo``, for the others its end;
- ``ngsi-ld-attribute-type``: an NGSI-LD attribute typed with a JSON Schema type name
  (``"type": "string"``, as FloodMonitoring's own normalized example has) read as a Property;
- ``attribute-name-case``: an attribute the contract has under another letter case (AirQualityObserved's
  examples send ``typeOfLocation``, its schema says ``typeofLocation``) read under the contract's name;
- ``time-without-offset``: a date-time without a UTC offset (``2016-03-15T11:00:00``) read as UTC, which
  the models' schemas declare their times to be;
- ``boolean-for-number``: ``false`` for a number (AirQualityObserved's normalized example sends
  ``"precipitation": {"type": "Boolean", "value": false}``) read as 0, none measured; ``true`` has no
  number and stays refused;
- ``angle-range``: a bearing of 180° to 360° for an attribute the model ranges -180° to 180°
  (AirQualityObserved's ``windDirection``; WeatherObserved ranges it 0° to 360°, and its examples send 186)
  read as the same bearing in the model's range.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Mapping

#: Models whose observation is an interval with both ends.
INTERVAL_MODELS = {"NoiseLevelObserved", "TrafficFlowObserved"}
JSON_SCHEMA_TYPES = {"string", "number", "integer", "boolean", "object", "array"}
#: An RFC 3339 date-time but for its missing offset.
LOCAL_TIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?$")


@dataclass(frozen=True)
class LintWarning:
    field: str
    rule: str
    description: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "rule": self.rule, "description": self.description}


def lint_ld(entity: Any) -> tuple[Any, list[LintWarning]]:
    """An NGSI-LD entity with attributes typed as JSON Schema types read as Properties."""
    if not isinstance(entity, dict):
        return entity, []
    out, warnings = dict(entity), []
    for name, attr in entity.items():
        if isinstance(attr, dict) and attr.get("type") in JSON_SCHEMA_TYPES and "value" in attr:
            out[name] = {"type": "Property", "value": attr["value"]}
            warnings.append(LintWarning(name, "ngsi-ld-attribute-type", f"`{name}` is typed {attr['type']!r}, a JSON "
                                        "Schema type, not an NGSI-LD attribute type: read as a Property"))
    return out, warnings


def lint(entity: dict[str, Any], props: Mapping[str, Mapping[str, Any]] | None = None
         ) -> tuple[dict[str, Any], list[LintWarning]]:
    """An entity in keyValues form with the models' plain defects corrected, and a warning for each; ``props``
    are its contract's attributes (their JSON Schemas)."""
    props = props or {}
    fields = set(props)
    times = [f for f, p in props.items() if p.get("format") == "date-time"]
    out, warnings = dict(entity), []
    by_case = {f.lower(): f for f in fields}
    for name in list(out):
        known = by_case.get(name.lower())
        if known and known != name and name not in fields and known not in out:
            out[known] = out.pop(name)
            warnings.append(LintWarning(name, "attribute-name-case", f"`{name}` read as the model's `{known}`; "
                                        f"send `{known}`"))
    location = out.get("location")
    if isinstance(location, dict):
        location = dict(location)
        kind, coords = location.get("type"), location.get("coordinates")
        if kind in ("LineString", "MultiPoint") and isinstance(coords, list) and coords:
            location = {"type": "Point", "coordinates": coords[len(coords) // 2]}
            warnings.append(LintWarning("location", "location-not-a-point", f"a {kind} location read as the Point of "
                                        "its middle vertex; send a Point where the sensor is"))
        coords = location.get("coordinates")
        if location.get("type") == "Point" and isinstance(coords, list) and any(isinstance(c, str) for c in coords):
            try:
                numbers = [float(c) for c in coords]
                if not all(math.isfinite(n) for n in numbers):
                    raise ValueError(coords)   # "NaN" is no coordinate: the contract refuses the text
                location["coordinates"] = numbers
                warnings.append(LintWarning("location", "coordinates-as-text",
                                            "coordinates given as text read as numbers; send JSON numbers"))
            except ValueError:
                pass   # not numbers at all: the contract refuses it with its reason
        out["location"] = location
    observed = out.get("dateObserved")
    if isinstance(observed, str) and observed.count("/") == 1:
        start, end = observed.split("/")
        if out.get("type") in INTERVAL_MODELS and "dateObservedFrom" not in out and "dateObservedTo" not in out:
            del out["dateObserved"]
            out["dateObservedFrom"], out["dateObservedTo"] = start, end
            where = "dateObservedFrom and dateObservedTo"
        else:
            out["dateObserved"] = end
            where = "its end"
        warnings.append(LintWarning("dateObserved", "date-interval", f"dateObserved {observed!r} is an interval: read "
                                    f"as {where}; send a date-time"))
    for name, prop in props.items():
        value = out.get(name)
        if value is False and prop.get("type") in ("number", "integer"):
            out[name] = 0
            warnings.append(LintWarning(name, "boolean-for-number", f"`{name}` false read as 0 (none measured); "
                                        "send a number"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and \
                (prop.get("minimum"), prop.get("maximum")) == (-180, 180) and 180 < value <= 360:
            out[name] = value - 360
            warnings.append(LintWarning(name, "angle-range", f"`{name}` {value}° read as {value - 360}°, the same "
                                        "bearing in the model's -180° to 180°"))
    for name in times:
        value = out.get(name)
        if isinstance(value, str) and LOCAL_TIME_RE.match(value):
            out[name] = value + "Z"
            warnings.append(LintWarning(name, "time-without-offset", f"`{name}` {value!r} has no UTC offset: read as "
                                        "UTC, as the model declares; send it with Z or an offset"))
    return out, warnings
