"""The city's own postal codes, checked where requests enter (the Open311 gateway, loaded hotline exports).

The contract ``raw.hotline.service_request`` takes a postal code of any country; the city says which of them
are its own (its pack's ``postal_code_pattern``, carried on ``raw.ref.city``), and a code that is not is
refused at the edge, naming the field, the city's pattern and the fix. A city that declares nothing keeps
China's six digits, and so does a machine where no city pack was imported yet (:meth:`PostalCodes.default`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from citybrain.contracts.patterns import regex_problem
from citybrain.contracts.validate import Rejection, excerpt

__all__ = ["DEFAULT_PATTERN", "FIELDS", "PostalCodes", "pattern_problem"]

#: The postal codes of a city whose pack declares none: China's six digits (GB/T 8065 postal codes).
DEFAULT_PATTERN = "^[0-9]{6}$"
#: Contract fields that hold a postal code.
FIELDS = ("zipcode",)


def pattern_problem(pattern: Any) -> str | None:
    """Why ``pattern`` cannot be a city's postal-code pattern, or None."""
    return regex_problem("postal_code_pattern", pattern)


@dataclass(frozen=True)
class PostalCodes:
    """The postal codes of ``city``: those ``pattern`` matches whole."""

    pattern: str
    city: str
    #: False for :meth:`default`: no city pack was imported, the pattern is CityBrain's default.
    imported: bool = True
    _compiled: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        problem = pattern_problem(self.pattern)
        if problem is not None:
            raise ValueError(f"{self.city}: {problem}. Fix: correct postal_code_pattern in the city pack's "
                             "manifest.json and import it again")
        object.__setattr__(self, "_compiled", re.compile(self.pattern))

    @classmethod
    def of_city(cls, city: Mapping[str, Any]) -> PostalCodes:
        """The postal codes of a ``raw.ref.city`` record (or an imported pack's record): its pattern, else
        China's six digits."""
        name = str(city.get("name_en") or city.get("name") or city.get("city_code") or "the city")
        return cls(str(city.get("postal_code_pattern") or DEFAULT_PATTERN), name)

    @classmethod
    def default(cls) -> PostalCodes:
        """The postal codes checked before any city pack is imported: China's six digits (the simulated city 云州市's
        rule), so that a load is never left without a postal-code rule."""
        return cls(DEFAULT_PATTERN, "the city", imported=False)

    def problem(self, value: Any, field_name: str = "zipcode", sent_as: str | None = None) -> Rejection | None:
        """None for one of the city's postal codes, else the rejection naming the field (``sent_as``: the
        column or parameter it came in), the city's pattern and the fix."""
        if isinstance(value, str) and self._compiled.fullmatch(value):
            return None
        where = f"`{field_name}`" + (f" (sent as `{sent_as}`)" if sent_as and sent_as != field_name else "")
        if not self.imported:
            return Rejection("postal-code", field_name,
                             f"{where} = {value!r} does not match the default postal-code pattern {self.pattern!r} "
                             "(no city pack is imported here). Fix: send a six-digit code, leave "
                             f"{field_name} out, or import the city's pack (`citybrain city import PACK`), whose "
                             "manifest.json declares its postal_code_pattern", excerpt(value))
        return Rejection("postal-code", field_name,
                         f"{where} = {value!r} is not a postal code of {self.city}, whose pack declares the pattern "
                         f"{self.pattern!r}. Fix: send the code as the city writes it, leave {field_name} out, or "
                         "correct postal_code_pattern in the city pack's manifest.json", excerpt(value))
