"""The alerting rules and Alertmanager's configuration: Prometheus' own tools accept them, each alert fires on
series built to trigger it and not on healthy ones (infra/prometheus/rules_test.yml), and that test fails when a
rule loses what makes it fire or what keeps it quiet; every series a rule reads is a metric citybrain.metrics
defines, and the operator pages list those names."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from citybrain import metrics
from citybrain.settings import PROJECT_ROOT

PROMETHEUS = PROJECT_ROOT / "infra" / "prometheus"
DOCS = PROJECT_ROOT / "docs" / "how-to" / "operator"
PROMTOOL = shutil.which("promtool") or "promtool"
AMTOOL = shutil.which("amtool") or "amtool"
needs_promtool = pytest.mark.skipif(shutil.which("promtool") is None,
                                    reason="promtool (Debian's prometheus) is not installed: run infra/prometheus.sh")
needs_amtool = pytest.mark.skipif(shutil.which("amtool") is None,
                                  reason="amtool (Debian's prometheus-alertmanager) is not installed: run infra/prometheus.sh")


#: A CityBrain series named in a rule's expression or a page.
SERIES = re.compile(r"\bcitybrain_[a-z_]+")
#: What prometheus-client exposes a metric of each type as: a counter only with ``_total``, a histogram's buckets,
#: sum and count (a rule never reads the ``_created`` samples).
SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}


def exported() -> dict[str, str]:
    """The metrics citybrain.metrics defines, as their family's name and type (a counter's name without ``_total``)."""
    return {family.name: family.type for value in vars(metrics).values() if isinstance(value, MetricWrapperBase)
            for family in value.describe()}


def exported_series() -> set[str]:
    """Every ``citybrain_*`` series name a service's /metrics can answer with."""
    return {name + suffix for name, kind in exported().items() for suffix in SUFFIXES[kind]}


def series_read(rules_text: str) -> set[str]:
    """The ``citybrain_*`` series the rules' expressions read."""
    rules = yaml.safe_load(rules_text)
    return {name for group in rules["groups"] for rule in group["rules"] for name in SERIES.findall(rule["expr"])}


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """A Prometheus tool's run, its output kept for the assertion's message."""
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=120, check=False)


@needs_promtool
def test_rules_and_prometheus_config_are_valid() -> None:
    rules = run(PROMTOOL, "check", "rules", PROMETHEUS / "rules.yml")
    assert rules.returncode == 0, rules.stdout + rules.stderr
    config = run(PROMTOOL, "check", "config", PROMETHEUS / "prometheus.yml")
    assert config.returncode == 0, config.stdout + config.stderr


@needs_promtool
def test_each_alert_fires_on_its_breakage_and_not_on_healthy_series() -> None:
    result = run(PROMTOOL, "test", "rules", PROMETHEUS / "rules_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_test_a_severity_a_service_and_a_runbook() -> None:
    """An alert added to rules.yml without a promtool test, or without the labels routing needs, is caught."""
    rules = yaml.safe_load((PROMETHEUS / "rules.yml").read_text(encoding="utf-8"))
    tests = yaml.safe_load((PROMETHEUS / "rules_test.yml").read_text(encoding="utf-8"))
    tested = {case["alertname"] for test in tests["tests"] for case in test.get("alert_rule_test", [])}
    fired = {case["alertname"] for test in tests["tests"] for case in test.get("alert_rule_test", []) if case["exp_alerts"]}
    alerts = [rule for group in rules["groups"] for rule in group["rules"] if "alert" in rule]
    assert len(alerts) == 6
    for rule in alerts:
        name = rule["alert"]
        assert name in tested and name in fired, f"{name} has no test in rules_test.yml that sees it fire"
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        assert rule["annotations"]["runbook"] == f"docs/how-to/operator/alerts.md#{name.lower()}", name
        assert rule["annotations"]["summary"] and rule["annotations"]["action"], name
    # The service comes from the rule's labels or from the series; either way the alert that fires carries one.
    expected = [alert for test in tests["tests"] for case in test.get("alert_rule_test", []) for alert in case["exp_alerts"]]
    assert expected and all({"service", "severity"} <= set(alert["exp_labels"]) for alert in expected)
    guide = (PROJECT_ROOT / "docs" / "how-to" / "operator" / "alerts.md").read_text(encoding="utf-8")
    for rule in alerts:
        assert f"### {rule['alert']}\n" in guide, f"the operator guide has no runbook section for {rule['alert']}"


#: Each a change to one rule that the promtool tests must catch: the guard that keeps it quiet on healthy series
#: gone, or what makes it fire broken. (alert, text in rules.yml, its broken replacement)
BREAKAGES: dict[str, tuple[str, str, str]] = {
    "service down without its 2 minutes": ("ServiceDown", "expr: up == 0\n        for: 2m", "expr: up == 0\n        for: 0m"),
    "server errors without their share": ("HTTPServerErrors", "> 0.05 * sum by (job)", "> 0 * sum by (job)"),
    "server errors without their floor": ("HTTPServerErrors", '{status="5xx"}[5m])) > 0.02', '{status="5xx"}[5m])) > 0'),
    "lag without its floor": ("ConsumerLagGrowing", "(citybrain_consumer_lag) > 1000", "(citybrain_consumer_lag) > 0"),
    "lag falling counted as growing": ("ConsumerLagGrowing", "(deriv(citybrain_consumer_lag[10m])) > 0", "(deriv(citybrain_consumer_lag[10m])) != 0"),
    "lag of one worker only": ("ConsumerLagGrowing", "sum by (job, consumer, topic) (citybrain_consumer_lag) > 1000",
                               "max by (job, consumer, topic) (citybrain_consumer_lag) > 1000"),
    "dead letters without their usual rate": ("DeadLettersAboveUsual", "> 3 * sum by", "> 0 * sum by"),
    "dead letters without their floor": ("DeadLettersAboveUsual",
        "sum by (job, topic) (rate(citybrain_records_dead_lettered_total[5m])) > 0.1",
        "sum by (job, topic) (rate(citybrain_records_dead_lettered_total[5m])) > 0",
    ),
    "a sink stalled without records waiting": ("SinkStalled",
        'citybrain_consumer_lag{consumer=~"lake-.*"}) > 0', 'citybrain_consumer_lag{consumer=~"lake-.*"}) >= 0',
    ),
    "a sink that checkpoints counted as stalled": ("SinkStalled", "citybrain_sink_checkpoint_timestamp_seconds > 900",
                                                   "citybrain_sink_checkpoint_timestamp_seconds > 200"),
    "disk alerts for tmpfs": ("DiskFilling", 'fstype!~"tmpfs|ramfs|overlay|squashfs"', 'fstype!~"ramfs|overlay|squashfs"'),
    "disk alerts for a week's trend": ("DiskFilling", "[1h], 4 * 3600) < 0", "[1h], 14 * 24 * 3600) < 0"),
}


@needs_promtool
@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_the_rules_test_fails_on_a_broken_rule(breakage: str, tmp_path: Path) -> None:
    """A copy of rules.yml with one rule broken fails `promtool test rules`: the tests can fail."""
    alert, old, new = BREAKAGES[breakage]
    rules = (PROMETHEUS / "rules.yml").read_text(encoding="utf-8")
    assert rules.count(old) == 1, f"{old!r} is not in rules.yml once: update BREAKAGES with the rule"
    (tmp_path / "rules.yml").write_text(rules.replace(old, new), encoding="utf-8")
    # Only the broken alert's tests, so each case takes a second or two rather than the whole file's time.
    tests = yaml.safe_load((PROMETHEUS / "rules_test.yml").read_text(encoding="utf-8"))
    tests["tests"] = [test for test in tests["tests"] if any(case["alertname"] == alert for case in test["alert_rule_test"])]
    assert tests["tests"], f"rules_test.yml has no test of {alert}"
    (tmp_path / "rules_test.yml").write_text(yaml.safe_dump(tests, allow_unicode=True), encoding="utf-8")
    assert run(PROMTOOL, "check", "rules", tmp_path / "rules.yml").returncode == 0, "the broken copy must still load"
    result = run(PROMTOOL, "test", "rules", tmp_path / "rules_test.yml")
    assert result.returncode != 0, f"promtool test rules passed with {breakage}: {result.stdout}"


@needs_amtool
def test_alertmanager_config_is_valid_and_inhibits_lag_when_a_service_is_down(tmp_path: Path) -> None:
    checked = run(AMTOOL, "check-config", PROMETHEUS / "alertmanager.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # The route sends every alert to the duty officer, grouped by alert and service.
    routed = run(AMTOOL, "config", "routes", "test", "--config.file", PROMETHEUS / "alertmanager.yml",
                 "--verify.receivers=duty-officer", "alertname=ServiceDown", "service=fusion", "severity=critical")
    assert routed.returncode == 0, routed.stdout + routed.stderr
    broken = tmp_path / "alertmanager.yml"
    broken.write_text((PROMETHEUS / "alertmanager.yml").read_text(encoding="utf-8").replace("receiver: duty-officer\n  group_by", "receiver: nobody\n  group_by"), encoding="utf-8")
    assert run(AMTOOL, "check-config", broken).returncode != 0, "a route to an undefined receiver must be refused"


def test_every_series_a_rule_reads_is_a_metric_the_services_export() -> None:
    """A rule on a name no service exports never fires: the rules and citybrain.metrics cannot drift apart."""
    read = series_read((PROMETHEUS / "rules.yml").read_text(encoding="utf-8"))
    assert {"citybrain_records_dead_lettered_total", "citybrain_consumer_lag",
            "citybrain_sink_checkpoint_timestamp_seconds", "citybrain_http_requests_total"} <= read
    assert read <= exported_series(), f"rules.yml reads series no service exports: {sorted(read - exported_series())}"


def test_the_cross_check_catches_a_series_nobody_exports() -> None:
    """Broken copies: a name of the first draft, a counter without ``_total``, a gauge given one, a bare histogram."""
    rules = (PROMETHEUS / "rules.yml").read_text(encoding="utf-8")
    for old, new in [("citybrain_records_dead_lettered_total", "citybrain_records_total"),
                     ("citybrain_http_requests_total", "citybrain_http_requests"),
                     ("citybrain_sink_checkpoint_timestamp_seconds", "citybrain_sink_checkpoint_timestamp_seconds_total"),
                     ("citybrain_consumer_lag{", "citybrain_fusion_end_to_end_seconds{")]:
        assert old in rules, f"{old!r} is not in rules.yml: update this test with the rules"
        assert series_read(rules.replace(old, new)) - exported_series() == {new.rstrip("{")}, new


def test_the_operator_pages_list_the_metrics_citybrain_metrics_defines() -> None:
    """metrics.md's table names every metric, as exposed, and no other; alerts.md names only those."""
    page = (DOCS / "metrics.md").read_text(encoding="utf-8")
    table = dict(re.findall(r"^\| `(citybrain_[a-z_]+)` \| (counter|gauge|histogram) \|", page, flags=re.MULTILINE))
    expected = {name + ("_total" if kind == "counter" else ""): kind for name, kind in exported().items()
                if name.startswith("citybrain_")}
    assert table == expected
    named = set(SERIES.findall((DOCS / "alerts.md").read_text(encoding="utf-8")))
    assert named and named <= set(table) | exported_series(), f"alerts.md names {sorted(named - set(table) - exported_series())}"
