"""Schema compatibility: what changed between two versions of a contract and whom it breaks.

Contracts are closed JSON Schemas (unknown fields are refused), so every change is judged
by the set of records each version accepts:

* it **breaks backward** when the new version refuses records the old one accepted
  (consumers upgraded to the new contract can no longer read the topic's history);
* it **breaks forward** when the old version refuses records the new one accepts
  (consumers still on the old contract choke on what producers now send).

``backward`` mode forbids the first kind, ``forward`` the second, ``full`` both.
Removing a field breaks backward in every case (old records carry it, consumers read it);
removing an enum value is a narrowing and is caught like any other. A changed ``pattern`` breaks backward
unless it provably accepts every value the old one did (:func:`citybrain.contracts.patterns.widens`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

from citybrain.contracts.patterns import widens

BACKWARD = "backward"
FORWARD = "forward"
BOTH = frozenset({BACKWARD, FORWARD})

_LOWER_BOUNDS = ("minimum", "exclusiveMinimum", "minLength", "minItems")
_UPPER_BOUNDS = ("maximum", "exclusiveMaximum", "maxLength", "maxItems")


@dataclass(frozen=True)
class Change:
    """One difference between two schema versions."""

    field: str
    rule: str
    message: str
    breaks: frozenset[str]

    def breaks_mode(self, mode: str) -> bool:
        if mode == "none":
            return False
        if mode == "full":
            return bool(self.breaks)
        return mode in self.breaks


def diff(old: dict[str, Any], new: dict[str, Any], path: str = "") -> list[Change]:
    """Every change from ``old`` to ``new`` (two JSON Schemas), compatible ones included."""
    return list(_diff_object(old, new, path))


def breaking(old: dict[str, Any], new: dict[str, Any], mode: str) -> list[Change]:
    return [c for c in diff(old, new) if c.breaks_mode(mode)]


def _diff_object(old: dict[str, Any], new: dict[str, Any], prefix: str) -> Iterator[Change]:
    old_props = old.get("properties") or {}
    new_props = new.get("properties") or {}
    old_req = set(old.get("required") or ())
    new_req = set(new.get("required") or ())
    old_closed = old.get("additionalProperties") is False
    new_closed = new.get("additionalProperties") is False
    where = prefix.rstrip(".") or "(record)"

    if old_closed and not new_closed:
        yield Change(where, "closed-object-opened", f"`{where}` now accepts unknown fields", frozenset({FORWARD}))
    if new_closed and not old_closed:
        yield Change(where, "object-closed", f"`{where}` now refuses unknown fields", frozenset({BACKWARD}))

    for group in _groups(new):
        if not _guaranteed(group, old_req, _groups(old)):
            yield Change(where, "requirement-added", f"`{where}` now needs one of {', '.join(sorted(group))}",
                         frozenset({BACKWARD}))
    for group in _groups(old):
        if not _guaranteed(group, new_req, _groups(new)):
            yield Change(where, "requirement-relaxed", f"`{where}` no longer needs one of {', '.join(sorted(group))}",
                         frozenset({FORWARD}))

    removed = [n for n in old_props if n not in new_props]
    added = [n for n in new_props if n not in old_props]
    renamed: dict[str, str] = {}
    for r in removed:
        for a in added:
            if a not in renamed.values() and _same_shape(old_props[r], new_props[a]):
                renamed[r] = a
                break

    for name in removed:
        field = f"{prefix}{name}"
        if name in renamed:
            yield Change(
                field, "field-renamed",
                f"field `{field}` was renamed to `{prefix}{renamed[name]}`: consumers reading `{field}` "
                "lose it and records carrying it are refused",
                BOTH,
            )
            continue
        breaks = {BACKWARD} | ({FORWARD} if name in old_req else set())
        yield Change(
            field, "field-removed",
            f"field `{field}` was removed: records that carry it are refused and consumers that read it break",
            frozenset(breaks),
        )
    for name in added:
        if name in renamed.values():
            continue
        field = f"{prefix}{name}"
        breaks = ({BACKWARD} if name in new_req else set()) | ({FORWARD} if old_closed else set())
        kind = "required" if name in new_req else "optional"
        yield Change(
            field, f"{kind}-field-added",
            f"{kind} field `{field}` was added"
            + (": records written before it lack it" if name in new_req else "")
            + (": readers on the old contract refuse records carrying it" if old_closed else ""),
            frozenset(breaks),
        )

    for name in old_props.keys() & new_props.keys():
        field = f"{prefix}{name}"
        if name not in old_req and name in new_req:
            yield Change(field, "optional-made-required", f"optional field `{field}` was made required", frozenset({BACKWARD}))
        if name in old_req and name not in new_req:
            yield Change(field, "required-made-optional", f"required field `{field}` was made optional", frozenset({FORWARD}))
        yield from _diff_value(old_props[name], new_props[name], field)


def _diff_value(old: dict[str, Any], new: dict[str, Any], field: str) -> Iterator[Change]:
    old_enum = _enum(old)
    if old_enum is not None and _enum(new) is None:
        # the old field took a list of values: the new one narrows it only if it refuses one of them
        refused = [v for v in old_enum if not _accepts(new, v)]
        if refused:
            yield Change(field, "enum-value-removed", f"`{field}` no longer allows value(s) {refused!r}",
                         frozenset({BACKWARD}))
        yield Change(field, "enum-dropped", f"`{field}` is no longer restricted to {old_enum!r}", frozenset({FORWARD}))
        return
    old_types, new_types = _types(old) or _enum_types(old_enum), _types(new)
    if old_types and new_types:
        lost = [t for t in old_types if not _covered(t, new_types)]
        gained = [t for t in new_types if not _covered(t, old_types)]
        if lost:
            yield Change(field, "type-narrowed", f"`{field}` no longer accepts type {', '.join(lost)} (was {'/'.join(old_types)}, now {'/'.join(new_types)})", frozenset({BACKWARD}))
        if gained:
            yield Change(field, "type-widened", f"`{field}` now also accepts type {', '.join(gained)}", frozenset({FORWARD}))
    elif new_types and not old_types:
        yield Change(field, "type-narrowed", f"`{field}` is now restricted to type {'/'.join(new_types)}", frozenset({BACKWARD}))

    new_enum = _enum(new)
    if old_enum is not None and new_enum is not None:
        for value in old_enum:
            if value not in new_enum:
                yield Change(field, "enum-value-removed", f"`{field}` no longer allows enum value {value!r}", frozenset({BACKWARD}))
        for value in new_enum:
            if value not in old_enum:
                yield Change(field, "enum-value-added", f"`{field}` now allows enum value {value!r}", frozenset({FORWARD}))
    elif new_enum is not None:
        yield Change(field, "enum-introduced", f"`{field}` is now restricted to {new_enum!r}", frozenset({BACKWARD}))

    for key in _LOWER_BOUNDS:
        yield from _bound(field, key, old.get(key), new.get(key), tighter_if_greater=True)
    for key in _UPPER_BOUNDS:
        yield from _bound(field, key, old.get(key), new.get(key), tighter_if_greater=False)

    for key in ("pattern", "format"):
        o, n = old.get(key), new.get(key)
        if o == n:
            continue
        if key == "pattern" and o is not None and n is not None and widens(o, n):
            yield Change(field, "pattern-widened", f"`{field}` pattern widened from {o!r} to {n!r}: every value "
                         "the old one accepted still passes", frozenset({FORWARD}))
            continue
        breaks = ({BACKWARD} if n is not None else set()) | ({FORWARD} if o is not None else set())
        yield Change(field, f"{key}-changed", f"`{field}` {key} changed from {o!r} to {n!r}", frozenset(breaks))

    if "properties" in old or "properties" in new:
        yield from _diff_object(old, new, f"{field}.")
    if isinstance(old.get("items"), dict) and isinstance(new.get("items"), dict):
        yield from _diff_value(old["items"], new["items"], f"{field}[]")


def _bound(field: str, key: str, old: Any, new: Any, *, tighter_if_greater: bool) -> Iterator[Change]:
    if old == new:
        return
    if old is None:
        tighter = True
    elif new is None:
        tighter = False
    else:
        tighter = (new > old) if tighter_if_greater else (new < old)
    if tighter:
        yield Change(field, "range-narrowed", f"`{field}` {key} tightened from {old!r} to {new!r}", frozenset({BACKWARD}))
    else:
        yield Change(field, "range-widened", f"`{field}` {key} relaxed from {old!r} to {new!r}", frozenset({FORWARD}))


def _types(schema: dict[str, Any]) -> list[str]:
    t = schema.get("type")
    if t is None:
        return []
    return [t] if isinstance(t, str) else list(t)


def _covered(t: str, types: list[str]) -> bool:
    return t in types or (t == "integer" and "number" in types)


def _enum(schema: dict[str, Any]) -> list[Any] | None:
    if "enum" in schema:
        return list(schema["enum"])
    if "const" in schema:
        return [schema["const"]]
    return None


def _same_shape(a: dict[str, Any], b: dict[str, Any]) -> bool:
    strip = lambda s: {k: v for k, v in s.items() if k not in ("description", "title", "examples")}  # noqa: E731
    return isinstance(a, dict) and isinstance(b, dict) and strip(a) == strip(b)


def _groups(schema: dict[str, Any]) -> list[frozenset[str]]:
    """The schema's "one of these fields" requirements: ``anyOf`` of ``required``, alone or under ``allOf``."""
    parts = [schema, *(p for p in schema.get("allOf") or () if isinstance(p, dict))]
    groups = []
    for part in parts:
        alternatives = part.get("anyOf")
        if isinstance(alternatives, list):
            groups.append(frozenset(n for alt in alternatives if isinstance(alt, dict) for n in alt.get("required", ())))
    return groups


def _guaranteed(group: frozenset[str], required: set[str], groups: list[frozenset[str]]) -> bool:
    """Every record meeting ``required`` and ``groups`` carries a field of ``group``."""
    return bool(group & required) or any(g <= group for g in groups)


def _accepts(schema: dict[str, Any], value: Any) -> bool:
    """Whether a field's schema takes one value (check time only: python-jsonschema)."""
    import jsonschema

    plain = {k: v for k, v in schema.items() if not k.startswith("x-") and k != "description"}
    return jsonschema.Draft202012Validator(plain, format_checker=jsonschema.FormatChecker()).is_valid(value)


def _enum_types(values: list[Any] | None) -> list[str]:
    """The JSON types of an enum's values (an untyped enum of strings holds strings only)."""
    names = {str: "string", bool: "boolean", int: "integer", float: "number", type(None): "null"}
    return sorted({names.get(type(v), "object") for v in values or ()})
