"""Contract lint: the real contracts pass, and each rule catches a contract built to break it."""

from __future__ import annotations

import copy

import pytest

from citybrain.contracts.lint import lint, lint_all
from citybrain.contracts.model import Contract


def test_real_contracts_pass_lint(contracts: dict[str, Contract]) -> None:
    assert lint_all(contracts) == []


def test_required_feeds_are_present(contracts: dict[str, Contract]) -> None:
    ids = {c.id for c in contracts.values()}
    for required in (
        "raw.sensor.air_quality", "raw.sensor.noise_level", "raw.sensor.traffic_flow", "raw.sensor.water_level",
        "raw.hotline.service_request", "raw.hotline.ticket_event", "raw.ref.admin_area", "raw.ref.device",
        "raw.ref.routing_rule", "dlq.ingest.rejected", "catalog.contracts.registry",
    ):
        assert required in ids
    departmental = {c.id for c in contracts.values() if c.zone == "raw" and c.id.split(".")[1] not in ("sensor", "hotline", "ref")}
    assert len(departmental) >= 3


def test_open311_core_fields_in_hotline_contract(contracts: dict[str, Contract]) -> None:
    fields = contracts["raw.hotline.service_request.v1"].fields
    for name in ("service_request_id", "status", "service_code", "service_name", "description", "agency_responsible",
                 "requested_datetime", "updated_datetime", "expected_datetime", "address", "lat", "long", "media_url"):
        assert name in fields
    assert fields["caller_phone"].personal and fields["caller_phone"].classification == "sensitive"


def _broken(c: Contract, mutate) -> list[str]:  # type: ignore[no-untyped-def]
    raw = copy.deepcopy(c.raw)
    mutate(raw)
    return lint(Contract(raw=raw, source=c.source))


@pytest.mark.parametrize("mutate, expected", [
    (lambda r: r["schema"]["properties"]["pm25"].pop("x-classification"), "field `pm25` needs x-classification"),
    (lambda r: r["schema"]["properties"]["pm25"].update({"x-personal": True}), "classification must be sensitive"),
    (lambda r: r["schema"].update({"additionalProperties": True}), "must be a closed object"),
    (lambda r: r["schema"]["properties"]["pm25"].update({"oneOf": [{"type": "number"}]}), "keyword `oneOf`"),
    (lambda r: r["examples"][0].update({"pm25": -1}), "examples[0] is invalid"),
    (lambda r: r.update({"key": "pm25"}), "key field `pm25` must be a required"),
    (lambda r: r.update({"owner": "ministry_of_magic"}), "not a known department"),
    (lambda r: r["topic"].update({"retention": "a week"}), "topic.retention"),
    (lambda r: r["topic"].update({"partitions": 0}), "topic.partitions"),
    (lambda r: r.update({"colour": "blue"}), "unknown key(s) colour"),
    (lambda r: r.update({"version": "2.0.0"}), "must be named raw.sensor.air_quality.v2.yaml"),
    (lambda r: r["schema"]["properties"]["pm25"].update({"type": "numeric"}), "not valid JSON Schema 2020-12"),
    (lambda r: r.update({"event_time": "pm25"}), "event_time field `pm25` must be a top-level property with format date-time"),
    (lambda r: r.update({"event_time": ["observedAt"]}), "event_time field `observedAt`"),
])
def test_lint_catches(air: Contract, mutate, expected: str) -> None:  # type: ignore[no-untyped-def]
    problems = _broken(air, mutate)
    assert any(expected in p for p in problems), problems


def test_personal_data_outside_restricted_zone_is_refused(air: Contract) -> None:
    def to_city_zone(raw):  # type: ignore[no-untyped-def]
        raw["contract"] = "city.event.flood"
        raw["schema"]["properties"]["pm25"].update({"x-classification": "sensitive", "x-personal": True})
    problems = _broken(air, to_city_zone)
    assert any("personal data in zone 'city'" in p for p in problems), problems
