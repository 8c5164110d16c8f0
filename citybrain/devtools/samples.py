"""Sample feeds built from each contract's own examples, for the demo and for smoke checks.

The city simulator (a later issue) replaces this with a city that behaves like a real one;
these samples only have to be valid (or, for ``bad_lines``, invalid in known ways).
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

from citybrain.contracts.model import Contract

_LAST_DIGITS = re.compile(r"(\d+)(?!.*\d)")


def _bump(text: str, i: int) -> str:
    """Change the last run of digits in ``text`` by ``i``, keeping its width."""
    m = _LAST_DIGITS.search(text)
    if not m:
        return f"{text}{i}"
    digits = m.group(1)
    value = (int(digits) + i) % (10 ** len(digits))
    return text[: m.start()] + str(value).zfill(len(digits)) + text[m.end():]


def sample_records(contract: Contract, count: int) -> list[dict[str, Any]]:
    """``count`` valid records: the contract's examples with distinct keys and event ids."""
    examples = contract.examples
    out = []
    for i in range(count):
        record = copy.deepcopy(examples[i % len(examples)])
        step = i // len(examples)
        for name in {*contract.key_fields, contract.event_id_field} - {None}:
            if isinstance(record.get(name), str) and step:
                record[name] = _bump(record[name], step)
        out.append(record)
    return out


def _bounded_numeric_field(contract: Contract) -> tuple[str, float] | None:
    for name, sub in contract.schema.get("properties", {}).items():
        if isinstance(sub, dict) and "maximum" in sub:
            return name, sub["maximum"]
    return None


def bad_lines(contract: Contract, max_record_bytes: int) -> list[tuple[str, bytes]]:
    """JSONL lines that break the contract in the ways real feeds do, labelled by expected rule."""
    good = contract.examples[0]
    key = contract.key_field
    required = [r for r in contract.schema.get("required", []) if r != key]
    lines: list[tuple[str, dict[str, Any] | bytes]] = [
        ("json-syntax", b'{"' + key.encode() + b'": "broken", '),
        ("not-an-object", b'["not", "an", "object"]'),
        ("empty-record", b"   "),
        ("encoding", json.dumps(good, ensure_ascii=False).encode("utf-8")[:-1] + b', "x": "\xd6\xd0\xce\xc4"}'),
        ("unknown-field", {**good, "unexpected_field": 1}),
        ("type", {**good, key: 12345}),
        ("too-large", {**good, "padding": "x" * (max_record_bytes + 10)}),
    ]
    if required:
        missing = dict(good)
        missing.pop(required[0], None)
        lines.append(("required", missing))
    bounded = _bounded_numeric_field(contract)
    if bounded:
        lines.append(("maximum", {**good, bounded[0]: bounded[1] * 10 + 1}))
    return [
        (rule, v if isinstance(v, bytes) else json.dumps(v, ensure_ascii=False).encode())
        for rule, v in lines
    ]
