"""FIWARE NGSI v2 intake: Smart Data Model entities mapped to the sensor contracts.

The sensor contracts are the keyValues form of the FIWARE models, so an entity maps to its
contract by ``type`` alone. Both NGSI v2 representations are taken: keyValues
(``?options=keyValues``, plain values) and normalized, the default (each attribute
``{"type": ..., "value": ..., "metadata": {...}}``), which :func:`to_key_values` maps to
keyValues as the NGSI v2 specification defines the two: the attribute's value, a
``geo:json`` value as is, a ``geo:point`` ("lat, lon") as a GeoJSON Point; metadata is not kept.

NGSI-LD (ETSI GS CIM 009) entities come normalized or concise (NGSI-LD 1.6 and later: an attribute given
by its value alone, as the models' ``example.jsonld`` are), mapped by :func:`ld_to_key_values`:
a Property's ``value`` (a ``{"@type": "DateTime", "@value": ...}`` value as its ``@value``), a
GeoProperty's GeoJSON ``value``, a Relationship's ``object``; a model's observation time missing
from the entity is taken from its properties' ``observedAt``. Terms are read as compacted with the
Smart Data Models' own @context (the gateway fetches no context): a type given as a full IRI is
known by its last segment. ``unitCode`` is read against the contract's unit (:mod:`citybrain.gateway.units`);
the other sub-properties are not kept.
"""

from __future__ import annotations

import math
from typing import Any

from citybrain.contracts import topics
from citybrain.contracts.topics import contract_id
from citybrain.gateway.open311 import EdgeError

#: FIWARE entity type -> contract id
ENTITY_CONTRACTS = {
    "AirQualityObserved": contract_id(topics.AIR_QUALITY),
    "NoiseLevelObserved": contract_id(topics.NOISE_LEVEL),
    "TrafficFlowObserved": contract_id(topics.TRAFFIC_FLOW),
    "FloodMonitoring": contract_id(topics.WATER_LEVEL),
    "WeatherObserved": contract_id(topics.WEATHER),
}
BATCH_ACTIONS = ("append", "appendStrict", "update", "replace")
#: Keys of a normalized attribute (NGSI v2 "JSON Attribute Representation").
ATTRIBUTE_KEYS = {"type", "value", "metadata"}


def to_key_values(entity: Any) -> tuple[dict[str, Any] | None, list[EdgeError]]:
    """A normalized NGSI v2 entity in keyValues form, or every attribute that is not a normalized attribute."""
    if not isinstance(entity, dict):
        return None, [EdgeError(400, f"an entity must be a JSON object, got {type(entity).__name__}", "(entity)",
                                "not-an-object")]
    out: dict[str, Any] = {k: entity[k] for k in ("id", "type") if k in entity}
    errors = []
    for name, attr in entity.items():
        if name in ("id", "type"):
            continue
        if not isinstance(attr, dict) or "value" not in attr:
            errors.append(EdgeError(400, f"attribute `{name}` is not in NGSI v2 normalized form "
                                         "({\"type\": ..., \"value\": ...}); send every attribute so, or send plain "
                                         "values with ?options=keyValues", name, "normalized-form"))
            continue
        unknown = sorted(set(attr) - ATTRIBUTE_KEYS)
        if unknown:
            errors.append(EdgeError(400, f"attribute `{name}` has key(s) {', '.join(unknown)}; a normalized attribute "
                                         "has only type, value and metadata", name, "unknown-field"))
            continue
        value = attr["value"]
        if attr.get("type") == "geo:point":
            try:
                lat, lon = (float(x) for x in str(value).split(","))
                if not (math.isfinite(lat) and math.isfinite(lon)):
                    raise ValueError(value)
            except ValueError:
                errors.append(EdgeError(400, f"attribute `{name}` is a geo:point but {value!r} is not \"lat, lon\"",
                                        name, "type"))
                continue
            value = {"type": "Point", "coordinates": [lon, lat]}
        out[name] = value
    return (None, errors) if errors else (out, [])


LD_TYPES = ("Property", "GeoProperty", "Relationship", "LanguageProperty")
#: Keys of an NGSI-LD attribute that are not sub-properties to refuse: how the standard annotates values.
LD_ATTRIBUTE_KEYS = {"type", "value", "object", "observedAt", "unitCode", "datasetId", "createdAt", "modifiedAt",
                     "instanceId", "providedBy"}
#: The field that says when a model's observation happened: taken from ``observedAt`` when the entity lacks it.
OBSERVED_FIELD = {"AirQualityObserved": "dateObserved", "FloodMonitoring": "dateObserved", "WeatherObserved": "dateObserved",
                  "NoiseLevelObserved": "dateObservedTo", "TrafficFlowObserved": "dateObservedTo"}


def ld_term(value: Any) -> Any:
    """A term given as a full IRI (``https://smartdatamodels.org/dataModel.Environment/AirQualityObserved``) by its
    last segment, as the model's @context compacts it; anything else as it is."""
    if isinstance(value, str) and value.startswith(("http://", "https://")):
        return value.rstrip("/").rsplit("/", 1)[-1].rsplit("#", 1)[-1]
    return value


def ld_to_key_values(entity: Any) -> tuple[dict[str, Any] | None, list[EdgeError]]:
    """An NGSI-LD normalized entity in keyValues form, or every attribute that cannot be read as NGSI-LD."""
    if not isinstance(entity, dict):
        return None, [EdgeError(400, f"an entity must be a JSON object, got {type(entity).__name__}", "(entity)",
                                "not-an-object")]
    out: dict[str, Any] = {"id": entity.get("id"), "type": ld_term(entity.get("type"))}
    errors, observed = [], []
    for name, attr in entity.items():
        if name in ("id", "type", "@context"):
            continue
        name = ld_term(name)
        if isinstance(attr, list):   # several instances (datasetId): the default one, else the first
            attr = next((a for a in attr if isinstance(a, dict) and "datasetId" not in a), attr[0] if attr else None)
        kind = attr.get("type") if isinstance(attr, dict) else None
        if kind not in LD_TYPES and isinstance(attr, dict) and kind is not None and ("value" in attr or "object" in attr):
            errors.append(EdgeError(400, f"attribute `{name}` has type {kind!r}; an NGSI-LD attribute is a "
                                         f"{', '.join(LD_TYPES)}, or its value alone (concise form)", name,
                                    "ngsi-ld-form"))
            continue
        if kind not in LD_TYPES:
            # the concise representation: a Property by its value (or {"value": ...} with sub-properties), a
            # GeoProperty by its GeoJSON
            concise = isinstance(attr, dict) and "value" in attr and "type" not in attr
            out[name] = attr["value"] if concise else attr
            if concise:
                _observed_at(name, attr, observed, errors)
            continue
        unknown = sorted(k for k in set(attr) - LD_ATTRIBUTE_KEYS - {"languageMap"} if not k.startswith("@"))
        if unknown:
            errors.append(EdgeError(400, f"attribute `{name}` has sub-attribute(s) {', '.join(unknown)}, which CityBrain "
                                         "does not keep; leave them out", name, "unknown-field"))
            continue
        if kind == "Relationship":
            if "object" not in attr:
                errors.append(EdgeError(400, f"Relationship `{name}` has no `object`", name, "required"))
                continue
            value = attr["object"]
        elif kind == "LanguageProperty":
            languages = attr.get("languageMap")
            if not isinstance(languages, dict):
                errors.append(EdgeError(400, f"LanguageProperty `{name}` needs a `languageMap` object such as "
                                             f"{{\"zh\": \"...\"}}, got {type(languages).__name__}", name, "type"))
                continue
            value = next(iter(languages.values()), None)
        else:
            if "value" not in attr:
                errors.append(EdgeError(400, f"{kind} `{name}` has no `value`", name, "required"))
                continue
            value = attr["value"]
            if isinstance(value, dict) and "@value" in value:   # {"@type": "DateTime", "@value": "..."}
                value = value["@value"]
        if _observed_at(name, attr, observed, errors):
            out[name] = value
    if errors:
        return None, errors
    field = OBSERVED_FIELD.get(str(out["type"]))
    if observed and field and field not in out:
        out[field] = max(observed)
    return out, []


def _observed_at(name: str, attr: Any, observed: list[str], errors: list[EdgeError]) -> bool:
    """Keep an attribute's ``observedAt`` in ``observed``; False (and an error) when it is not a date-time text."""
    when = attr.get("observedAt") if isinstance(attr, dict) else None
    if when in (None, ""):
        return True
    if not isinstance(when, str):
        errors.append(EdgeError(400, f"`{name}.observedAt` must be a date-time text such as 2026-11-23T08:00:00Z, "
                                     f"got {type(when).__name__}", f"{name}.observedAt", "type"))
        return False
    observed.append(when)
    return True


def contract_for(entity: Any) -> tuple[str | None, list[EdgeError]]:
    """The contract an entity belongs to, or why it cannot be taken."""
    if not isinstance(entity, dict):
        return None, [EdgeError(400, f"an entity must be a JSON object, got {type(entity).__name__}", "(entity)",
                                "not-an-object")]
    kind = entity.get("type")
    if not isinstance(kind, str):
        return None, [EdgeError(400, f"entity type must be one type name, got {type(kind).__name__} "
                                     f"{str(kind)[:80]}; send one of {', '.join(ENTITY_CONTRACTS)}", "type", "type")]
    if kind not in ENTITY_CONTRACTS:
        return None, [EdgeError(422, f"entity type {kind!r} is not accepted; send one of "
                                     f"{', '.join(ENTITY_CONTRACTS)}", "type", "enum")]
    normalized = [k for k, v in entity.items()
                  if isinstance(v, dict) and "value" in v and k not in ("location",)]
    if normalized:
        return None, [EdgeError(400, f"attribute(s) {', '.join(normalized)} are in NGSI normalized form "
                                     "({type, value, metadata}); CityBrain takes keyValues: send "
                                     "?options=keyValues with plain values", normalized[0], "type")]
    return ENTITY_CONTRACTS[kind], []


def batch_entities(body: Any, max_batch: int) -> tuple[list[Any] | None, EdgeError | None]:
    """The entities of a ``POST /v2/op/update`` body, or the error that refuses the whole batch."""
    if not isinstance(body, dict):
        return None, EdgeError(400, "the body must be a JSON object {\"actionType\": ..., \"entities\": [...]}",
                               "(body)", "not-an-object")
    action = body.get("actionType")
    if action not in BATCH_ACTIONS:
        return None, EdgeError(400, f"actionType {action!r} is not supported; use one of {', '.join(BATCH_ACTIONS)}",
                               "actionType", "enum")
    extra = sorted(set(body) - {"actionType", "entities"})
    if extra:
        return None, EdgeError(400, f"unknown key(s) {', '.join(extra)} in the batch body", extra[0], "unknown-field")
    entities = body.get("entities")
    if not isinstance(entities, list) or not entities:
        return None, EdgeError(400, "`entities` must be a non-empty array of entities", "entities", "minItems")
    if len(entities) > max_batch:
        return None, EdgeError(413, f"a batch may hold at most {max_batch} entities, this one has {len(entities)} "
                                    "(CITYBRAIN_GATEWAY_MAX_BATCH); split it", "entities", "maxItems")
    return entities, None
