"""The alert rules of deploy/alerts.yml: loaded by compose's Prometheus, pinned by promtool's
unit tests (deploy/alerts.test.yml), and written against metrics the worker really exposes."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.ops.metrics import METRICS

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
ALERTS = DEPLOY / "alerts.yml"
ALERT_TESTS = DEPLOY / "alerts.test.yml"

needs_promtool = pytest.mark.skipif(shutil.which("promtool") is None,
                                    reason="promtool not installed (Debian package 'prometheus'; "
                                           "scripts/setup installs it)")

EXPECTED = {"DmtwinVmMemoryWarning", "DmtwinHostOutOfMemory", "DmtwinWorkerDown",
            "DmtwinVmReportsStopped", "DmtwinHostReportsStopped", "DmtwinEventTimeLag",
            "DmtwinConsumerLag", "DmtwinDeadLettersRising"}


def _rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=120, cwd=DEPLOY)


def test_the_operators_alerts_exist_with_a_severity_and_words() -> None:
    rules = _rules()
    assert {rule["alert"] for rule in rules} == EXPECTED
    for rule in rules:
        assert rule["labels"]["severity"] in ("page", "warning"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]


def test_every_alert_has_a_unit_test() -> None:
    tests = yaml.safe_load(ALERT_TESTS.read_text(encoding="utf-8"))
    assert tests["rule_files"] == [ALERTS.name]
    tested = {case["alertname"] for test in tests["tests"] for case in test.get("alert_rule_test", [])}
    assert tested == EXPECTED
    firing = {case["alertname"] for test in tests["tests"] for case in test.get("alert_rule_test", [])
              if case["exp_alerts"]}
    assert firing == EXPECTED, "each alert must be seen firing, not only quiet"


def test_alerts_read_only_metrics_the_worker_exposes() -> None:
    exposed = {d.name for d in METRICS} | {"up"}
    for rule in _rules():
        names = set(re.findall(r"\bdmtwin_\w+|\bup(?=\{)", rule["expr"]))
        assert names, f"{rule['alert']}: no metric found in {rule['expr']!r}"
        assert names <= exposed, f"{rule['alert']} reads {names - exposed}, which no one exposes"


def test_compose_prometheus_loads_the_rules() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    volumes = compose["services"]["prometheus"]["volumes"]
    assert "./deploy/alerts.yml:/etc/prometheus/alerts.yml:ro" in volumes
    assert "./deploy/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in volumes
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text(encoding="utf-8"))
    assert config["rule_files"] == ["alerts.yml"], "relative to /etc/prometheus/prometheus.yml"


@needs_promtool
def test_promtool_checks_the_rules() -> None:
    done = _promtool("check", "rules", ALERTS.name)
    assert done.returncode == 0, done.stdout + done.stderr


@needs_promtool
def test_promtool_unit_tests_of_the_rules_pass() -> None:
    done = _promtool("test", "rules", ALERT_TESTS.name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout
