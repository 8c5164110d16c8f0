"""The docs' benchmark block is written from the runs themselves: figures, targets, margins, date, machine."""

from __future__ import annotations

from pathlib import Path

import pytest

from citybrain.devtools.bench_report import BENCHMARKS, END, START, ReadmeBlockMissing, block, write_readme
from citybrain.settings import PROJECT_ROOT

MACHINE = {"cpu": "Test CPU @ 2.0GHz", "cores": 2, "memory_gib": 23.5, "python": "3.11.7"}


def run(at: str, events: int, p99: int, **extra) -> dict:  # type: ignore[no-untyped-def,type-arg]
    return {"measured_at": at, "commit": "abc1234", "machine": MACHINE, "broker": "Kafka 4.3.1 (embedded, 1 node(s))",
            "events_per_s": events, "raw_consume_per_s": 120_000, "p50_ms": 70, "p95_ms": 150, "p99_ms": p99,
            "worker_rss_mb": 265, "latency_samples": 900, "steady_rate_per_s": 2000.0, "backlog_records": 150_000,
            "targets": {"events_per_s": 20000, "p99_ms": 250, "worker_rss_mb": 600}, "live_pages": {}, **extra}


def test_the_block_quotes_the_latest_run_with_its_margins_and_the_earlier_runs() -> None:
    text = block([run("2026-12-03T10:00:00Z", 18_000, 268), run("2026-12-04T10:00:00Z", 26_000, 180,
                                                                 ui_first_screen_ms={"pages": {"City": 724, "Data": 300},
                                                                                     "lake_records": 160_000})])
    assert text.startswith(START) and text.endswith(END)
    assert "2026-12-04T10:00:00Z" in text and "Test CPU @ 2.0GHz (2 cores, 23.5 GiB)" in text
    assert "| 26,000 | ≥ 20,000 | met, 30% margin |" in text
    assert "| 70 / 150 / 180 ms | p99 ≤ 250 ms | met, 28% margin |" in text
    assert "| 0.22 |" in text                                           # worker / plain consumer, same run
    assert "City 724, Data 300 ms | ≤ 1,000 ms | met, 28% margin" in text
    assert "2026-12-03T10:00Z `abc1234`: 18,000/s, 0.15, 268 ms" in text  # the run before, in one line
    assert "by area" not in text and "keyed workers" not in text         # a run before the scale-out figures


def test_the_keyed_workers_are_quoted_with_their_scaling_and_a_scaling_below_one_is_not_met() -> None:
    def scale(one: int, two: int) -> dict:  # type: ignore[type-arg]
        return {"partitions": 12, "one": {"per_s": one}, "two": {"per_s": two}, "scaling": round(two / one, 2)}

    text = block([run("2026-12-03T10:00:00Z", 26_000, 180, scale_out=scale(10_000, 15_000)),
                  run("2026-12-04T10:00:00Z", 26_000, 180, scale_out=scale(12_000, 9_000))])
    assert "| fusion keyed by area (12 partitions), one worker (/ plain consumer) | 12,000 (0.10) |" in text
    assert "| the same, two workers of one group (/ plain consumer) | 9,000 (0.07) |" in text
    assert "| two workers / one worker | 0.75 | > 1.00 | **not met** (25% short) |" in text
    assert "two keyed workers / one 1.50" in text                       # the run before


def test_a_missed_target_is_said_so() -> None:
    text = block([run("2026-12-04T10:00:00Z", 15_000, 268)])
    assert "**not met** (25% short)" in text and "**missed** (18 over)" in text
    assert "Earlier runs" not in text


def test_the_block_is_replaced_in_its_page_and_a_page_without_one_is_refused(tmp_path: Path) -> None:
    page = tmp_path / "benchmarks.md"
    page.write_text(f"# title\n\nbefore\n{START} old -->\nold figures\n{END}\nafter\n")
    assert write_readme([run("2026-12-04T10:00:00Z", 26_000, 180)], page) == page
    text = page.read_text()
    assert "old figures" not in text and "26,000" in text and text.startswith("# title\n\nbefore\n")
    assert text.endswith(f"{END}\nafter\n") and text.count(START) == 1
    page.write_text("# no block\n")
    with pytest.raises(ReadmeBlockMissing, match="benchmarks.md has no benchmark block"):
        write_readme([run("2026-12-04T10:00:00Z", 26_000, 180)], page)


def test_make_bench_writes_the_docs_benchmarks_page_which_holds_the_block() -> None:
    assert BENCHMARKS == PROJECT_ROOT / "docs" / "benchmarks.md"
    text = BENCHMARKS.read_text(encoding="utf-8")
    assert text.count(START) == 1 and text.count(END) == 1 and text.index(START) < text.index(END)
    assert START not in (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")


def cpu_run(records: int, seconds: float, cpu: list[float | None], handled: list[int] | None = None,
            broker: float | None = 6.0) -> dict:  # type: ignore[type-arg]
    return {"records": records, "seconds": seconds, "cpu_s": cpu, "handled": handled or [records],
            "broker_cpu_s": broker}


def test_the_cpu_per_record_of_each_run_is_quoted_with_the_scaling_by_cpu_and_its_targets() -> None:
    from citybrain.devtools.bench_cpu import cpu_figures

    def cpu(two_cpu: list[float | None]) -> dict:  # type: ignore[type-arg]
        return {**cpu_figures(cpu_run(1_000_000, 5.0, [2.0]), cpu_run(1_000_000, 40.0, [30.0]),
                              cpu_run(1_000_000, 80.0, [50.0]),
                              cpu_run(1_000_000, 50.0, two_cpu, handled=[600, 400])),
                "not_measured": None}

    scale = {"partitions": 12, "one": {"per_s": 12_500}, "two": {"per_s": 20_000}, "scaling": 1.6}
    text = block([run("2026-12-06T10:00:00Z", 26_000, 180, scale_out=scale, cpu=cpu([26.0, 25.0])),
                  run("2026-12-07T10:00:00Z", 26_000, 180, scale_out=scale, cpu=cpu([36.0, 30.0]))])
    assert "| CPU per record (user + system from /proc), plain aiokafka consumer (its thread) | 2.0 µs | – | |" in text
    assert "| CPU per record, the default worker | 30.0 µs | – | |" in text
    assert "| CPU per record, keyed by area, one worker | 50.0 µs | – | |" in text
    assert "| CPU per record, keyed by area, two workers (each worker) | 66.0 µs (60.0 µs, 75.0 µs) | – | |" in text
    assert ("| keyed scaling by CPU: two workers' CPU per record / one's (records/s two / one) | 1.32 (1.60) | ≤ 1.15 | "
            "**missed** (15% over) |") in text
    assert ("| keyed by area, one worker / the default worker, records per CPU second | 0.60 | ≥ 0.80 | "
            "**not met** (25% short) |") in text
    assert "plain consumer 6.0 s (6.0 µs); default worker 6.0 s (6.0 µs)" in text
    assert "two keyed workers / one 1.60, by CPU per record 1.02" in text      # the run before: 51 µs over 50 µs
    assert "| two workers / one worker | 1.60 | > 1.00 | met, 60% margin |" in text   # the wall-clock row stays


def test_a_machine_without_proc_shows_the_cpu_rows_as_not_measured() -> None:
    from citybrain.devtools.bench_cpu import NOT_LINUX, cpu_figures

    figures = cpu_figures(cpu_run(1000, 1.0, [None], broker=None), cpu_run(1000, 1.0, [None], broker=None),
                          cpu_run(1000, 2.0, [None], broker=None), cpu_run(1000, 1.0, [None, None], broker=None))
    scale = {"partitions": 12, "one": {"per_s": 500}, "two": {"per_s": 1000}, "scaling": 2.0}
    text = block([run("2026-12-07T10:00:00Z", 26_000, 180, scale_out=scale,
                      cpu={**figures, "not_measured": NOT_LINUX})])
    assert f"plain aiokafka consumer (its thread) | {NOT_LINUX} |" in text
    assert "| CPU per record, keyed by area, two workers (each worker) | not measured | – | |" in text
    assert "| keyed scaling by CPU: two workers' CPU per record / one's (records/s two / one) | not measured (2.00) |" in text
    assert "records per CPU second | not measured | ≥ 0.80 | |" in text
    assert "plain consumer not measured; default worker not measured" in text
    assert "met" not in text.split("| CPU per record (")[1].split("| latency")[0]
