"""The city's own code schemes: its city code, area codes and device ids, checked where records enter (the
gateway's NGSI readings, loaded files) and in its pack (``citybrain city check``).

Contracts take a code of any city in the platform's alphabet (:data:`SAFE_CODE`: a letter or digit, then
letters, digits and ``_ . : -``, at most 64 characters: what topic keys, lake file names and URLs carry
unescaped); the city says which of them are its own (its pack's manifest ``codes``, carried on
``raw.ref.city`` since 1.2.0), and a code that is not is refused at the edge, naming the field, the city's
pattern and the fix. A city that declares nothing keeps China's schemes (:data:`DEFAULTS`). A declared
pattern must provably stay inside :data:`SAFE_CODE` (:func:`citybrain.contracts.patterns.widens`).

A reading's ``refDevice`` is held to the city's device ids only where the city declares ``codes.device``:
without a declaration it stays as free as its contract (an export may name another system's stations, as
the PRSA air-quality files do). A grid's code is checked in the pack; ``grid_code`` elsewhere (an
inspection's) is the department's own text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Mapping

from citybrain.contracts.patterns import regex_problem, widens
from citybrain.contracts.validate import Rejection, excerpt

__all__ = ["DECLARED_ONLY", "DEFAULTS", "DEVICE_URN", "FIELDS", "SAFE_CODE", "CodeSchemes", "pattern_problem"]

#: Every code a contract takes: what the platform carries in topic keys, file names and URLs.
SAFE_CODE = "^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
#: The schemes of a city whose pack declares none: a GB/T 2260 city prefix, administrative area codes of 6
#: (district), 9 (street), 12 (community) and up to 16 digits (grid), and two-letter device ids.
DEFAULTS = {"city": "^[0-9]{4,6}$", "area": "^[0-9]{6,16}$", "device": "^[a-z]{2}-[0-9]{4,8}$"}
#: Contract fields that hold a code, and its scheme.
FIELDS = {"city_code": "city", "area_code": "area", "district_code": "area", "street_code": "area",
          "community_code": "area", "assigned_area_code": "area", "device_id": "device", "refDevice": "device"}
#: Fields checked only against a scheme the city declares (not against the default).
DECLARED_ONLY = ("refDevice",)
#: A device may be referred to by its NGSI-LD URN; the id after it is the registry's.
DEVICE_URN = "urn:ngsi-ld:Device:"


def pattern_problem(kind: str, pattern: Any) -> str | None:
    """Why ``pattern`` cannot be the city's ``kind`` scheme (city, area, device), or None."""
    name = f"codes.{kind}"
    problem = regex_problem(name, pattern)
    if problem is not None:
        return problem
    safe = _inside_safe_codes(pattern)
    if safe is None:
        return (f"{name} {pattern!r} cannot be shown to stay inside the platform's codes {SAFE_CODE!r}: write it "
                "anchored (^...$) with character classes such as [0-9] and [A-Z] (no \\d, \\w, '.', flags or "
                "named groups)")
    if not safe:
        return (f"{name} {pattern!r} admits codes outside the platform's codes {SAFE_CODE!r} (a letter or digit, "
                "then letters, digits, _ . : -, at most 64 characters), which topic keys and file names cannot carry")
    return None


@lru_cache(maxsize=64)
def _inside_safe_codes(pattern: str) -> bool | None:
    """:func:`widens` from ``pattern`` to :data:`SAFE_CODE`, once per pattern: the gateway builds a city's schemes
    from its reference record for every request."""
    return widens(pattern, SAFE_CODE)


@dataclass(frozen=True)
class CodeSchemes:
    """The codes of ``city``: those ``patterns`` (city, area, device) match whole."""

    patterns: Mapping[str, str]
    city: str
    declared: frozenset[str] = frozenset()
    _compiled: dict[str, re.Pattern[str]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        compiled = {}
        for kind in DEFAULTS:
            problem = pattern_problem(kind, self.patterns.get(kind))
            if problem is not None:
                raise ValueError(f"{self.city}: {problem}. Fix: correct codes.{kind} in the city pack's "
                                 "manifest.json and import it again")
            compiled[kind] = re.compile(self.patterns[kind])
        object.__setattr__(self, "_compiled", compiled)

    @classmethod
    def of_city(cls, city: Mapping[str, Any]) -> CodeSchemes:
        """The schemes of a manifest, a ``raw.ref.city`` record or an imported pack's record: those it declares
        under ``codes``, China's for the others."""
        declared = city.get("codes") or {}
        name = str(city.get("name_en") or city.get("name") or city.get("city_code") or "the city")
        return cls({kind: str(declared.get(kind) or default) for kind, default in DEFAULTS.items()}, name,
                   frozenset(k for k in DEFAULTS if declared.get(k)))

    def matches(self, kind: str, value: Any) -> bool:
        """Whether ``value`` is one of the city's ``kind`` codes (a device also as its NGSI-LD URN)."""
        if kind == "device" and isinstance(value, str):
            value = value.removeprefix(DEVICE_URN)
        return isinstance(value, str) and self._compiled[kind].fullmatch(value) is not None

    def problem(self, kind: str, value: Any, field_name: str, sent_as: str | None = None) -> Rejection | None:
        """None for one of the city's ``kind`` codes, else the rejection naming the field (``sent_as``: the column
        or attribute it came in), the city's pattern and the fix."""
        if self.matches(kind, value):
            return None
        where = f"`{field_name}`" + (f" (sent as `{sent_as}`)" if sent_as and sent_as != field_name else "")
        scheme = (f"whose pack declares the pattern {self.patterns[kind]!r}" if kind in self.declared else
                  f"which keeps the default pattern {self.patterns[kind]!r} (its pack declares none)")
        return Rejection("code-scheme", field_name,
                         f"{where} = {value!r} is not one of {self.city}'s {kind} codes, {scheme}. Fix: send the code "
                         f"as the city's registers write it, or declare codes.{kind} in the city pack's manifest.json",
                         excerpt(value))

    def record_problems(self, record: Mapping[str, Any], sent_as: Mapping[str, str] | None = None) -> list[Rejection]:
        """Every code field of ``record`` (:data:`FIELDS`, absent or null ones aside) that is not the city's."""
        out = []
        for name, kind in FIELDS.items():
            value = record.get(name)
            if value is not None and (name not in DECLARED_ONLY or kind in self.declared):
                problem = self.problem(kind, value, name, (sent_as or {}).get(name))
                if problem is not None:
                    out.append(problem)
        return out
