"""Records' JSON (``strict_json.dumps_record``): orjson where it writes byte for byte what ``json`` writes."""

from __future__ import annotations

import json
import random
import struct
from typing import Any

import pytest

from citybrain.ingest import strict_json
from citybrain.ingest.strict_json import JsonRefused, dumps_record

_JSON = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode


def _standard(value: Any) -> bytes | str:
    """What the standard library writes, or the rule dumps_record refuses with."""
    try:
        return _JSON(value).encode("utf-8")
    except UnicodeEncodeError:
        return "lone-surrogate"
    except ValueError:
        return "json-number"


def _ours(value: Any) -> bytes | str:
    try:
        return dumps_record(value)
    except JsonRefused as exc:
        return exc.rejection().rule


class _Text(str):
    """A str subclass: not for orjson's path."""


@pytest.mark.parametrize("value", [
    {"pm25": 52.0, "co": 0.5, "refDevice": "Aotizhongxin", "dateObserved": "2013-02-28T21:00:00Z"},
    {"tiny": 1e-05}, {"tiny": 0.0001}, {"tiny": 9.999999999999999e-05}, {"zero": -0.0}, {"big": 1e16}, {"big": 1e22},
    {"huge": 1.7976931348623157e308}, {"nan": float("nan")}, {"inf": float("-inf")}, {"nested": [{"x": 1e-7}]},
    {"int": 2**63 - 1}, {"int": 2**63}, {"int": 2**64}, {"int": -(2**63) - 1}, {"int": 10**30},
    {"surrogate": "a\ud800b"}, {"\udfff": 1}, {"ctrl": "\x00\x1f\x7f\u2028\u2029\b\f\n\r\t\"\\/"}, {1: "int key"},
    {"tuple": (1, 2)}, {"text": _Text("x")}, {"bool": True, "none": None}, {"deep": [[[[[[[[[[1.5]]]]]]]]]]},
    {"emoji": "空气 µg/m³ 😀"},
])
def test_orjson_or_not_the_bytes_and_refusals_are_the_standard_librarys(value: Any) -> None:
    assert _ours(value) == _standard(value)


def test_orjson_path_is_taken_for_ordinary_records() -> None:
    """The air-quality record goes through orjson (else this change bought nothing), a 1e-05 does not."""
    if strict_json._orjson_dumps is None:
        pytest.skip("orjson is only in the stream workers' environment")
    assert strict_json._orjson_writes_as_json({"pm25": 52.0, "co": 0.5, "id": "a", "n": 1, "ok": True, "x": None})
    assert not strict_json._orjson_writes_as_json({"co": 1e-05})
    assert not strict_json._orjson_writes_as_json({"co": [float("nan")]})


def test_random_records_are_written_as_the_standard_library_writes_them() -> None:
    """Random bit patterns as floats, integers around the 64-bit edges, text with controls and surrogates."""
    rng = random.Random(2026)

    def text() -> str:
        return "".join(chr(rng.choice([rng.randint(0, 0x7F), rng.randint(0x80, 0xFFFF), rng.randint(0x10000, 0x10FFFF)]))
                       for _ in range(rng.randint(0, 8)))

    def value(depth: int) -> Any:
        kind = rng.randint(0, 8 if depth < 3 else 5)
        if kind == 0:
            return struct.unpack("d", struct.pack("Q", rng.getrandbits(64)))[0]
        if kind == 1:
            return round(rng.uniform(-1, 1) * 10 ** rng.randint(-8, 20), rng.randint(0, 12))
        if kind == 2:
            return rng.choice([2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1, rng.getrandbits(70)])
        if kind == 3:
            return text()
        if kind == 4:
            return rng.choice([True, False, None, 0, -1])
        if kind == 5:
            return rng.randint(-10**6, 10**6)
        if kind == 6:
            return {text(): value(depth + 1) for _ in range(rng.randint(0, 3))}
        return [value(depth + 1) for _ in range(rng.randint(0, 3))]

    for _ in range(20_000):
        record = {text(): value(0) for _ in range(rng.randint(0, 6))}
        assert _ours(record) == _standard(record), record
