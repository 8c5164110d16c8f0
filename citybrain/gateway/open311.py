"""Open311 GeoReport v2 for the 12345 hotline: service list, request intake, request views.

Pure functions: what the standard's parameters mean for the ``raw.hotline.service_request``
contract, and what a caller may see of a request. Field names, error shape
(``[{"code": ..., "description": ...}]``) and defaults follow GeoReport v2; CityBrain adds
``field``, ``rule`` and ``fix`` to each error so an integrator knows what to change.

The city's reference record (``raw.ref.city``) says which postal codes are its own and its languages:
a request with another postal code is refused naming the city's pattern, and what the gateway writes
for people (the service notice, the services' descriptions, the agencies' names) is in the city's
first language (:data:`MESSAGES`: English or Chinese). A request forwarded from another 311 system
keeps that system's id and time (``service_request_id``, ``requested_datetime``, ``source_system``)
beside the platform's own.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Mapping

from citybrain.city.pack import DEFAULT_LANGUAGES, languages
from citybrain.contracts.validate import FIXES, Rejection
from citybrain.geo import AreaIndex, Place
from citybrain.ingest.codes import DEFAULTS as DEFAULT_CODES
from citybrain.ingest.codes import CodeSchemes
from citybrain.ingest.postal import PostalCodes
from citybrain.ingest.strict_json import id_problem
from citybrain.times import iso, now_iso

#: GeoReport v2 POST parameters, plus the hotline extensions a partner may send.
STANDARD_PARAMS = {"api_key", "jurisdiction_id", "service_code", "lat", "long", "address_string", "address_id",
                   "email", "device_id", "account_id", "first_name", "last_name", "phone", "description", "media_url"}
EXTENSION_PARAMS = {"channel", "zipcode", "service_request_id", "requested_datetime", "source_system"}
#: Fields a public GET may show; personal data never leaves through it, the address only at street level.
PUBLIC_FIELDS = ("service_request_id", "status", "status_notes", "service_name", "service_code", "agency_responsible",
                 "service_notice", "requested_datetime", "updated_datetime", "expected_datetime", "address_id",
                 "zipcode", "lat", "long", "media_url", "source_request_id", "source_requested_datetime")
EXTENSION_VIEW_FIELDS = ("lifecycle_state", "category", "priority", "dispatch_department", "channel")


#: Contract field -> the GeoReport v2 parameter a caller sent it as.
PARAM_OF_FIELD = {"caller_email": "email", "caller_phone": "phone", "caller_name": "last_name",
                  "address": "address_string", "source_request_id": "service_request_id",
                  "source_requested_datetime": "requested_datetime"}

#: What the gateway writes for people, per language (a city answers in its first language when it is here,
#: in Chinese otherwise). ``{id}`` in a notice is a placeholder for the caller, not filled.
MESSAGES: dict[str, dict[str, str]] = {
    "zh": {"received": "已受理，工单号 {rid}；status at GET /open311/v2/requests/{{id}}.json",
           "service": "{name}。由{department}在 {hours:g} 小时内办理。",
           "service_working": "{name}。由{department}在 {hours:g} 个工作小时内办理。"},
    "en": {"received": "Received as ticket {rid}; status at GET /open311/v2/requests/{{id}}.json",
           "service": "{name}. Handled by {department} within {hours:g} h.",
           "service_working": "{name}. Handled by {department} within {hours:g} working hours."},
}
#: The language of a city whose first language has no messages.
FALLBACK_LANGUAGE = "zh"


def message_language(city_languages: tuple[str, ...] | list[str]) -> str:
    """The language of :data:`MESSAGES` the city's first language picks (``en-US`` -> ``en``)."""
    first = city_languages[0].split("-")[0].lower() if city_languages else FALLBACK_LANGUAGE
    return first if first in MESSAGES else FALLBACK_LANGUAGE


@dataclass(frozen=True)
class EdgeError:
    """One problem with a request, rendered as an Open311 error with CityBrain's extra keys."""

    code: int
    description: str
    field: str = ""
    rule: str = ""

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "description": self.description}
        if self.field:
            out["field"] = self.field
        if self.rule:
            out.update(rule=self.rule, fix=FIXES.get(self.rule, "see the contract"))
        return out

    @classmethod
    def from_rejection(cls, r: Rejection, code: int = 400, params: Mapping[str, str] | None = None) -> EdgeError:
        """An error naming the field as the caller knows it (``params``: contract field -> parameter)."""
        name = (params or {}).get(r.field, r.field)
        message = r.message if name == r.field else f"{r.message} (sent as parameter `{name}`)"
        return cls(code, message, name, r.rule)


@dataclass(frozen=True)
class Catalogue:
    """What the gateway serves, as the city's reference data has it: the jurisdiction, postal codes, code schemes
    and languages (``raw.ref.city``), the services (``raw.ref.service`` records by code) and the departments
    (``raw.ref.department``)."""

    jurisdiction_id: str
    services: Mapping[str, Mapping[str, Any]]
    departments: Mapping[str, Mapping[str, Any]]
    postal_codes: PostalCodes = PostalCodes.default()
    languages: tuple[str, ...] = DEFAULT_LANGUAGES
    codes: CodeSchemes = CodeSchemes(DEFAULT_CODES, "the city")

    @classmethod
    def of_city(cls, city: Mapping[str, Any], services: Mapping[str, Mapping[str, Any]],
                departments: Mapping[str, Mapping[str, Any]]) -> Catalogue:
        """The catalogue of a ``raw.ref.city`` record (a record written before 1.1.0: six-digit postal codes, zh;
        before 1.2.0: China's code schemes)."""
        return cls(city["jurisdiction_id"], services, departments, PostalCodes.of_city(city), languages(dict(city)),
                   CodeSchemes.of_city(city))

    @property
    def messages(self) -> Mapping[str, str]:
        """:data:`MESSAGES` in the city's language."""
        return MESSAGES[message_language(self.languages)]

    @property
    def english(self) -> bool:
        return message_language(self.languages) == "en"

    def department_name(self, dept: str) -> str:
        """A department's name in the city's language (its Chinese name where it has no English one)."""
        d = self.departments.get(dept) or {}
        return str(d.get("name_en" if self.english else "name") or d.get("name") or dept)


def services(catalogue: Catalogue) -> list[dict[str, Any]]:
    """``GET services.json``: every hotline service, in GeoReport v2 shape."""
    english = catalogue.english

    def description(s: Mapping[str, Any]) -> str:
        name = (s.get("name_en") or s["name"]) if english else s["name"]
        message = "service_working" if s.get("sla_clock") == "working" else "service"
        return s.get("description") or catalogue.messages[message].format(
            name=name, department=catalogue.department_name(s["department"]), hours=float(s["sla_hours"]))

    return [{"service_code": s["service_code"], "service_name": s["name"], "description": description(s),
             "metadata": False, "type": "realtime", "keywords": ",".join(s.get("keywords", ())), "group": s["group"],
             "jurisdiction_id": catalogue.jurisdiction_id}
            for s in sorted(catalogue.services.values(), key=lambda s: s["service_code"])]


def service_definition(code: str, catalogue: Catalogue) -> dict[str, Any] | None:
    """``GET services/{code}.json``: no extra attributes for any hotline service."""
    return {"service_code": code, "attributes": []} if code in catalogue.services else None


def new_request_id(now: datetime | None = None) -> str:
    now = now or datetime.now(timezone.utc)
    return f"GW{now:%Y%m%d}{uuid.uuid4().hex[:10].upper()}"


def request_record(params: Mapping[str, Any], partner: str, catalogue: Catalogue, index: AreaIndex | None,
                   ) -> tuple[dict[str, Any] | None, list[EdgeError]]:
    """Map POST parameters to a ``raw.hotline.service_request`` record, or say what is wrong.

    Checks what the contract cannot: unknown parameters, the service code, the Open311 rule
    that one of lat/long, address_string or address_id is given, that a position lies
    in the city and that a postal code is one of the city's. The contract checks the rest.
    A request forwarded from another 311 system keeps its ``service_request_id`` (as
    ``source_request_id``, of ``source_system``: the partner unless sent) and its
    ``requested_datetime`` (as ``source_requested_datetime``, in UTC; refused without an offset);
    the record's own id and ``requested_datetime`` are the platform's.
    """
    errors: list[EdgeError] = []
    jurisdiction_id = catalogue.jurisdiction_id
    unknown = sorted(k for k in params if k not in STANDARD_PARAMS | EXTENSION_PARAMS and not k.startswith("attribute["))
    for k in unknown:
        errors.append(EdgeError(400, f"parameter `{k}` is not a GeoReport v2 parameter nor a CityBrain extension "
                                     f"(allowed: {', '.join(sorted(STANDARD_PARAMS | EXTENSION_PARAMS))})",
                                k, "unknown-field"))
    for k in sorted(k for k in params if k.startswith("attribute[")):
        errors.append(EdgeError(400, f"`{k}`: no hotline service declares attributes (services.json metadata is "
                                     "false for all)", k, "unknown-field"))
    jurisdiction = params.get("jurisdiction_id")
    if jurisdiction not in (None, "", jurisdiction_id):
        errors.append(EdgeError(404, f"jurisdiction_id {jurisdiction!r} not found; this endpoint serves "
                                     f"{jurisdiction_id!r}", "jurisdiction_id", "enum"))
    code = params.get("service_code")
    service = catalogue.services.get(str(code)) if code else None
    if not code:
        errors.append(EdgeError(400, "service_code is required; list the codes with GET services.json",
                                "service_code", "required"))
    elif service is None:
        errors.append(EdgeError(400, f"service_code {code!r} is not offered; list the codes with GET services.json",
                                "service_code", "enum"))
    for name in ("account_id", "address_id", "device_id"):
        problem = id_problem(params.get(name), name)
        if problem is not None:
            errors.append(EdgeError(400, problem.message, name, problem.rule))
    lat, lon = _number(params, "lat", errors), _number(params, "long", errors)
    if (lat is None) != (lon is None) and not any(e.field in ("lat", "long") for e in errors):
        missing = "long" if lon is None else "lat"
        errors.append(EdgeError(400, f"`{missing}` is required together with the other coordinate", missing, "required"))
    has_position = lat is not None and lon is not None
    if not has_position and not params.get("address_string") and not params.get("address_id") \
            and not any(e.field in ("lat", "long") for e in errors):
        errors.append(EdgeError(400, "a location is required: send lat and long, address_string, or address_id",
                                "lat", "required"))
    zipcode = params.get("zipcode")
    if zipcode not in (None, ""):
        postal = catalogue.postal_codes.problem(zipcode)
        if postal is not None:
            errors.append(EdgeError(400, postal.message, "zipcode", postal.rule))
    source_time = params.get("requested_datetime")
    if source_time not in (None, ""):
        source_time, problem = _source_time(str(source_time))
        if problem is not None:
            errors.append(problem)
    place = None
    if has_position and index is not None and index.areas:
        place = index.resolve(lon, lat)  # type: ignore[arg-type]
        if place is None:
            errors.append(EdgeError(400, f"lat/long ({lat}, {lon}) is outside the jurisdiction {jurisdiction_id}",
                                    "lat", "outside-jurisdiction"))
    if errors or service is None:
        return None, errors

    now = now_iso()
    name = " ".join(str(params[k]).strip() for k in ("last_name", "first_name") if params.get(k)).strip()
    record: dict[str, Any] = {
        "service_request_id": new_request_id(), "status": "open", "service_code": service["service_code"],
        "service_name": service["name"], "description": params.get("description", ""),
        "requested_datetime": now, "updated_datetime": now, "channel": params.get("channel") or "web",
        "category": service["category"], "priority": service["priority"], "lifecycle_state": "received",
        "reopen_count": 0, "jurisdiction_id": jurisdiction_id, "partner": partner,
        "anonymous": not (name or params.get("phone") or params.get("email")),
    }
    if has_position:
        record.update(lat=lat, long=lon)
    address = params.get("address_string")
    if address:
        record["address"] = address
    elif place is not None:
        record["address"] = street_address(place)
    for source, target in (("address_id", "address_id"), ("zipcode", "zipcode"), ("media_url", "media_url"),
                           ("phone", "caller_phone"), ("email", "caller_email"), ("account_id", "account_id")):
        if params.get(source) not in (None, ""):
            record[target] = params[source]
    if name:
        record["caller_name"] = name
    if params.get("service_request_id") not in (None, ""):
        record.update(source_request_id=params["service_request_id"],
                      source_system=params.get("source_system") or partner)
    elif params.get("source_system") not in (None, ""):
        record["source_system"] = params["source_system"]
    if source_time not in (None, ""):
        record["source_requested_datetime"] = source_time
    return record, []


def _source_time(text: str) -> tuple[str, EdgeError | None]:
    """A forwarded ``requested_datetime`` in the wire format, or why it cannot be read.

    A time without an offset is refused rather than read as UTC: it is the partner's local time, which
    UTC would put hours off without a word."""
    try:
        sent = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return text, EdgeError(400, f"requested_datetime {text!r} is not a W3C date-time, e.g. "
                                    "2026-11-23T08:00:00-08:00 (the time the request was made in its own system)",
                               "requested_datetime", "format")
    if sent.tzinfo is None:
        return text, EdgeError(400, f"requested_datetime {text!r} has no offset, so its zone is unknown; send it "
                                    "with its offset (2026-11-23T08:00:00-08:00) or in UTC (2026-11-23T16:00:00Z)",
                               "requested_datetime", "format")
    return iso(sent), None


def street_address(place: Place) -> str:
    """A position's address no finer than its street: district and street names, the district's alone where the
    city has no streets (its pack stops at districts)."""
    return "".join(area.name for area in (place.district, place.street) if area is not None)


def _number(params: Mapping[str, Any], name: str, errors: list[EdgeError]) -> float | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    try:
        if isinstance(value, bool):   # JSON true is no coordinate, though Python reads it as 1
            raise TypeError(value)
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(value)
    except (TypeError, ValueError):
        errors.append(EdgeError(400, f"`{name}` must be a decimal number (WGS84 degrees), got {value!r}", name, "type"))
        return None
    limit = 90 if name == "lat" else 180
    if not -limit <= number <= limit:
        errors.append(EdgeError(400, f"`{name}` = {value} is outside -{limit}..{limit} (WGS84 degrees)", name,
                                "maximum" if number > 0 else "minimum"))
        return None
    return number


def received_event(record: dict[str, Any]) -> dict[str, Any]:
    """The ``raw.hotline.ticket_event`` that opens the ticket's closed loop."""
    return {"event_id": f"{record['service_request_id']}:received:1",
            "service_request_id": record["service_request_id"], "event_type": "received",
            "occurred_at": record["requested_datetime"], "department": "hotline_12345",
            "note": f"received through the Open311 gateway from {record.get('partner', 'a partner')}"}


#: The public grid: 0.005 degrees, about 550 m north-south and 430-480 m east-west at China's latitudes. Finer
#: than a street's length, coarser than a building: the block a request is in, not the home of who sent it.
GRID_DEG = 0.005


def coarse_degrees(value: float) -> float:
    """``value`` moved to the centre of its :data:`GRID_DEG` cell (the same for every point in the cell)."""
    return round((math.floor(value / GRID_DEG) + 0.5) * GRID_DEG, 4)


def public_view(state: Mapping[str, Any], index: AreaIndex | None, catalogue: Catalogue | None = None) -> dict[str, Any]:
    """What GET requests.json shows of a request: Open311 fields, no personal data.

    ``description`` and the exact ``address`` are personal data in the contract, so the
    address is coarsened to district and street from the position (the district alone in a
    city without streets there) and the description is left out. The position itself is
    shown as the centre of its :data:`GRID_DEG` cell, so lat/long cannot give back the door
    the street-level address hides.
    """
    view = {k: state[k] for k in PUBLIC_FIELDS if k in state}
    for k in ("lat", "long"):
        if isinstance(view.get(k), (int, float)):
            view[k] = coarse_degrees(view[k])
    view["status"] = state.get("status", "open")
    dept = state.get("dispatch_department")
    if dept and "agency_responsible" not in view and catalogue is not None and dept in catalogue.departments:
        view["agency_responsible"] = catalogue.department_name(dept)
    if index is not None and "lat" in state and "long" in state:
        found = index.resolve(state["long"], state["lat"])
        if found:
            view["address"] = street_address(found)
    for k in EXTENSION_VIEW_FIELDS:
        if k in state:
            view[k] = state[k]
    return view
