"""The alert rules: promtool checks them and its unit tests fire and clear every alert."""

from __future__ import annotations

import yaml

from tests.deploy.tools import CHART, RULE_TESTS, RULES, run, tool

REQUIRED_ALERTS = {
    "RoomeeHighErrorRate", "RoomeeHighLatency", "RoomeeCircuitBreakerOpen", "RoomeeEventsDeadLettered",
    "RoomeeOutboxBacklogGrowing", "RoomeeNotificationDeliveryFailing", "RoomeeSagaFailed", "RoomeeFanOutSlow",
}


def _alerts() -> dict[str, dict]:
    return {rule["alert"]: rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]}


def test_promtool_checks_the_rules():
    result = run(tool("promtool"), "check", "rules", str(RULES))
    assert f"SUCCESS: {len(_alerts())} rules found" in result.stdout


def test_promtool_unit_tests_fire_and_clear_every_alert():
    result = run(tool("promtool"), "test", "rules", str(RULE_TESTS))
    assert "SUCCESS" in result.stdout
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    for name in _alerts():
        cases = [c for t in tests for c in t["alert_rule_test"] if c["alertname"] == name]
        assert any(c["exp_alerts"] for c in cases), f"{name} is never shown firing"
        firing = min(c["eval_time"] for c in cases if c["exp_alerts"])
        assert any(not c["exp_alerts"] and _minutes(c["eval_time"]) > _minutes(firing) for c in cases), (
            f"{name} is never shown clearing after it fired"
        )


def test_a_broken_rule_makes_the_unit_tests_fail(tmp_path):
    """The unit tests can fail: the same tests against rules with a threshold moved."""
    (tmp_path / "roomee.rules.yaml").write_text(RULES.read_text().replace("> 0.05", "> 0.5"))
    (tmp_path / "roomee.rules.test.yaml").write_text(RULE_TESTS.read_text())
    result = run(tool("promtool"), "test", "rules", str(tmp_path / "roomee.rules.test.yaml"), check=False)
    assert result.returncode != 0 and "RoomeeHighErrorRate" in result.stdout + result.stderr


def test_every_alert_required_exists_with_severity_and_runbook():
    alerts = _alerts()
    assert REQUIRED_ALERTS <= set(alerts)
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert {"summary", "description", "runbook"} <= set(rule["annotations"]), name


def test_the_chart_ships_the_same_rules_file():
    assert (CHART / "files" / "roomee.rules.yaml").read_bytes() == RULES.read_bytes()


def _minutes(duration: str) -> int:
    assert duration.endswith("m")
    return int(duration[:-1])
