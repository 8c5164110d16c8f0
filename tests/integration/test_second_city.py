"""A second city through the whole demo path: 临江市 (examples/citypacks/linjiang), hand-written, of another
shape, with its own departments' names, services and time zone (Asia/Urumqi), installed on a broker of
its own as a city's data office would: import, simulate, fuse, dispatch, lake, quality, releases. Its
outputs name its own areas, services and departments, never 云州市's."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from citybrain.sim.from_pack import read_city
from citybrain.settings import PROJECT_ROOT
from tests.integration.conftest import make_settings

pytestmark = pytest.mark.integration

PACK = PROJECT_ROOT / "examples" / "citypacks" / "linjiang"
#: Its own state folder and ports, beside the suite's broker (as another city's installation would be).
ENV = {"CITYBRAIN_STATE_DIR": str(PROJECT_ROOT / "var" / "test-linjiang"),
       "CITYBRAIN_BROKER_PORT": str(int(os.environ.get("CB_TEST_BROKER_PORT", "19092")) + 100),
       "CITYBRAIN_CONTROLLER_PORT": str(int(os.environ.get("CB_TEST_CONTROLLER_PORT", "19093")) + 100)}
YUNZHOU_WORDS = ("云州", "yunzhou", "Yunzhou")


@pytest.fixture(scope="module")
def linjiang():  # type: ignore[no-untyped-def]
    from tests.integration.conftest import cli

    shutil.rmtree(ENV["CITYBRAIN_STATE_DIR"], ignore_errors=True)
    run = cli("demo", "--pack", str(PACK), "--records", "5", "--scale", "1", env_extra=ENV, timeout=1500)
    yield run, make_settings(**ENV)
    cli("broker", "down", env_extra=ENV)
    shutil.rmtree(ENV["CITYBRAIN_STATE_DIR"], ignore_errors=True)


def _values(files: list[Path]) -> list[dict[str, Any]]:
    return [json.loads(v) for f in files for v in pq.read_table(f, columns=["value"]).column("value").to_pylist()]


@pytest.mark.timeout(1600)
def test_the_second_city_runs_the_whole_demo_path_and_counts_add_up(linjiang) -> None:  # type: ignore[no-untyped-def]
    run, _settings = linjiang
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "city pack 临江市 2026.12.2" in run.stdout and "counts add up" in run.stdout
    assert "临江市 (6 streets, 67 devices) simulated" in run.stdout
    airflow = run.stdout[run.stdout.find("11. airflow"):]
    assert "published 8 scenario datasets" in airflow, airflow    # of 9: no civil affairs, no elderly-care register
    assert "not published: elderly_care_demand" in airflow, airflow


@pytest.mark.timeout(600)
def test_its_outputs_name_its_own_areas_departments_and_services(linjiang) -> None:  # type: ignore[no-untyped-def]
    from citybrain.lake import layout

    run, settings = linjiang
    assert run.returncode == 0
    city = read_city(PACK)
    areas = {f["properties"]["code"]: f["properties"]["name"] for f in city.pack.areas}
    streets, departments = {s.code for s in city.streets}, set(city.departments)
    lake = settings.lake_dir
    orders = _values(layout.files(lake, "silver", "dispatch.*"))
    assert len(orders) > 500
    assert {o["department"] for o in orders} <= departments
    assert {o["street_code"] for o in orders if o.get("street_code")} <= streets
    tickets = [o for o in orders if o["source"] == "ticket"]
    assert {o["service_code"] for o in tickets} <= {s.service_code for s in city.services}
    assert all(o.get("community_code") in areas for o in tickets if o.get("street_code"))   # placed down to its community
    events = _values(layout.files(lake, "silver", "city.event.incident"))
    assert events and {e["street_code"] for e in events} <= streets
    assert {e["street_name"] for e in events} <= set(areas.values())
    truth = json.loads(next((settings.sim_dir).rglob("ground_truth.json")).read_text())
    assert truth["city"]["name"] == "临江市" and {i["street_code"] for i in truth["incidents"] if i.get("street_code")} <= streets
    # The releases: district and street names are the pack's.
    gold = {p.parent.parent.name: pq.read_table(p).to_pylist() for p in layout.release_data(lake)}
    assert len(gold) == 8   # the nine datasets but elderly care (no civil affairs feed)
    safety = gold["district_safety_index"]
    assert {r["district_name"] for r in safety} == {"西城区", "中心区", "东港区"}
    assert {r["street_name"] for r in gold["flood_risk_by_street"]} <= set(areas.values())
    assert {r["department"] for r in gold["respond_on_receipt_kpis"]} <= departments
    communities = {code for code, _n in areas.items() if len(code) == 12}
    ranked = gold["community_assessment"]
    assert ranked and {r["community_code"] for r in ranked} <= communities and {r["street_code"] for r in ranked} <= streets
    # Nothing of 云州市 anywhere: work orders, city events, releases.
    text = json.dumps([orders, events, gold], ensure_ascii=False, default=str)
    assert not [w for w in YUNZHOU_WORDS if w in text]
    assert not any(code.startswith("9901") for code in {o.get("district_code") or "" for o in orders})


@pytest.mark.timeout(300)
def test_its_gateway_takes_its_own_requests_and_refuses_yunzhous(linjiang) -> None:  # type: ignore[no-untyped-def]
    """Issue 13's symptom, as a partner would meet it: a request of another city was refused as outside
    yunzhou.gov.cn. The gateway on 临江市's broker serves linjiang.gov.cn and its services."""
    import subprocess
    import sys
    import time
    import urllib.parse

    from tests.integration.test_gateway import _free_port, call

    run, settings = linjiang
    assert run.returncode == 0
    port, key = _free_port(), "linjiang-partner-key-0001"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYBRAIN_")}
    env.update({**ENV, "CITYBRAIN_GATEWAY_API_KEYS": f"lj-app:{key}"})
    proc = subprocess.Popen([str(Path(sys.executable).with_name("citybrain")), "gateway", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                status, _, health = call("GET", base + "/health")
                if status == 200 and health["request_book_caught_up"] and health["jurisdiction_id"]:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail("the gateway did not become healthy within 90 s")
        status, _, listed = call("GET", base + "/open311/v2/services.json")
        assert status == 200 and {s["jurisdiction_id"] for s in listed} == {"linjiang.gov.cn"}
        assert {s["service_code"] for s in listed} == {s.service_code for s in read_city(PACK).services}
        form = {"api_key": key, "jurisdiction_id": "linjiang.gov.cn", "service_code": "lj.street.flooding",
                "lat": "43.78", "long": "87.55", "description": "巷子里积水很深"}
        status, _, reply = call("POST", base + "/open311/v2/requests.json", urllib.parse.urlencode(form).encode(),
                                "application/x-www-form-urlencoded")
        assert status == 201, reply
        status, _, view = call("GET", base + f"/open311/v2/requests/{reply[0]['service_request_id']}.json")
        assert status == 200 and view[0]["address"] == "西城区红山街道"
        status, _, errors = call("POST", base + "/open311/v2/requests.json", urllib.parse.urlencode(
            {**form, "lat": "38.70", "long": "117.45"}).encode(), "application/x-www-form-urlencoded")
        assert status == 400 and errors[0]["rule"] == "outside-jurisdiction"
    finally:
        proc.terminate()
        proc.wait(timeout=20)
