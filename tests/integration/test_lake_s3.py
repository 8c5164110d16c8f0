"""The lake on a real S3 server (SeaweedFS, built by ``infra/s3.sh``): a sink killed with SIGKILL mid-stream and
restarted leaves every record of its topic in the lake exactly once; compaction, a release and SQL over it work
on the same ``s3://`` root."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from typing import Iterator

import pytest

from citybrain.ingest.producer import ValidatedProducer
from citybrain.kafka.topics import end_offsets
from citybrain.lake import layout, store
from citybrain.lake.store import LakePath, open_lake
from citybrain.devtools.samples import sample_records
from citybrain.settings import PROJECT_ROOT
from citybrain.devtools.browser import free_port
from tests.integration.conftest import TEST_ENV

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

TOPIC = "raw.sensor.noise_level.v1"
BUCKET = "citybrain-test"
KEYS = {"AWS_ACCESS_KEY_ID": "citybrain-test", "AWS_SECRET_ACCESS_KEY": "citybrain-test-secret",
        "AWS_EC2_METADATA_DISABLED": "true"}


@pytest.fixture(scope="module")
def s3(settings) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A SeaweedFS server with an S3 gateway on free 127.0.0.1 ports, one bucket; yields the lake's URI."""
    built = subprocess.run(["bash", str(PROJECT_ROOT / "infra" / "s3.sh")], capture_output=True, text=True, timeout=900)
    assert built.returncode == 0, built.stdout + built.stderr
    weed = built.stdout.strip().splitlines()[-1].split(": ", 1)[1]
    home = settings.state_dir / "s3"
    shutil.rmtree(home, ignore_errors=True)
    (home / "data").mkdir(parents=True)
    identities = {"identities": [{"name": "citybrain", "credentials": [
        {"accessKey": KEYS["AWS_ACCESS_KEY_ID"], "secretKey": KEYS["AWS_SECRET_ACCESS_KEY"]}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
    (home / "s3.json").write_text(json.dumps(identities))
    ports = {flag: free_port() for flag in ("master.port", "volume.port", "filer.port", "s3.port", "master.port.grpc",
                                            "volume.port.grpc", "filer.port.grpc", "s3.port.grpc", "s3.port.iceberg",
                                            "s3.port.lance")}
    port = {"s3": ports["s3.port"]}
    args = [weed, "server", f"-dir={home / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-volume.max=5", "-s3",
            f"-s3.config={home / 's3.json'}", *[f"-{flag}={p}" for flag, p in ports.items()]]
    log = (home / "weed.log").open("w")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    saved = {k: os.environ.get(k) for k in KEYS}
    os.environ.update(KEYS)
    uri = f"s3://{BUCKET}/lake?endpoint_override=127.0.0.1:{port['s3']}&scheme=http&region=us-east-1"
    try:
        import pyarrow.fs as pafs

        deadline = time.monotonic() + 120
        while True:
            try:
                pafs.S3FileSystem(endpoint_override=f"127.0.0.1:{port['s3']}", scheme="http", region="us-east-1",
                                  allow_bucket_creation=True, connect_timeout=2, request_timeout=5).create_dir(BUCKET)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"SeaweedFS did not serve S3: {(home / 'weed.log').read_text()[-3000:]}") from None
                time.sleep(1)
        yield uri
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(home, ignore_errors=True)


def _sink(uri: str, idle_s: float | None) -> subprocess.Popen[bytes]:
    """The bronze sink of one topic into the S3 lake, in its own process (so it can be killed)."""
    code = ("import sys; from citybrain.settings import get_settings; from citybrain.streams.lake_sink import run_sink; "
            f"s = get_settings(); run_sink(s, [{TOPIC!r}], s.lake, batch=100, max_wait_s=0.2, "
            f"stop_when_idle_s={idle_s!r})")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYBRAIN_")}
    env.update({**TEST_ENV, **KEYS, "CITYBRAIN_LAKE_URI": uri})
    return subprocess.Popen([sys.executable, "-c", code], env=env, start_new_session=True)


def test_a_sink_killed_mid_stream_leaves_every_record_in_the_s3_lake_once(broker, settings, contracts, s3) -> None:  # type: ignore[no-untyped-def]
    lake = open_lake(s3)
    assert lake.fs.type_name == "s3" and not lake.local
    with ValidatedProducer(settings, producer_id="test-lake-s3") as producer:
        summary = producer.produce_values(contracts[TOPIC], sample_records(contracts[TOPIC], 3000))
    assert summary.accepted == 3000
    ends = {p: end for (t, p), end in end_offsets(settings, [TOPIC]).items()}
    checkpoints = layout.checkpoints_dir(lake, "bronze") / TOPIC

    first = _sink(s3, None)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and first.poll() is None:   # killed once some batches are in
            if len(list(checkpoints.glob("*.json"))) >= 1 and len(layout.files(lake, "bronze", "raw.sensor.noise_level")) >= 3:
                break
            time.sleep(0.2)
        assert first.poll() is None, "the sink exited before it could be killed"
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    done_before = sum(json.loads(c.read_text())["next_offset"] for c in checkpoints.glob("*.json"))
    assert done_before < sum(ends.values()), "killed after it had copied everything: no crash mid-stream"

    second = _sink(s3, 5.0)
    assert second.wait(timeout=300) == 0
    files = layout.files(lake, "bronze", "raw.sensor.noise_level")
    rows = store.read_table(files, columns=["partition", "offset"]).to_pylist()
    keys = [(r["partition"], r["offset"]) for r in rows]
    assert len(keys) == len(set(keys)) == sum(ends.values())   # every offset of the topic, once
    assert {p: max(o for q, o in keys if q == p) + 1 for p, _ in keys} == {p: e for p, e in ends.items() if e}

    from citybrain.lake.writer import LakeWriter

    LakeWriter(lake, "bronze").compact(min_files=2)
    after = layout.files(lake, "bronze", "raw.sensor.noise_level")
    hours = {(f.parent.path, f.name.split("-")[0]) for f in after}
    assert len(after) == len(hours)                            # one file per partition and hour
    again = store.read_table(after, columns=["partition", "offset"]).to_pylist()
    assert sorted((r["partition"], r["offset"]) for r in again) == sorted(keys)


def test_a_release_on_s3_is_found_checked_and_queried(s3) -> None:  # type: ignore[no-untyped-def]
    import pyarrow as pa

    from citybrain.scenarios.catalog import query
    from citybrain.scenarios.release import publish, releases, verify

    lake: LakePath = open_lake(s3)
    inputs = layout.files(lake, "bronze")[:2]
    table = pa.table({"street": ["a", "b", "c"], "level": [51.0, 63.5, 70.1]})
    contract = {"title": "t", "owner": "o", "fields": {"street": "s", "level": "l"}}
    release = publish(lake, "noise_on_s3", table, contract, {"passed": True}, inputs, now=datetime.now(timezone.utc))
    assert str(release.path).startswith(f"s3://{BUCKET}/lake/gold/noise_on_s3/")
    assert [r.version for r in releases(lake, "noise_on_s3")] == [release.version] and verify(release) == []
    assert query(lake, "SELECT count(*) AS n FROM noise_on_s3 WHERE level > 60").to_pylist() == [{"n": 2}]


def test_a_lake_out_of_reach_is_a_clear_error_naming_the_fix(broker) -> None:  # type: ignore[no-untyped-def]
    from tests.integration.conftest import cli

    closed = free_port()   # nothing listens there
    proc = cli("lake", "bronze", "--exit-when-idle", "1", timeout=300, env_extra={
        **KEYS, "CITYBRAIN_LAKE_URI": f"s3://{BUCKET}/lake?endpoint_override=127.0.0.1:{closed}&scheme=http"})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "refused a write or read" in proc.stderr and "CITYBRAIN_LAKE_URI" in proc.stderr
    assert "Traceback" not in proc.stderr


class _SlowStorage:
    """Local files whose every write takes a while, as on a slow object store (a pyarrow filesystem handler)."""

    def __init__(self, root: str, delay_s: float) -> None:
        import pyarrow.fs as pafs

        self.fs, self.delay_s = pafs.SubTreeFileSystem(root, pafs.LocalFileSystem()), delay_s

    def handler(self):  # type: ignore[no-untyped-def]
        import pyarrow.fs as pafs

        outer = self

        class Handler(pafs.FileSystemHandler):
            def __eq__(self, other: object) -> bool:
                return self is other

            def __ne__(self, other: object) -> bool:
                return self is not other

            def get_type_name(self) -> str:
                return "slow"

            def normalize_path(self, path: str) -> str:
                return path

            def get_file_info(self, paths):  # type: ignore[no-untyped-def]
                return outer.fs.get_file_info(paths)

            def get_file_info_selector(self, selector):  # type: ignore[no-untyped-def]
                return outer.fs.get_file_info(selector)

            def create_dir(self, path: str, recursive: bool) -> None:
                outer.fs.create_dir(path, recursive=recursive)

            def delete_dir(self, path: str) -> None:
                outer.fs.delete_dir(path)

            def delete_dir_contents(self, path: str, missing_dir_ok: bool = False) -> None:
                outer.fs.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

            def delete_root_dir_contents(self) -> None:
                outer.fs.delete_dir_contents("", accept_root_dir=True)

            def delete_file(self, path: str) -> None:
                outer.fs.delete_file(path)

            def move(self, src: str, dest: str) -> None:
                outer.fs.move(src, dest)

            def copy_file(self, src: str, dest: str) -> None:
                outer.fs.copy_file(src, dest)

            def open_input_stream(self, path: str):  # type: ignore[no-untyped-def]
                return outer.fs.open_input_stream(path)

            def open_input_file(self, path: str):  # type: ignore[no-untyped-def]
                return outer.fs.open_input_file(path)

            def open_output_stream(self, path: str, metadata):  # type: ignore[no-untyped-def]
                time.sleep(outer.delay_s)
                return outer.fs.open_output_stream(path)

            def open_append_stream(self, path: str, metadata):  # type: ignore[no-untyped-def]
                return outer.fs.open_append_stream(path)

        return pafs.PyFileSystem(Handler())


def test_a_sink_told_to_stop_when_idle_drains_its_topic_however_slow_the_storage(broker, settings, contracts, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Seen on the demo with the lake on S3: writes slower than the idle time made the sink stop with records
    still unread. Idle now means polls that find nothing, and the sink stops only at the topics' ends."""
    from citybrain.streams.lake_sink import run_sink

    topic = "raw.sensor.weather.v1"
    with ValidatedProducer(settings, producer_id="test-lake-slow") as producer:
        assert producer.produce_values(contracts[topic], sample_records(contracts[topic], 400)).accepted == 400
    ends = end_offsets(settings, [topic])
    lake = LakePath(_SlowStorage(str(tmp_path), 0.3).handler(), "lake", "slow://")
    result = run_sink(settings, [topic], lake, batch=50, max_wait_s=0.1, stop_when_idle_s=0.5, compact_every_s=3600)
    rows = store.read_table(layout.files(lake, "bronze", "raw.sensor.weather"), columns=["partition", "offset"])
    assert result["written"] == rows.num_rows == sum(ends.values())   # every record of the topic, none left unread
