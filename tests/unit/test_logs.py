"""The services' logs (``citybrain.logs``): JSON lines on request, files moved aside by size, trace ids in lines."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from citybrain.logs import JsonFormatter, RotatingLog, configure, current_trace_id, traced


def _record(msg: str, *args: object, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("citybrain.notify.notifier", logging.WARNING, __file__, 1, msg, args, None)
    record.created = 1796630400.25   # 2026-12-07T08:00:00.250Z
    record.__dict__.update(extra)
    return record


def test_a_json_line_holds_time_level_service_logger_message() -> None:
    line = JsonFormatter("notify").format(_record("notify %s: %d record(s) wait", "water-duty", 3))
    assert "\n" not in line
    assert json.loads(line) == {"time": "2026-12-07T08:00:00.250Z", "level": "WARNING", "service": "notify",
                                "logger": "citybrain.notify.notifier", "message": "notify water-duty: 3 record(s) wait"}


def test_the_trace_id_is_in_the_line_when_known() -> None:
    formatter = JsonFormatter("lake-bronze")
    assert json.loads(formatter.format(_record("m", trace_id=b"4bf92f35")))["trace_id"] == "4bf92f35"
    with traced(b"0af76519"):
        assert current_trace_id() == "0af76519"
        assert json.loads(formatter.format(_record("m")))["trace_id"] == "0af76519"
        assert json.loads(formatter.format(_record("m", trace_id="given")))["trace_id"] == "given"   # extra wins
    assert current_trace_id() is None
    assert "trace_id" not in json.loads(formatter.format(_record("m")))


def test_an_exception_stays_in_its_line() -> None:
    try:
        raise ValueError("bad value 'x'")
    except ValueError:
        record = _record("failed")
        record.exc_info = sys.exc_info()
    line = JsonFormatter("gateway").format(record)
    assert len(line.splitlines()) == 1
    assert "ValueError: bad value 'x'" in json.loads(line)["exception"]


def test_configure_writes_the_format_asked_for() -> None:
    root = logging.getLogger()
    kept = root.handlers[:], root.level
    try:
        for fmt, check in (("json", lambda text: json.loads(text)["service"] == "fusion"),
                           ("text", lambda text: text.split(" ", 3)[2:3] == ["WARNING"])):
            stream = io.StringIO()
            configure("fusion", logging.INFO, fmt, stream, force=True)   # type: ignore[arg-type]
            logging.getLogger("citybrain.test").warning("lag %d", 5)
            logging.getLogger("citybrain.test").debug("not at INFO")
            text = stream.getvalue()
            assert len(text.splitlines()) == 1 and "lag 5" in text and check(text), text
    finally:
        root.handlers[:], _ = kept
        root.setLevel(kept[1])


def test_a_log_is_moved_aside_at_its_size_and_backups_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "notify.log"
    out = RotatingLog(path, max_bytes=200, backups=2)
    for i in range(40):
        out.write(f"line {i:03d} " + "x" * 40 + "\n")
    out.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["notify.log", "notify.log.1", "notify.log.2"]   # the third backup was dropped
    assert all(p.stat().st_size <= 200 for p in tmp_path.iterdir())
    assert path.read_text().splitlines()[-1].startswith("line 039 ")
    kept = [line for name in ("notify.log.2", "notify.log.1", "notify.log")
            for line in (tmp_path / name).read_text().splitlines()]
    assert kept == [f"line {i:03d} " + "x" * 40 for i in range(40 - len(kept), 40)]   # in order, none cut


def test_max_bytes_0_never_moves_the_log(tmp_path: Path) -> None:
    out = RotatingLog(tmp_path / "ui.log", max_bytes=0, backups=2)
    for _ in range(100):
        out.write(b"%s 100% done\n")   # bytes as a child wrote them; % is not a format
    out.close()
    assert [p.name for p in tmp_path.iterdir()] == ["ui.log"]
    assert (tmp_path / "ui.log").read_text().splitlines() == ["%s 100% done"] * 100


def test_a_childs_output_is_copied_line_by_line_until_it_ends(tmp_path: Path) -> None:
    out = RotatingLog(tmp_path / "fusion.log", max_bytes=300, backups=5)
    child = subprocess.Popen([sys.executable, "-c", "import sys\nfor i in range(30): print(f'{i:02d}', 'y' * 30)\n"
                              "sys.stdout.buffer.write(b'not utf-8 \\xff\\n')"], stdout=subprocess.PIPE)
    assert child.stdout is not None
    out.copy(child.stdout)
    child.wait()
    out.close()
    assert child.stdout.closed
    backups = sorted(tmp_path.glob("fusion.log.*"), key=lambda p: -int(p.suffix[1:]))
    lines = [line for p in [*backups, tmp_path / "fusion.log"] for line in p.read_text().splitlines()]
    assert lines == [f"{i:02d} " + "y" * 30 for i in range(30)] + ["not utf-8 \ufffd"]


@pytest.mark.parametrize(("argv", "service"), [
    (["notify", "run"], "notify"), (["-v", "lake", "bronze"], "lake-bronze"), (["streams", "fusion"], "fusion"),
    (["dev", "airflow", "events"], "airflow-events"), (["records", "send", "x.json"], "citybrain records send"),
    ([], "citybrain"),
])
def test_a_command_line_is_logged_as_the_service_it_runs(argv: list[str], service: str) -> None:
    from citybrain.cli.base import service_name

    assert service_name(argv) == service


def test_the_supervisor_copies_a_services_output_and_errors_into_its_rotating_log(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from citybrain.platform import supervisor
    from citybrain.settings import load_settings

    settings = load_settings({"CITYBRAIN_STATE_DIR": str(tmp_path), "CITYBRAIN_LOG_MAX_BYTES": "400",
                              "CITYBRAIN_LOG_BACKUPS": "20"})
    monkeypatch.setattr(supervisor, "citybrain_exe", lambda: sys.executable)
    talker = supervisor.Service("talker", ("-c", "import sys; [print(f'out {i:02d}', 'z' * 30) for i in range(20)]; "
                                                 "print('a traceback on stderr', file=sys.stderr)"), lambda s: None,
                                "a service that talks")
    sup = supervisor.Supervisor(settings, (talker,))
    sup.dir.mkdir(parents=True)
    sup.start(talker)
    sup.children["talker"].wait(timeout=30)
    sup.copiers["talker"].join(timeout=10)
    sup.logs["talker"].close()
    run = tmp_path / "run"
    files = sorted(run.glob("talker.log.*"), key=lambda p: -int(p.suffix[1:])) + [run / "talker.log"]
    assert len(files) > 2 and all(p.stat().st_size <= 400 for p in files)
    lines = [line for p in files for line in p.read_text().splitlines()]
    assert lines[0].startswith("--- ") and "supervisor starts talker" in lines[0]
    assert lines[1:] == [f"out {i:02d} " + "z" * 30 for i in range(20)] + ["a traceback on stderr"]


def test_logs_follow_notices_a_log_moved_aside(tmp_path: Path) -> None:
    from citybrain.cli.command_up import _rotated

    path = tmp_path / "fusion.log"
    path.write_text("old\n")
    with path.open() as f:
        assert not _rotated(path, f)
        path.rename(tmp_path / "fusion.log.1")
        assert not _rotated(path, f)   # not begun anew yet
        path.write_text("new\n")
        assert _rotated(path, f)
