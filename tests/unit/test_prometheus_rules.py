"""The alerting rules and Alertmanager's configuration: Prometheus' own tools accept them, each alert fires on
series built to trigger it and not on healthy ones (infra/prometheus/rules_test.yml), and that test fails when a
rule loses what makes it fire or what keeps it quiet."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from citybrain.settings import PROJECT_ROOT

PROMETHEUS = PROJECT_ROOT / "infra" / "prometheus"
PROMTOOL = shutil.which("promtool") or "promtool"
AMTOOL = shutil.which("amtool") or "amtool"
needs_promtool = pytest.mark.skipif(shutil.which("promtool") is None,
                                    reason="promtool (Debian's prometheus) is not installed: run infra/prometheus.sh")
needs_amtool = pytest.mark.skipif(shutil.which("amtool") is None,
                                  reason="amtool (Debian's prometheus-alertmanager) is not installed: run infra/prometheus.sh")


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
    assert len(alerts) == 8
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
    "lag without its floor": ("ConsumerLagGrowing", "citybrain_consumer_lag > 1000 and", "citybrain_consumer_lag > 0 and"),
    "lag falling counted as growing": ("ConsumerLagGrowing", "deriv(citybrain_consumer_lag[10m]) > 0", "deriv(citybrain_consumer_lag[10m]) != 0"),
    "dead letters without their usual rate": ("DeadLettersAboveUsual", "> 3 * sum by", "> 0 * sum by"),
    "dead letters without their floor": ("DeadLettersAboveUsual", 
        'rate(citybrain_records_total{outcome="dead_lettered"}[5m])) > 0.1',
        'rate(citybrain_records_total{outcome="dead_lettered"}[5m])) > 0',
    ),
    "a sink stalled without records waiting": ("SinkStalled", 
        "citybrain_sink_checkpoint_age_seconds > 900\n          and on (service, topic) citybrain_consumer_lag > 0",
        "citybrain_sink_checkpoint_age_seconds > 900\n          and on (service, topic) citybrain_consumer_lag >= 0",
    ),
    "a sink that checkpoints counted as stalled": ("SinkStalled", "citybrain_sink_checkpoint_age_seconds > 900", "citybrain_sink_checkpoint_age_seconds > 200"),
    "the bridge stalled without announcements waiting": ("BridgeStalled", 
        "citybrain_bridge_last_post_age_seconds > 900\n          and on (service, topic) citybrain_consumer_lag > 0",
        "citybrain_bridge_last_post_age_seconds > 900\n          and on (service, topic) citybrain_consumer_lag >= 0",
    ),
    "quality failures never forgotten": ("DataQualityFailure", "increase(citybrain_quality_failures_total[15m])", "increase(citybrain_quality_failures_total[1h])"),
    "medium security findings paging": ("SecurityFindingHigh", '{severity=~"high|critical"}', '{severity=~"medium|high|critical"}'),
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
