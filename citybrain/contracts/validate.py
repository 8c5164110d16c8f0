"""Compiled record validation against a contract, with machine-readable rejection reasons.

The contract's JSON Schema is compiled once to Python code (fastjsonschema); the per-record
path never interprets the schema. A rejection names the field, the rule and a value excerpt,
which become the dead-letter headers.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Callable

import fastjsonschema

from citybrain.contracts.model import Contract

EXCERPT_CHARS = 120
#: groups of fields of which a record needs one, each group as its alternatives' field names
_Groups = tuple[tuple[tuple[str, ...], ...], ...]

#: Plain-language fix for each rule, shown to people next to the message.
FIXES = {
    "required": "add the field",
    "unknown-field": "remove the field, or propose it in the contract (schemas/)",
    "type": "send the declared type",
    "enum": "use one of the allowed values",
    "minimum": "send a value within the declared range",
    "maximum": "send a value within the declared range",
    "exclusiveMinimum": "send a value within the declared range",
    "exclusiveMaximum": "send a value within the declared range",
    "minLength": "send a longer value",
    "maxLength": "shorten the value",
    "pattern": "match the declared pattern",
    "format": "use the declared format (times as RFC 3339 UTC, e.g. 2026-11-23T08:00:00Z)",
    "const": "send the declared constant",
    "minItems": "send more items",
    "maxItems": "send fewer items",
    "json-syntax": "send one well-formed JSON object per line",
    "not-an-object": "send a JSON object per record, not an array or a scalar",
    "encoding": "send UTF-8 (re-encode the file, e.g. iconv -f GB18030 -t UTF-8)",
    "empty-record": "remove the empty line or fill in the record",
    "too-large": "split the record or move large payloads to object storage and send a link",
    "csv-row-shape": "give every CSV row as many cells as the header has columns",
    "csv-value": "write the cell in the column's declared type",
    "outside-jurisdiction": "send a position inside the city (WGS84 lat/long)",
    "postal-code": "send the postal code in the city's format (the pattern its city pack's manifest declares as "
                   "postal_code_pattern), or leave it out",
    "code-scheme": "send the code as the city writes it (the pattern its city pack's manifest declares under codes: "
                   "city, area, device), or correct the manifest's codes",
    "unit": "send the value in the contract's unit (x-unit), with its UN/CEFACT unitCode or none",
    "normalized-form": "send every attribute as {\"type\": ..., \"value\": ...} (NGSI v2 normalized), or plain values with ?options=keyValues",
    "mapping": "use one of the source values the feed declares, or add the value to the feed's mapping (infra/feeds/)",
    "datetime": "write the time as the feed declares it (see its `format` and `timezone` in infra/feeds/)",
    "json-number": "send finite numbers: JSON has no NaN or Infinity (leave the field out, or send null where the "
                   "contract allows it); integers within 64 bits",
    "duplicate-key": "send each key once per object",
    "lone-surrogate": "send text as Unicode characters: a \\uD800-\\uDFFF escape only as half of a surrogate pair",
    "json-depth": "nest the JSON less deeply (CITYBRAIN_JSON_MAX_DEPTH levels at most per entity or record)",
    "id-characters": "send the id without control, zero-width or bidirectional-control characters",
    "idempotency-key": "send a new Idempotency-Key for a new request, the same one only to retry the same request",
    "internal-error": "report the trace id to the city data office; the request may be sent again",
    "processing-error": "a stream worker failed on this record: report it with the dead letter's trace id; "
                        "replay it once fixed (`citybrain produce`)",
}


@dataclass(frozen=True)
class Rejection:
    """Why one record was refused: machine-readable, also written to dead-letter headers."""

    rule: str
    field: str
    message: str
    value_excerpt: str = ""

    @property
    def fix(self) -> str:
        return FIXES.get(self.rule, "see the contract")

    def as_dict(self) -> dict[str, str]:
        return {**asdict(self), "fix": self.fix}


def excerpt(value: Any, limit: int = EXCERPT_CHARS) -> str:
    """A short, printable rendering of a value for messages and headers (always writable as UTF-8)."""
    if isinstance(value, (bytes, bytearray)):
        text = bytes(value[: limit * 4]).decode("utf-8", errors="backslashreplace")
    elif isinstance(value, str):
        text = value
    else:
        try:
            text = json.dumps(value, ensure_ascii=False, default=str)
        except (TypeError, ValueError):
            text = repr(value)
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return text.encode("utf-8", "backslashreplace").decode("utf-8")   # a lone surrogate as its escape, writable


class RecordValidator:
    """Validate records against one contract; compiled once, called per record."""

    def __init__(self, contract: Contract) -> None:
        self.contract = contract
        schema = _strip_annotations(contract.schema)
        self._check: Callable[[Any], Any] = fastjsonschema.compile(schema)
        #: the record's groups of fields of which it needs one (``anyOf`` of ``required``), and the schema without
        #: them: compiled, such a group tries its branches in turn, an exception for each that fails, per record
        self._groups, rest = _presence_groups(schema)
        self._rest: Callable[[Any], Any] = fastjsonschema.compile(rest) if self._groups else self._check
        self._full: Any = None

    def __call__(self, record: Any) -> Rejection | None:
        """Return None when the record is valid, else the first rule it breaks.

        A record that has one field of every group is checked against the rest of the schema: the same checks in
        the same order, less the ones it is known to pass. Any other goes through the whole schema, which says why.
        """
        check = self._check
        if self._groups and record.__class__ is dict and all(
                any(all(name in record for name in names) for names in group) for group in self._groups):
            check = self._rest
        try:
            check(record)
        except fastjsonschema.JsonSchemaValueException as exc:
            return self._explain(exc, record)
        return None

    def explain_all(self, record: Any) -> list[Rejection]:
        """Every rule the record breaks, one per field (for people at the edge: a 4xx naming each field).

        Only called for records the compiled check already refused, so python-jsonschema
        stays off the per-record path.
        """
        import jsonschema

        if self._full is None:
            self._full = jsonschema.Draft202012Validator(_strip_annotations(self.contract.schema),
                                                         format_checker=jsonschema.FormatChecker())
        found: dict[str, Rejection] = {}
        for error in self._full.iter_errors(record):
            for r in self._from_jsonschema(error, record):
                found.setdefault(r.field, r)
        first = self(record)
        if first is not None and first.field not in found:
            found[first.field] = first
        return list(found.values())

    def _from_jsonschema(self, error: Any, record: Any) -> list[Rejection]:
        path = [str(p) for p in error.absolute_path]
        field = ".".join(path)
        rule = error.validator
        if rule == "required":
            missing = [f for f in error.validator_value if not isinstance(error.instance, dict) or f not in error.instance]
            return [Rejection("required", ".".join([*path, m]), f"required field `{'.'.join([*path, m])}` is missing")
                    for m in missing]
        if rule == "anyOf" and isinstance(error.instance, dict):
            return [_one_of_missing(error.validator_value, path)]
        if rule == "additionalProperties" and isinstance(error.instance, dict):
            node = _node_at(self.contract.schema, path) or {}
            known = set(node.get("properties", {}))
            return [Rejection("unknown-field", ".".join([*path, k]),
                              f"field `{'.'.join([*path, k])}` is not in contract {self.contract.topic} "
                              f"(allowed: {', '.join(sorted(known))})", excerpt(error.instance[k]))
                    for k in sorted(error.instance) if k not in known]
        if rule == "enum":
            allowed = ", ".join(map(str, error.validator_value))
            return [Rejection("enum", field, f"`{field}` = {excerpt(error.instance)} is not one of: {allowed}",
                              excerpt(error.instance))]
        if rule == "type":
            return [Rejection("type", field, f"`{field}` must be {error.validator_value}, got "
                              f"{type(error.instance).__name__}", excerpt(error.instance))]
        return [Rejection(rule, field or "(record)", f"`{field or 'record'}`: {error.message} (rule {rule} = "
                          f"{excerpt(error.validator_value)})", excerpt(error.instance))]

    def _explain(self, exc: fastjsonschema.JsonSchemaValueException, record: Any) -> Rejection:
        path = [p for p in (exc.path or [])[1:]]  # drop the leading "data"
        field = ".".join(str(p) for p in path)
        rule = exc.rule or "schema"
        if rule == "required" and isinstance(exc.value, dict):
            missing = [f for f in (exc.rule_definition or []) if f not in exc.value]
            name = ".".join([*map(str, path), missing[0]]) if missing else field
            return Rejection("required", name, f"required field `{name}` is missing", "")
        if rule == "anyOf" and isinstance(exc.value, dict):
            return _one_of_missing(exc.rule_definition or [], path)
        if rule == "additionalProperties" and isinstance(exc.value, dict):
            node = _node_at(self.contract.schema, path)
            known = set((node or {}).get("properties", {}))
            extra = sorted(k for k in exc.value if k not in known)
            name = ".".join([*map(str, path), extra[0]]) if extra else field
            value = exc.value.get(extra[0]) if extra else None
            allowed = ", ".join(sorted(known))
            return Rejection(
                "unknown-field", name,
                f"field `{name}` is not in contract {self.contract.topic} (allowed: {allowed})",
                excerpt(value),
            )
        if rule == "enum":
            allowed = ", ".join(map(str, exc.rule_definition or []))
            return Rejection("enum", field, f"`{field}` = {excerpt(exc.value)!s} is not one of: {allowed}", excerpt(exc.value))
        if rule == "type":
            return Rejection(
                "type", field,
                f"`{field}` must be {exc.rule_definition}, got {type(exc.value).__name__}",
                excerpt(exc.value),
            )
        message = exc.message.replace("data.", "", 1) if exc.message.startswith("data.") else exc.message
        return Rejection(rule, field or "(record)", f"`{field or 'record'}`: {message} (rule {rule} = {exc.rule_definition})", excerpt(exc.value))


def _one_of_missing(alternatives: list[Any], path: list[Any]) -> Rejection:
    """A record that carries none of a group of fields of which the contract needs one (``anyOf`` of ``required``)."""
    names = [n for alt in alternatives if isinstance(alt, dict) for n in alt.get("required", ())]
    prefix = "".join(f"{p}." for p in path)
    listed = ", ".join(f"`{prefix}{n}`" for n in names)
    return Rejection("required", f"{prefix}{names[0]}" if names else prefix.rstrip(".") or "(record)",
                     f"the record needs one of {listed}; it has none", "")


def _presence_groups(schema: Any) -> tuple[_Groups, Any]:
    """The top level's groups of fields of which a record needs one (an ``anyOf`` whose every branch is only
    ``required``, by itself or in ``allOf``), each as its branches' field names; and the schema without them."""
    if not isinstance(schema, dict):
        return (), schema
    groups: list[tuple[tuple[str, ...], ...]] = []
    rest = dict(schema)
    if _only_required(schema.get("anyOf")):
        groups.append(tuple(tuple(branch["required"]) for branch in schema["anyOf"]))
        del rest["anyOf"]
    if isinstance(schema.get("allOf"), list):
        kept = []
        for part in schema["allOf"]:
            if isinstance(part, dict) and set(part) == {"anyOf"} and _only_required(part["anyOf"]):
                groups.append(tuple(tuple(branch["required"]) for branch in part["anyOf"]))
            else:
                kept.append(part)
        if kept:
            rest["allOf"] = kept
        else:
            del rest["allOf"]
    return tuple(groups), rest


def _only_required(branches: Any) -> bool:
    """True for a non-empty list of branches that each only require fields (``{"required": [names]}``)."""
    return isinstance(branches, list) and bool(branches) and all(
        isinstance(b, dict) and set(b) == {"required"} and isinstance(b["required"], list)
        and all(isinstance(n, str) for n in b["required"]) for b in branches)


def _node_at(schema: dict[str, Any], path: list[Any]) -> dict[str, Any] | None:
    node: Any = schema
    for part in path:
        if isinstance(part, int) or (isinstance(part, str) and part.isdigit()):
            node = node.get("items") if isinstance(node, dict) else None
        else:
            node = (node.get("properties") or {}).get(part) if isinstance(node, dict) else None
        if node is None:
            return None
    return node


def _strip_annotations(schema: Any) -> Any:
    """Drop CityBrain's x-* annotations; they govern fields, they do not validate values."""
    if isinstance(schema, dict):
        return {k: _strip_annotations(v) for k, v in schema.items() if not k.startswith("x-")}
    if isinstance(schema, list):
        return [_strip_annotations(v) for v in schema]
    return schema
