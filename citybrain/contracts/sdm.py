"""The sensor contracts, generated from the FIWARE Smart Data Models they follow.

Each sensor contract carries every attribute of its model, with the types and ranges of the
model's own ``schema.json``, pinned in ``schemas/fiware/`` (``models.yaml`` says from which commit).
What CityBrain adds is kept beside it in ``schemas/fiware/models.yaml`` and reviewed like code: the
contract's metadata, what it truly requires to place and use a reading, the few fields it defines
itself (a Point location; fields beyond the model), units and classifications, and examples.
``citybrain dev contracts models`` writes the contract files; a unit test keeps them equal.

The models' schemas use ``$ref``, ``allOf``, ``anyOf`` and ``oneOf``, which the compiled validator and
the compatibility checker do not read. They are flattened: references resolved against the pinned
files (by the file name of their URL), ``allOf`` merged, and alternatives merged into one type list
that keeps a constraint only where every alternative it could apply to agrees on it, so the contract
accepts at least what the model accepts, never less.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from citybrain.contracts.model import SUPPORTED_KEYWORDS
from citybrain.errors import InputError

HEADER = ("# Written by `citybrain dev contracts models` from schemas/fiware/models.yaml and the pinned Smart Data "
          "Model {model}:\n# edit those, not this file.\n")
META_KEYS = ("contract", "version", "title", "description", "owner", "standard", "key", "event_time", "compatibility",
             "topic")
#: Keywords that constrain values of one JSON type only (others constrain every value).
TYPE_KEYWORDS = {
    "string": {"minLength", "maxLength", "pattern", "format"},
    "number": {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"},
    "integer": {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"},
    "array": {"items", "minItems", "maxItems", "uniqueItems"},
    "object": {"properties", "required", "additionalProperties"},
}
#: Prefixes of the models' descriptions naming the NGSI attribute kind (the contract is keyValues).
KIND_PREFIXES = ("Property. ", "GeoProperty. ", "Relationship. ", "Property.", "Relationship.")
KEPT = SUPPORTED_KEYWORDS - {"$schema", "$id", "examples", "default"}


class ModelError(InputError):
    """A model or overlay the generator cannot read."""


def fiware_dir(schemas_dir: Path) -> Path:
    return schemas_dir / "fiware"


@lru_cache(maxsize=None)
def _load_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"{path.name}: the pinned Smart Data Model file is missing from schemas/fiware/. Fix: copy "
                         "it from the commit models.yaml names.") from None


def load_overlay(schemas_dir: Path) -> dict[str, Any]:
    return yaml.safe_load((fiware_dir(schemas_dir) / "models.yaml").read_text(encoding="utf-8"))


class Resolver:
    """Resolves a model's ``$ref`` against the pinned files of ``schemas/fiware``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def document(self, url: str, current: Path) -> Path:
        name = url.split("#", 1)[0].rstrip("/").rsplit("/", 1)[-1]
        if not name:
            return current
        if name == "schema.json":     # another model's schema: not used by the five sensor models
            raise ModelError(f"$ref {url!r} points to another model's schema; pin it under schemas/fiware/ first")
        return self.root / name

    def target(self, ref: str, current: Path) -> tuple[dict[str, Any], Path]:
        path = self.document(ref, current)
        node: Any = _load_json(path)
        pointer = ref.split("#", 1)[1] if "#" in ref else ""
        for part in filter(None, pointer.split("/")):
            if not isinstance(node, dict) or part not in node:
                raise ModelError(f"$ref {ref!r}: no {part!r} in {path.name}")
            node = node[part]
        return node, path


def _description(text: Any) -> str | None:
    if not isinstance(text, str):
        return None
    text = " ".join(text.split())
    for prefix in KIND_PREFIXES:
        if text.startswith(prefix):
            text = text[len(prefix):].strip()
            break
    return text or None


def _types(node: dict[str, Any]) -> list[str] | None:
    t = node.get("type")
    if t is None:
        return None
    return [t] if isinstance(t, str) else list(t)


def _merge_alternatives(branches: list[dict[str, Any]]) -> dict[str, Any]:
    """One schema accepting what any branch accepts: a type list, and each constraint that every branch it can
    apply to shares (a constraint of one type is kept when the other branches cannot hold that type)."""
    if any(_types(b) is None for b in branches):
        return {}
    types: list[str] = []
    for b in branches:
        types += [t for t in _types(b) or () if t not in types]
    out: dict[str, Any] = {"type": types[0] if len(types) == 1 else types}
    keys = {k for b in branches for k in b} - {"type", "description"}
    for key in sorted(keys):
        owners = [b for b in branches if key in b]
        values = [json.dumps(b[key], sort_keys=True) for b in owners]
        if len(set(values)) != 1:
            continue
        applies = {t for t, kws in TYPE_KEYWORDS.items() if key in kws}
        # every branch that can hold a value this keyword constrains must carry the keyword
        exposed = [b for b in branches if not applies or set(_types(b) or ()) & applies]
        if all(key in b for b in exposed):
            out[key] = owners[0][key]
    return out


def flatten(node: Any, current: Path, resolver: Resolver) -> dict[str, Any]:
    """A model's (sub)schema in the keywords the contract tooling reads."""
    if not isinstance(node, dict):
        return {}
    node = dict(node)
    while "$ref" in node:
        target, current = resolver.target(node.pop("$ref"), current)
        node = {**target, **node}
    for part in node.pop("allOf", []):
        part = flatten(part, current, resolver)
        props = {**part.get("properties", {}), **node.get("properties", {})}
        node = {**part, **node}
        if props:
            node["properties"] = props
    for key in ("oneOf", "anyOf"):
        if key in node:
            merged = _merge_alternatives([flatten(b, current, resolver) for b in node.pop(key)])
            node = {**merged, **node}
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "properties" and isinstance(value, dict):
            out[key] = {name: flatten(sub, current, resolver) for name, sub in value.items()}
        elif key == "items":
            out[key] = flatten(value, current, resolver)
        elif key == "description":
            if _description(value):
                out[key] = _description(value)
        elif key in KEPT:
            out[key] = value
    if out.get("type") == "string" and isinstance(out.get("enum"), list) and len(out["enum"]) == 1:
        out = {"const": out.pop("enum")[0], **{k: v for k, v in out.items() if k != "type"}}
    return out


def model_properties(model: str, schemas_dir: Path) -> dict[str, dict[str, Any]]:
    """Every attribute of a Smart Data Model (``schemas/fiware/<model>/schema.json``), flattened."""
    root = fiware_dir(schemas_dir)
    path = root / model / "schema.json"
    doc = flatten(_load_json(path), path, Resolver(root))
    return doc.get("properties", {})


def _classify(schema: dict[str, Any], name: str, internal: set[str]) -> dict[str, Any]:
    out = {k: v for k, v in schema.items() if k != "properties"}
    out["x-classification"] = "internal" if name in internal else "public"
    if "properties" in schema:
        out["properties"] = {n: _classify(s, f"{name}.{n}", internal) for n, s in schema["properties"].items()}
    return out


def contract_schema(spec: dict[str, Any], schemas_dir: Path) -> dict[str, Any]:
    """The JSON Schema of one sensor contract: the model's attributes, then CityBrain's own definitions."""
    model = spec["model"]
    props = model_properties(model, schemas_dir)
    own = spec.get("fields") or {}
    unknown = sorted(set(spec.get("annotate") or {}) - set(props) - set(own))
    if unknown:
        raise ModelError(f"models.yaml: {spec['contract']} annotates {', '.join(unknown)}, which {model} does not have")
    internal = set(spec.get("internal") or ())
    properties: dict[str, Any] = {}
    for name, schema in props.items():
        if name in own:
            continue
        schema = {k: v for k, v in {**schema, **((spec.get("annotate") or {}).get(name) or {})}.items()
                  if v is not None}   # an annotation `null` drops the model's keyword
        properties[name] = _classify(schema, name, internal)
    for name, schema in own.items():
        schema = _classify(dict(schema), name, internal)
        if name not in props:
            schema["x-standard-field"] = False
        properties[name] = schema
    required = list(spec["required"])
    groups = [list(g) for g in spec.get("any_of") or ()]
    missing = [n for n in required + [n for g in groups for n in g] if n not in properties]
    if missing:
        raise ModelError(f"models.yaml: {spec['contract']} requires {', '.join(missing)}, which is not a field")
    schema: dict[str, Any] = {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
                              "additionalProperties": False, "required": required}
    if groups:   # one field of each group
        schema["allOf"] = [{"anyOf": [{"required": [n]} for n in g]} for g in groups]
    schema["properties"] = properties
    return schema


class _Flow(dict):
    """A mapping written on one line."""


def _flow_leaves(schema: Any) -> Any:
    """A property's schema on one line; an object's own properties each on theirs."""
    if isinstance(schema, dict) and "properties" in schema:
        return {k: ({n: _flow_leaves(s) for n, s in v.items()} if k == "properties" else v) for k, v in schema.items()}
    return _Flow(schema) if isinstance(schema, dict) else schema


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(_Flow, lambda d, v: d.represent_mapping("tag:yaml.org,2002:map", v.items(), flow_style=True))
_Dumper.add_representer(dict, lambda d, v: d.represent_mapping("tag:yaml.org,2002:map", v.items(),
                                                               flow_style=all(not isinstance(x, (dict, list))
                                                                              for x in v.values()) and len(v) <= 4))
_Dumper.add_representer(list, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v,
                                                                flow_style=all(not isinstance(x, dict) for x in v)))
_Dumper.add_representer(str, lambda d, v: d.represent_scalar("tag:yaml.org,2002:str", v,
                                                             style=">" if len(v) > 100 and d.indents == [] else None))


def contract_text(spec: dict[str, Any], schemas_dir: Path) -> str:
    """The contract file of one overlay entry."""
    doc = {k: spec[k] for k in META_KEYS if k in spec}
    schema = contract_schema(spec, schemas_dir)
    body = yaml.dump(doc, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=110)
    body += yaml.dump({"schema": {**{k: v for k, v in schema.items() if k != "properties"},
                                  "properties": {n: _flow_leaves(s) for n, s in schema["properties"].items()}}},
                      Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100000)
    body += yaml.dump({"examples": spec["examples"]}, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=110)
    return HEADER.format(model=spec["model"]) + body


def contract_path(spec: dict[str, Any], schemas_dir: Path) -> Path:
    major = str(spec["version"]).split(".", 1)[0]
    return schemas_dir / f"{spec['contract']}.v{major}.yaml"


def model_specs(schemas_dir: Path) -> list[dict[str, Any]]:
    return list(load_overlay(schemas_dir)["contracts"])


def stale_model_contracts(schemas_dir: Path) -> list[str]:
    """Contracts whose file is missing or differs from what the pinned model and the overlay give."""
    return [spec["contract"] for spec in model_specs(schemas_dir)
            if not contract_path(spec, schemas_dir).exists()
            or contract_path(spec, schemas_dir).read_text(encoding="utf-8") != contract_text(spec, schemas_dir)]


def write_model_contracts(schemas_dir: Path) -> list[Path]:
    paths = []
    for spec in model_specs(schemas_dir):
        path = contract_path(spec, schemas_dir)
        path.write_text(contract_text(spec, schemas_dir), encoding="utf-8")
        paths.append(path)
    return paths
