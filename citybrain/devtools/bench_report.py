"""What `make bench` measured, written where people read it: the benchmark block of the docs.

Each run is appended to ``var/bench/history.jsonl`` with the machine it ran on and the commit it
measured; the block between ``<!-- bench:start -->`` and ``<!-- bench:end -->`` of
``docs/benchmarks.md`` is then rewritten from the latest run (every figure, its target and the
margin) and the runs before it on this machine, so the docs quote only what a run measured, with its date.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Any

from citybrain.settings import PROJECT_ROOT, Settings

START, END = "<!-- bench:start", "<!-- bench:end -->"
#: The page that holds the benchmark block.
BENCHMARKS = PROJECT_ROOT / "docs" / "benchmarks.md"


class ReadmeBlockMissing(RuntimeError):
    """The page to write has no benchmark block (the name is kept for the CLI, which catches it)."""


def machine() -> dict[str, Any]:
    """The machine a run measured: CPU model and cores, memory, Python."""
    model = "unknown CPU"
    try:
        model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    memory_gib = 0.0
    try:
        kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal:"))
        memory_gib = round(kib / 1024 / 1024, 1)
    except (OSError, StopIteration):
        pass
    return {"cpu": model, "cores": os.cpu_count(), "memory_gib": memory_gib, "python": platform.python_version()}


def commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT_ROOT, capture_output=True,
                             text=True, timeout=10)
        # The benchmark page (which the last run rewrote) is not a change to what is measured.
        page = BENCHMARKS.relative_to(PROJECT_ROOT).as_posix()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", f":!{page}"],
                               cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("+changes" if dirty else "") if out.returncode == 0 else "unknown"
    except OSError:
        return "unknown"


def record(settings: Settings, result: dict[str, Any]) -> list[dict[str, Any]]:
    """Add the run to the history (with machine, commit and broker); every run so far, oldest first."""
    result = {**result, "machine": machine(), "commit": commit()}
    path = settings.bench_dir / "history.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(result) + "\n")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _margin(value: float, target: float, at_most: bool, ratio: bool = False) -> str:
    """Met or not, and by how much (as a share of the target; a ratio missed by its share, a figure by its units)."""
    share = (target - value) / target if at_most else (value - target) / target
    if share >= 0:
        return f"met, {share:.0%} margin"
    if not at_most:
        return f"**not met** ({-share:.0%} short)"
    return f"**missed** ({-share:.0%} over)" if ratio else f"**missed** ({value - target:,.0f} over)"


def _us(value: float | None) -> str:
    return "not measured" if value is None else f"{value:,.1f} µs"


def _cpu_lines(cpu: dict[str, Any]) -> list[str]:
    """The rows of the CPU each run used per record (see ``devtools/bench_cpu.py``), with the two targets."""
    runs, t = cpu["runs"], cpu["targets"]
    each = runs["keyed_two"]["each_us_per_record"]
    lines = [
        f"| CPU per record (user + system from /proc), plain aiokafka consumer (its thread) | "
        f"{cpu.get('not_measured') or _us(runs['plain']['us_per_record'])} | – | |",
        f"| CPU per record, the default worker | {_us(runs['default']['us_per_record'])} | – | |",
        f"| CPU per record, keyed by area, one worker | {_us(runs['keyed_one']['us_per_record'])} | – | |",
        f"| CPU per record, keyed by area, two workers (each worker) | {_us(runs['keyed_two']['us_per_record'])}"
        + (f" ({', '.join(_us(e) for e in each)})" if any(e is not None for e in each) else "") + " | – | |",
    ]
    wall = f"{cpu['scaling_wall']:.2f}" if cpu.get("scaling_wall") is not None else "?"

    def ratio_row(label: str, key: str, sign: str, beside: str = "", **margin: bool) -> str:
        """A ratio against its target: 'not measured' (with what stands beside it) where /proc was not there."""
        value, target = cpu[key], t[key]
        if value is None:
            return f"| {label} | not measured{beside} | {sign} {target:.2f} | |"
        return f"| {label} | {value:.2f}{beside} | {sign} {target:.2f} | {_margin(value, target, **margin)} |"

    lines.append(ratio_row("keyed scaling by CPU: two workers' CPU per record / one's (records/s two / one)",
                           "scaling_cpu", "≤", f" ({wall})", at_most=True, ratio=True))
    lines.append(ratio_row("keyed by area, one worker / the default worker, records per CPU second",
                           "keyed_per_cpu_s", "≥", at_most=False))
    names = {"plain": "plain consumer", "default": "default worker", "keyed_one": "one keyed worker",
             "keyed_two": "two keyed workers"}
    broker = [f"{name} " + ("not measured" if cpu["broker_cpu_s"].get(key) is None else
                            f"{cpu['broker_cpu_s'][key]:,.1f} s ({_us(runs[key]['broker_us_per_record'])})")
              for key, name in names.items()]
    lines.append(f"| the broker's CPU over each run (per record) | {'; '.join(broker)} | – | |")
    return lines


def block(history: list[dict[str, Any]]) -> str:
    """The benchmark block: the latest run in full, the earlier runs of the same machine in a line each."""
    r = history[-1]
    t, m = r["targets"], r["machine"]
    ratio = r["events_per_s"] / r["raw_consume_per_s"] if r["raw_consume_per_s"] else 0
    lines = [
        f"{START} (written by `make bench` from var/bench/history.jsonl; edits here are overwritten) -->",
        f"Latest `make bench`: {r['measured_at']}, commit `{r['commit']}`, on {m['cpu']} ({m['cores']} cores, "
        f"{m['memory_gib']} GiB), Python {m['python']}, {r.get('broker', 'the local broker')} on the same machine; "
        f"backlog {r['backlog_records']:,} records.",
        "",
        "| figure | this run | target | |",
        "| --- | ---: | ---: | --- |",
        f"| sustained end-to-end events/s, one worker (the default: unkeyed) | {r['events_per_s']:,} | ≥ {t['events_per_s']:,} | "
        f"{_margin(r['events_per_s'], t['events_per_s'], at_most=False)} |",
        f"| plain aiokafka consumer on the same backlog, same run (ceiling) | {r['raw_consume_per_s']:,} | – | |",
        f"| worker / plain consumer | {ratio:.2f} | – | |",
    ]
    scale = r.get("scale_out")
    if scale:
        one, two, raw = scale["one"]["per_s"], scale["two"]["per_s"], max(1, r["raw_consume_per_s"])
        lines += [
            f"| fusion keyed by area ({scale['partitions']} partitions), one worker (/ plain consumer) | "
            f"{one:,} ({one / raw:.2f}) | – | |",
            f"| the same, two workers of one group (/ plain consumer) | {two:,} ({two / raw:.2f}) | – | |",
            f"| two workers / one worker | {scale['scaling']:.2f} | > 1.00 | "
            f"{_margin(scale['scaling'], 1.0, at_most=False)} |",
        ]
    if r.get("cpu"):
        lines += _cpu_lines(r["cpu"])
    lines += [
        f"| latency produce → work order at {r['steady_rate_per_s']:,.0f} records/s, p50 / p95 / p99 "
        f"({r['latency_samples']:,} tickets) | {r['p50_ms']} / {r['p95_ms']} / {r['p99_ms']} ms | "
        f"p99 ≤ {t['p99_ms']} ms | {_margin(r['p99_ms'], t['p99_ms'], at_most=True)} |",
    ]
    live = r.get("live_pages", {})
    if "p99_ms" in live:
        lines.append(f"| the same with {live['connections']} live view pages, p50 / p99 (records each page got) | "
                     f"{live['p50_ms']} / {live['p99_ms']} ms ({live['records_min']:,}–{live['records_max']:,}) | "
                     f"as without | |")
    lines.append(f"| worker peak RSS | {r['worker_rss_mb']} MB | ≤ {t['worker_rss_mb']} MB | "
                 f"{_margin(r['worker_rss_mb'], t['worker_rss_mb'], at_most=True)} |")
    ui = r.get("ui_first_screen_ms", {})
    if "pages" in ui:
        slowest = max(ui["pages"].values())
        lines.append(f"| operations view first screen ({ui['lake_records']:,}-record lake) | "
                     + ", ".join(f"{k} {v:,}" for k, v in ui["pages"].items())
                     + f" ms | ≤ 1,000 ms | {_margin(slowest, 1000, at_most=True)} |")
    elif ui:
        lines.append(f"| operations view first screen | not measured: {ui.get('skipped', '?')} | ≤ 1,000 ms | |")
    loader, pack = r.get("loader"), r.get("pack_check")
    if loader:
        lines.append(f"| `citybrain load`: a {loader['rows']:,}-row hourly air-quality export (NA cells, CO in µg/m³), "
                     f"rows/s ({loader['accepted']:,} accepted, {loader['dead_lettered']:,} dead-lettered) | "
                     f"{loader['rows_per_s']:,.0f} | ≥ {t['loader_rows_per_s']:,} | "
                     f"{_margin(loader['rows_per_s'], t['loader_rows_per_s'], at_most=False)} |")
    if pack:
        lines.append(f"| `citybrain city check`: {pack['districts']} districts, {pack['streets']} streets, "
                     f"{pack['vertices']:,} vertices ({pack['problems']} problems) | {pack['seconds']:.2f} s | "
                     f"≤ {t['pack_check_s']} s | {_margin(pack['seconds'], t['pack_check_s'], at_most=True)} |")
    same = [h for h in history[:-1] if h.get("machine", {}).get("cpu") == m["cpu"]][-5:]
    if same:
        lines += ["", "Earlier runs on this machine (events/s, worker / plain consumer, p99, keyed scaling):",
                  "; ".join(f"{h['measured_at'][:16]}Z `{h['commit']}`: {h['events_per_s']:,}/s, "
                            f"{h['events_per_s'] / max(1, h['raw_consume_per_s']):.2f}, {h['p99_ms']} ms"
                            + (f", two keyed workers / one {h['scale_out']['scaling']:.2f}" if h.get("scale_out") else "")
                            + (f", by CPU per record {h['cpu']['scaling_cpu']:.2f}"
                               if (h.get("cpu") or {}).get("scaling_cpu") is not None else "")
                            for h in same)
                  + "."]
    lines.append(END)
    return "\n".join(lines)


def write_readme(history: list[dict[str, Any]], page: Path = BENCHMARKS) -> Path:
    """Replace the benchmark block of ``page`` (the docs' benchmarks page) with this run's.

    The name is older than the docs site; the CLI's bench command calls it.
    """
    text = page.read_text(encoding="utf-8")
    found = re.search(re.escape(START) + r".*?" + re.escape(END), text, flags=re.S)
    if not found:
        raise ReadmeBlockMissing(f"{page.name} has no benchmark block ({START} ... {END}); "
                                 "Fix: put the two markers where the figures belong.")
    page.write_text(text[:found.start()] + block(history) + text[found.end():], encoding="utf-8")
    return page
