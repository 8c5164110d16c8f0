"""One strict reading of JSON for every edge: the gateway's bodies and the loader's lines.

Python's ``json`` takes more than JSON (RFC 8259, I-JSON RFC 7493): ``NaN`` and ``Infinity``,
``1e400`` read as infinity, a key given twice (the last silently wins), ``\\ud800`` (half a
surrogate pair: no character, and no UTF-8 can write it), and nesting until the interpreter's
recursion limit breaks whatever reads the value next. Here each is refused with a rule of
:data:`citybrain.contracts.validate.FIXES`:

- ``encoding``: the bytes are not UTF-8 (UTF-8-encoded surrogates included);
- ``json-syntax``: not JSON at all;
- ``json-number``: NaN, Infinity, a number beyond a double, an integer beyond 64 bits (the lake's int64);
- ``duplicate-key``: an object that gives a key twice;
- ``lone-surrogate``: a string or key holding half a surrogate pair;
- ``json-depth``: nesting deeper than ``max_depth`` (CITYBRAIN_JSON_MAX_DEPTH).

Reading is in two steps so a batch is judged entity by entity: :func:`read_document` refuses only
what breaks the document as a whole (encoding, syntax, nesting the parser cannot reach) and leaves
a mark where a value is refused; :func:`find_problem` finds the first mark, lone surrogate or
too-deep nesting in one value (an entity, a record). :func:`loads` does both for a document that is
one record. Writing: :func:`dumps_record` refuses what the reading refuses (``allow_nan=False``; orjson
where it writes the same bytes),
:func:`dumps_escaped` never fails (dead letters, answers that echo what a caller sent).

Ids are judged by :func:`id_problem`: no control, invisible-format (zero-width, bidirectional
control), surrogate or line-separator character, so two ids that print alike are one id and an id
never breaks a header or a log line. Such an id is refused, never cleaned: a cleaned id would no
longer be the caller's, and two different ids could become one.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from typing import Any

from citybrain.contracts.validate import Rejection, excerpt
from citybrain.errors import InputError
from citybrain.settings import Settings

__all__ = ["DEFAULT_MAX_DEPTH", "JsonRefused", "dumps_escaped", "dumps_record", "envelope_problem", "find_problem",
           "id_problem", "loads", "read_document"]

#: CITYBRAIN_JSON_MAX_DEPTH's default, for readers called without settings.
DEFAULT_MAX_DEPTH: int = Settings.model_fields["json_max_depth"].default
INT64 = 2 ** 63
_SURROGATE = re.compile("[\ud800-\udfff]")
#: Unicode categories an id may not hold: controls, format characters (zero-width, bidi controls, BOM),
#: surrogates, line and paragraph separators.
ID_REFUSED_CATEGORIES = {"Cc", "Cf", "Cs", "Zl", "Zp"}


class JsonRefused(InputError):
    """A JSON document or value the strict reading refuses: ``rule``, ``field`` (a dotted path) and why."""

    def __init__(self, rule: str, message: str, field: str = "", value: str = "") -> None:
        super().__init__(message)
        self.rule, self.message, self.field, self.value = rule, message, field, value

    def rejection(self) -> Rejection:
        """The refusal as a dead letter's reason."""
        return Rejection(self.rule, (self.field or "(record)")[:200], self.message, self.value)


class _Mark:
    """A value the strict reading refuses, left where it was found so only its entity is refused."""

    __slots__ = ("rule", "message", "text")

    def __init__(self, rule: str, message: str, text: str) -> None:
        self.rule, self.message, self.text = rule, message, text

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return self.text


class _Duplicated(dict):  # type: ignore[type-arg]
    """An object that gave ``key`` more than once (its last value kept, as Python's json keeps it)."""

    key: str = ""


def _constant(name: str) -> _Mark:
    return _Mark("json-number", f"{name} is not a JSON number (JSON has no NaN or Infinity)", name)


def _float(text: str) -> float | _Mark:
    number = float(text)
    if math.isfinite(number):
        return number
    return _Mark("json-number", f"{text} is beyond the range of a double (about 1.8e308)", text)


def _int(text: str) -> int | _Mark:
    if len(text.lstrip("-")) <= 19 and -INT64 <= (number := int(text)) < INT64:
        return number
    return _Mark("json-number", f"integer {excerpt(text, 40)} is beyond 64 bits (-2^63 .. 2^63-1)", text)


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) == len(pairs):
        return out
    seen: set[str] = set()
    twice = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
    marked = _Duplicated(out)
    marked.key = twice
    return marked


def read_document(data: bytes | str) -> Any:
    """A JSON document with refused values marked in place; raises JsonRefused for one that cannot be read."""
    if isinstance(data, (bytes, bytearray)):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JsonRefused("encoding", f"not UTF-8: byte 0x{data[exc.start]:02x} at offset {exc.start} "
                                          f"({exc.reason})", value=excerpt(bytes(data))) from None
    else:
        text = data
    try:
        return json.loads(text, parse_constant=_constant, parse_float=_float, parse_int=_int,
                          object_pairs_hook=_object)
    except RecursionError:
        raise JsonRefused("json-depth", "the JSON is nested too deeply to be read at all", value=excerpt(text)) from None
    except ValueError as exc:
        raise JsonRefused("json-syntax", f"malformed JSON: {exc}", value=excerpt(text)) from None


def find_problem(value: Any, max_depth: int) -> JsonRefused | None:
    """The first thing the strict reading refuses in ``value`` (one entity, one record), or None."""
    stack: list[tuple[Any, int, str]] = [(value, 0, "")]
    while stack:
        node, depth, path = stack.pop()
        where = f"`{path}`" if path else "the value"
        if isinstance(node, _Mark):
            return JsonRefused(node.rule, f"{where}: {node.message}", path, excerpt(node.text))
        if isinstance(node, str):
            if _SURROGATE.search(node):
                return _lone_surrogate(f"{where} holds", node, path)
            continue
        if not isinstance(node, (dict, list)):
            continue
        if depth + 1 > max_depth:
            return JsonRefused("json-depth", f"{where} nests deeper than {max_depth} levels "
                                             "(CITYBRAIN_JSON_MAX_DEPTH)", path)
        if isinstance(node, _Duplicated):
            return JsonRefused("duplicate-key", f"{where} gives the key {excerpt(repr(node.key), 80)} more than once; "
                                                "JSON readers disagree on which value counts", _join(path, node.key))
        children = node.items() if isinstance(node, dict) else enumerate(node)
        for key, child in children:
            if isinstance(key, str) and _SURROGATE.search(key):
                return _lone_surrogate(f"a key in {where} holds", key, path)
            stack.append((child, depth + 1, _join(path, key)))
    return None


def envelope_problem(body: dict[str, Any], items: str, max_depth: int) -> JsonRefused | None:
    """What refuses a batch's envelope as a whole (a key given twice, a refused value beside the items), or None;
    the items under the key ``items`` are left to be judged one by one."""
    if isinstance(body, _Duplicated):
        return JsonRefused("duplicate-key", f"the body gives the key {excerpt(repr(body.key), 80)} more than once",
                           body.key)
    return find_problem({k: v for k, v in body.items() if k != items}, max_depth)


def loads(data: bytes | str, max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """A JSON document that is one record, read strictly; raises JsonRefused with the first problem."""
    value = read_document(data)
    problem = find_problem(value, max_depth)
    if problem is not None:
        raise problem
    return value


def id_problem(value: Any, field: str = "id") -> JsonRefused | None:
    """Why ``value`` may not be an id (a control, zero-width or bidi-control character), or None."""
    if not isinstance(value, str):
        return None
    for i, char in enumerate(value):
        if unicodedata.category(char) in ID_REFUSED_CATEGORIES:
            return JsonRefused("id-characters", f"`{field}` holds U+{ord(char):04X} "
                                                f"({unicodedata.name(char, 'a control character')}) at position {i}; "
                                                "ids may not hold control, zero-width or bidirectional-control "
                                                "characters (two such ids print alike)", field, excerpt(value))
    return None


#: The records' JSON encoder, made once (``json.dumps`` makes one per call for these options); event ids hash its output.
_RECORD_JSON = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode


try:   # the stream workers' environment has orjson (a tenth of the time, once per record of a file); others do without
    from orjson import dumps as _orjson_dumps
except ImportError:   # pragma: no cover - the Airflow environment
    _orjson_dumps = None

#: Floats orjson writes as ``repr`` does (and so as ``json`` does): it writes 1e-05 as 0.00001 and NaN as null.
_ORJSON_FLOATS = (1e-4, math.inf)


def dumps_record(value: Any) -> bytes:
    """A record as compact UTF-8 JSON; raises JsonRefused for NaN, Infinity or a lone surrogate in it.

    With orjson where the record holds only what orjson writes byte for byte as the standard library does (plain
    dicts with text keys, lists, text, integers, booleans, null, floats 0 or from 1e-4 on): anything else, and
    anything orjson refuses (an integer beyond 64 bits, a lone surrogate), is written, or refused, by ``json``."""
    if _orjson_dumps is not None and value.__class__ is dict and _orjson_writes_as_json(value):
        try:
            return _orjson_dumps(value)   # type: ignore[no-any-return]
        except TypeError:   # orjson.JSONEncodeError: the standard library says what is wrong
            pass
    try:
        return _RECORD_JSON(value).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _lone_surrogate("the record's JSON holds", exc.object, "") from None
    except ValueError as exc:
        raise JsonRefused("json-number", f"the record holds a number JSON cannot write ({exc})") from None


def _orjson_writes_as_json(node: dict[str, Any] | list[Any]) -> bool:
    """True when every value in ``node`` is of a type orjson writes as ``json`` does (keys: orjson refuses others)."""
    low, high = _ORJSON_FLOATS
    for item in (node.values() if node.__class__ is dict else node):   # type: ignore[union-attr]
        kind = item.__class__
        if kind is float:
            if not (low <= abs(item) < high or item == 0.0):   # NaN: neither
                return False
        elif kind is dict or kind is list:
            if not _orjson_writes_as_json(item):
                return False
        elif kind is not str and kind is not int and kind is not bool and item is not None:
            return False
    return True


def dumps_escaped(value: Any, compact: bool = False) -> bytes:
    """``value`` as UTF-8 JSON whatever it holds: lone surrogates escaped, marks as their text, NaN as Python
    writes it. For dead letters (the original as it was sent) and answers that echo a caller's values."""
    separators = (",", ":") if compact else None
    text = json.dumps(value, ensure_ascii=False, default=str, separators=separators)
    if _SURROGATE.search(text):
        text = json.dumps(value, ensure_ascii=True, default=str, separators=separators)
    return text.encode("utf-8")


def _lone_surrogate(what: str, text: str, path: str) -> JsonRefused:
    char = _SURROGATE.search(text)
    position = char.start() if char else 0
    return JsonRefused("lone-surrogate", f"{what} U+{ord(text[position]):04X} at position {position}, half of a "
                                         "surrogate pair: no Unicode character, and UTF-8 cannot write it", path,
                       excerpt(text))


def _join(path: str, key: Any) -> str:
    name = key if isinstance(key, str) else str(key)
    name = name.encode("utf-8", "backslashreplace").decode("utf-8")
    return f"{path}.{name}" if path else name
