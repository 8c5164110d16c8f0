"""Schema contracts: one YAML file per topic in ``schemas/``, JSON Schema 2020-12 plus metadata.

A contract file looks like::

    contract: raw.sensor.air_quality      # <zone>.<domain>.<entity>; the topic adds .v<major>
    version: 1.0.0
    title: ...
    description: ...
    owner: environment                    # a department id (citybrain.contracts.departments)
    key: id                               # record field used as the Kafka key, or a list: the first present
    event_id: id                          # optional: field holding a stable event id
    event_time: dateObserved              # optional: field(s) holding the time the record describes, the first
                                          # present wins; the lake files a record under its hour
    compatibility: backward               # backward | forward | full | none
    topic: {partitions: 6, cleanup_policy: delete, retention: 7d}
    standard: FIWARE AirQualityObserved   # optional: the public standard it follows
    headers: {...}                        # optional: headers it carries beyond the standard five
    schema: {...}                         # JSON Schema; each property has x-classification
    examples: [...]                       # valid records; lint checks them
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import yaml
from citybrain.errors import InputError

if TYPE_CHECKING:
    from citybrain.settings import Settings

ZONES = ("raw", "city", "dispatch", "metrics", "alert", "dlq", "catalog", "audit")
COMPATIBILITY_MODES = ("backward", "forward", "full", "none")
CLASSIFICATIONS = ("public", "internal", "sensitive")
CLEANUP_POLICIES = ("delete", "compact")
#: Zones allowed to hold personal data as-is (the restricted zone and its dead letters).
RESTRICTED_ZONES = ("raw", "dlq")

CONTRACT_ID_RE = re.compile(r"^(%s)\.[a-z0-9_]+\.[a-z0-9_]+$" % "|".join(ZONES))
SEMVER_RE = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")
RETENTION_RE = re.compile(r"^(\d+)(ms|s|m|h|d)$")
_RETENTION_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}

TOP_LEVEL_KEYS = {
    "contract", "version", "title", "description", "owner", "key", "event_id", "event_time",
    "compatibility", "topic", "standard", "headers", "schema", "examples", "deprecated",
}
REQUIRED_KEYS = {
    "contract", "version", "title", "description", "owner", "key", "compatibility",
    "topic", "schema", "examples",
}
#: Keywords whose meaning is the same in JSON Schema 2020-12 and in the compiled validator.
SUPPORTED_KEYWORDS = {
    "$schema", "$id", "$comment", "title", "description", "type", "properties", "required",
    "additionalProperties", "items", "enum", "const", "minimum", "maximum",
    "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength", "pattern", "format",
    "minItems", "maxItems", "uniqueItems", "default", "examples", "allOf", "anyOf",
    "x-classification", "x-personal", "x-protect", "x-unit", "x-standard-field",
}
#: How a personal field of a raw contract leaves the restricted zone (see citybrain/access/privacy.py).
PROTECTIONS = ("pseudonymise", "coarsen_street", "drop")


class ContractError(InputError):
    """A contract file cannot be read or fails lint; the message names the file, the field and the fix."""


@dataclass(frozen=True)
class FieldInfo:
    """One (possibly nested) field of a contract, as seen by governance tools."""

    path: str
    types: tuple[str, ...]
    classification: str | None
    personal: bool
    required: bool
    #: x-protect: pseudonymise, coarsen_street or drop (personal fields of raw contracts).
    protect: str | None = None


@dataclass(frozen=True)
class Contract:
    """A loaded contract. ``raw`` is the parsed YAML document, kept for publishing."""

    raw: dict[str, Any]
    source: Path | None = field(default=None, compare=False)

    # -- identity ------------------------------------------------------------------------

    @property
    def id(self) -> str:
        return self.raw["contract"]

    @property
    def version(self) -> str:
        return str(self.raw["version"])

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])

    @property
    def topic(self) -> str:
        return f"{self.id}.v{self.major}"

    @property
    def zone(self) -> str:
        return self.id.split(".", 1)[0]

    @property
    def owner(self) -> str:
        return self.raw["owner"]

    @property
    def key_fields(self) -> list[str]:
        """The fields the Kafka key is taken from: the first a record carries."""
        key = self.raw["key"]
        return [str(k) for k in key] if isinstance(key, list) else [str(key)]

    @property
    def key_field(self) -> str:
        """The field that always gives the key (the last of ``key_fields``, which lint makes required)."""
        return self.key_fields[-1]

    def key_of(self, record: dict[str, Any]) -> bytes:
        """The Kafka key of one valid record."""
        for name in self.key_fields[:-1]:
            if record.get(name) is not None:
                return str(record[name]).encode()
        return str(record[self.key_field]).encode()

    @property
    def event_id_field(self) -> str | None:
        return self.raw.get("event_id")

    @property
    def event_time_fields(self) -> list[str]:
        """The fields holding the time a record describes (``event_time``), the first a record carries; empty when
        the contract names none (its records' time is their Kafka timestamp)."""
        names = self.raw.get("event_time")
        if names is None:
            return []
        return [str(n) for n in names] if isinstance(names, list) else [str(names)]

    @property
    def compatibility(self) -> str:
        return self.raw["compatibility"]

    @property
    def schema(self) -> dict[str, Any]:
        return self.raw["schema"]

    @property
    def examples(self) -> list[dict[str, Any]]:
        return list(self.raw.get("examples") or [])

    # -- topic settings -------------------------------------------------------------------

    @property
    def partitions(self) -> int:
        return int(self.raw["topic"]["partitions"])

    @property
    def cleanup_policy(self) -> str:
        return self.raw["topic"].get("cleanup_policy", "delete")

    @property
    def retention_ms(self) -> int | None:
        text = self.raw["topic"].get("retention")
        if text is None:
            return None
        if text == "forever":
            return -1
        return parse_retention(str(text))

    def topic_configs(self) -> dict[str, str]:
        """Kafka topic configs this contract asks for."""
        configs = {"cleanup.policy": self.cleanup_policy}
        if self.retention_ms is not None:
            configs["retention.ms"] = str(self.retention_ms)
        return configs

    # -- fields ---------------------------------------------------------------------------

    @cached_property
    def fields(self) -> dict[str, FieldInfo]:
        """Every property, nested ones as ``parent.child`` and array items as ``parent[].child``."""
        return {f.path: f for f in iter_fields(self.schema)}

    def personal_fields(self) -> list[str]:
        return [p for p, f in self.fields.items() if f.personal]

    def to_document(self) -> dict[str, Any]:
        """The contract as published to the catalog topic (its YAML content, as JSON)."""
        return {**self.raw, "topic_name": self.topic}


def iter_fields(schema: dict[str, Any], prefix: str = "", parent_required: bool = True) -> Iterator[FieldInfo]:
    required = set(schema.get("required", ()))
    for name, sub in (schema.get("properties") or {}).items():
        if not isinstance(sub, dict):
            continue
        path = f"{prefix}{name}"
        types = sub.get("type", ())
        types = (types,) if isinstance(types, str) else tuple(types)
        yield FieldInfo(
            path=path,
            types=types,
            classification=sub.get("x-classification"),
            personal=bool(sub.get("x-personal", False)),
            required=parent_required and name in required,
            protect=sub.get("x-protect"),
        )
        if "properties" in sub:
            yield from iter_fields(sub, f"{path}.", parent_required and name in required)
        items = sub.get("items")
        if isinstance(items, dict) and "properties" in items:
            yield from iter_fields(items, f"{path}[].", False)


def parse_retention(text: str) -> int | None:
    m = RETENTION_RE.match(text)
    return int(m.group(1)) * _RETENTION_MS[m.group(2)] if m else None


def load_contract_text(text: str, source: Path | None = None) -> Contract:
    """Parse one contract document (YAML). Structural problems raise ContractError."""
    where = str(source) if source else "<contract>"
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ContractError(f"{where}: not valid YAML: {exc}. Fix: correct the syntax.") from exc
    if not isinstance(doc, dict):
        raise ContractError(f"{where}: a contract must be a YAML mapping, got {type(doc).__name__}.")
    missing = sorted(REQUIRED_KEYS - doc.keys())
    if missing:
        raise ContractError(f"{where}: missing required key(s) {', '.join(missing)}. Fix: add them (see schemas/README.md).")
    if not isinstance(doc.get("schema"), dict) or not isinstance(doc.get("topic"), dict):
        raise ContractError(f"{where}: `schema` and `topic` must be mappings.")
    if not SEMVER_RE.match(str(doc["version"])):
        raise ContractError(f"{where}: version {doc['version']!r} is not MAJOR.MINOR.PATCH. Fix: e.g. 1.0.0.")
    return Contract(raw=doc, source=source)


def load_contract(path: Path) -> Contract:
    return load_contract_text(path.read_text(encoding="utf-8"), source=path)


def contract_files(schemas_dir: Path) -> list[Path]:
    return sorted(p for p in schemas_dir.glob("*.yaml") if not p.name.startswith("_"))


def load_all(schemas_dir: Path, *more: Path) -> dict[str, Contract]:
    """Every contract in ``schemas_dir`` and in the folders of ``more`` that exist, keyed by topic name; a topic
    declared twice is refused."""
    contracts: dict[str, Contract] = {}
    for path in [*contract_files(schemas_dir), *(p for folder in more if folder.is_dir() for p in contract_files(folder))]:
        c = load_contract(path)
        if c.topic in contracts:
            raise ContractError(f"{path}: topic {c.topic} is already declared by {contracts[c.topic].source}.")
        contracts[c.topic] = c
    return contracts


def load_platform(settings: Settings) -> dict[str, Contract]:
    """Every contract the platform runs on: ``schemas/`` and the dispatch contracts ``citybrain city import`` wrote
    for the city's departments beyond the built-in roles (``Settings.city_contracts_dir``). Topic creation, the
    access model, the stream workers, the lake and the operations view load them here."""
    return load_all(settings.schemas_dir, settings.city_contracts_dir)


def resolve(contracts: dict[str, Contract], name: str) -> Contract:
    """Find a contract by topic name (``raw.x.y.v1``) or contract id (``raw.x.y``, latest major)."""
    if name in contracts:
        return contracts[name]
    by_id = sorted((c for c in contracts.values() if c.id == name), key=lambda c: c.major)
    if by_id:
        return by_id[-1]
    close = sorted(t for t in contracts if name.split(".")[-1] in t or t.startswith(name))
    hint = f" Did you mean {', '.join(close[:3])}?" if close else ""
    raise ContractError(
        f"No contract named {name!r}.{hint} Fix: run `citybrain contracts list` for the known contracts."
    )
