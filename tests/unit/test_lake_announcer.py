"""A lake announcement the broker does not take never stops the sink: its hours wait for the next pass."""

from __future__ import annotations

from pathlib import Path

from citybrain.ingest.producer import DeliveryError, ProduceSummary
from citybrain.streams.lake_sink import Announcer
from citybrain.settings import load_settings


class Broker:
    """What the announcer's producer meets: a broker down for the first ``down`` sends."""

    def __init__(self, down: int) -> None:
        self.down, self.sent = down, []

    def produce_values(self, contract, values, source):  # type: ignore[no-untyped-def]
        if self.down:
            self.down -= 1
            raise DeliveryError("KafkaTimeoutError: no broker answered")
        self.sent += values
        return ProduceSummary(contract.topic, read=len(values), accepted=len(values))

    def close(self) -> None:
        pass


def test_hours_not_announced_are_kept_for_the_next_pass(tmp_path: Path) -> None:
    announcer = Announcer(load_settings({"CITYBRAIN_STATE_DIR": str(tmp_path)}), "bronze")
    announcer.producer = broker = Broker(down=2)
    lake = tmp_path / "lake" / "bronze"
    hour, other = (lake / "raw.sensor.water_level" / "date=2026-12-04" / "hour=03",
                   lake / "raw.hotline.service_request" / "date=2026-12-04" / "hour=04")
    announcer.announce([hour], records=10, files_merged=2)             # the broker is down
    announcer.announce([hour, other, tmp_path / "not-an-hour"], records=5, files_merged=0)
    assert announcer.sent == 0 and announcer.failed == 2 and not broker.sent
    assert list(announcer.pending) == [("raw.sensor.water_level", "2026-12-04", 3),
                                       ("raw.hotline.service_request", "2026-12-04", 4)]
    announcer.announce([], records=1, files_merged=0)                  # back: one announcement of all of it
    assert announcer.sent == 1 and not announcer.pending
    [sent] = broker.sent
    assert sent["layer"] == "bronze" and sent["records"] == 16 and sent["files_merged"] == 2
    assert sent["hours"] == [{"contract": "raw.sensor.water_level", "date": "2026-12-04", "hour": 3},
                             {"contract": "raw.hotline.service_request", "date": "2026-12-04", "hour": 4}]
    announcer.announce([], records=0, files_merged=0)                  # nothing new: nothing sent
    assert announcer.sent == 1
