"""Contract lint: the rules every contract in ``schemas/`` must meet before it can be released."""

from __future__ import annotations

from typing import Any, Collection, Iterator

from citybrain.contracts.model import (
    CLASSIFICATIONS, CLEANUP_POLICIES, COMPATIBILITY_MODES, CONTRACT_ID_RE, PROTECTIONS, RESTRICTED_ZONES,
    RETENTION_RE, SUPPORTED_KEYWORDS, TOP_LEVEL_KEYS, ZONES, Contract,
)
from citybrain.contracts.departments import DEPARTMENTS


def lint(contract: Contract, departments: Collection[str] = DEPARTMENTS) -> list[str]:
    """Every problem with one contract, each naming the field or key, the rule and the fix; its owner must be one
    of ``departments`` (the built-in roles, or with the imported city's own: ``known_departments``)."""
    return list(_lint(contract, departments))


def _lint(c: Contract, departments: Collection[str]) -> Iterator[str]:
    where = c.source.name if c.source else c.id
    raw = c.raw

    unknown = sorted(set(raw) - TOP_LEVEL_KEYS)
    if unknown:
        yield f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(TOP_LEVEL_KEYS))}"
    if not CONTRACT_ID_RE.match(c.id):
        yield (f"{where}: contract id {c.id!r} must be <zone>.<domain>.<entity> in lower snake case "
               f"with zone one of {', '.join(ZONES)}")
    if c.source is not None and c.source.name != f"{c.topic}.yaml":
        yield f"{where}: file must be named {c.topic}.yaml (topic name of version {c.version})"
    if c.owner not in departments:
        yield f"{where}: owner {c.owner!r} is not a known department; known: {', '.join(sorted(departments))}"
    if c.compatibility not in COMPATIBILITY_MODES:
        yield f"{where}: compatibility {c.compatibility!r} must be one of {', '.join(COMPATIBILITY_MODES)}"
    for key in ("title", "description"):
        if not str(raw.get(key) or "").strip():
            yield f"{where}: `{key}` is empty; consumers read it to know what the topic carries"

    yield from _lint_topic(where, c)
    yield from _lint_schema(where, c)


def _lint_topic(where: str, c: Contract) -> Iterator[str]:
    topic = c.raw["topic"]
    unknown = sorted(set(topic) - {"partitions", "cleanup_policy", "retention"})
    if unknown:
        yield f"{where}: topic has unknown key(s) {', '.join(unknown)}; allowed: partitions, cleanup_policy, retention"
    parts = topic.get("partitions")
    if not isinstance(parts, int) or not 1 <= parts <= 1000:
        yield f"{where}: topic.partitions must be an integer from 1 to 1000, got {parts!r}"
    policy = topic.get("cleanup_policy", "delete")
    if policy not in CLEANUP_POLICIES:
        yield f"{where}: topic.cleanup_policy must be one of {', '.join(CLEANUP_POLICIES)}, got {policy!r}"
    retention = topic.get("retention")
    if policy == "delete" and retention is None:
        yield f"{where}: topic.retention is required when cleanup_policy is delete (e.g. 7d, 90d, forever)"
    if retention is not None and retention != "forever" and not RETENTION_RE.match(str(retention)):
        yield f"{where}: topic.retention {retention!r} must be a number with ms/s/m/h/d (e.g. 7d) or forever"


def _lint_schema(where: str, c: Contract) -> Iterator[str]:
    from jsonschema import Draft202012Validator  # lint time only, never per record
    from jsonschema.exceptions import SchemaError

    schema = c.schema
    if schema.get("$schema") != "https://json-schema.org/draft/2020-12/schema":
        yield f"{where}: schema.$schema must be https://json-schema.org/draft/2020-12/schema"
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        yield f"{where}: schema is not valid JSON Schema 2020-12 at {'/'.join(map(str, exc.path))}: {exc.message}"
        return
    if schema.get("type") != "object" or schema.get("additionalProperties") is not False:
        yield f"{where}: schema must be a closed object (type: object, additionalProperties: false) so unknown fields are refused"

    for path, keyword in _keywords(schema):
        if keyword not in SUPPORTED_KEYWORDS:
            yield (f"{where}: schema keyword `{keyword}` at {path or '/'} is not supported by the compiled "
                   f"validator; use only: {', '.join(sorted(k for k in SUPPORTED_KEYWORDS if not k.startswith('x-')))}")

    for f in c.fields.values():
        if f.classification not in CLASSIFICATIONS:
            yield (f"{where}: field `{f.path}` needs x-classification (one of {', '.join(CLASSIFICATIONS)}), "
                   f"got {f.classification!r}")
        if f.personal and f.classification != "sensitive":
            yield f"{where}: field `{f.path}` is personal data (x-personal) so its classification must be sensitive"
        if f.personal and c.zone == "raw" and f.protect not in PROTECTIONS:
            yield (f"{where}: personal field `{f.path}` needs x-protect (one of {', '.join(PROTECTIONS)}): how it "
                   "leaves the restricted raw zone. Fix: e.g. `x-protect: pseudonymise` for a phone number.")
        if f.protect is not None and not f.personal:
            yield f"{where}: field `{f.path}` has x-protect but is not personal data (x-personal: true). Fix: remove one."
        if f.personal and c.zone not in RESTRICTED_ZONES:
            yield (f"{where}: field `{f.path}` is personal data in zone {c.zone!r}; personal data may only "
                   f"leave the restricted zones ({', '.join(RESTRICTED_ZONES)}) pseudonymised or coarsened")

    for name in c.key_fields[:-1]:
        if name not in c.fields:
            yield f"{where}: key field `{name}` is not a top-level property of the schema"
    for role, name in (("key", c.key_field), ("event_id", c.event_id_field)):
        if name is None:
            continue
        info = c.fields.get(name)
        if info is None or not info.required:
            yield (f"{where}: {role} field `{name}` must be a required top-level property of the schema"
                   + (" (the last of a key list is the one every record carries)" if role == "key" and len(c.key_fields) > 1 else ""))

    for name in c.event_time_fields:
        prop = (c.schema.get("properties") or {}).get(name)
        if not isinstance(prop, dict) or prop.get("format") != "date-time":
            yield (f"{where}: event_time field `{name}` must be a top-level property with format date-time "
                   "(the lake files each record under the hour it names). Fix: name such a field, or drop event_time.")

    yield from _lint_examples(where, c)


def _lint_examples(where: str, c: Contract) -> Iterator[str]:
    from citybrain.contracts.validate import RecordValidator

    if not c.examples:
        yield f"{where}: give at least one example record; it documents the contract and is checked here"
        return
    try:
        check = RecordValidator(c)
    except Exception as exc:  # fastjsonschema could not compile it
        yield f"{where}: schema does not compile for validation: {exc}"
        return
    for i, example in enumerate(c.examples):
        rejection = check(example)
        if rejection is not None:
            yield f"{where}: examples[{i}] is invalid: {rejection.message}"


def _keywords(schema: Any, path: str = "") -> Iterator[tuple[str, str]]:
    if not isinstance(schema, dict):
        return
    for key, value in schema.items():
        yield path, key
        if key == "properties" and isinstance(value, dict):
            for name, sub in value.items():
                yield from _keywords(sub, f"{path}/{name}")
        elif key == "items":
            yield from _keywords(value, f"{path}[]")


def lint_all(contracts: dict[str, Contract], departments: Collection[str] = DEPARTMENTS) -> list[str]:
    problems: list[str] = []
    for c in contracts.values():
        problems.extend(lint(c, departments))
    return problems

