# ruff: noqa: F811  (pytest fixtures are parameters named like the imported fixtures)
"""Every query of every Grafana dashboard returns data from a real Prometheus scraping the twin,
and the alert rules of deploy/alerts.yml load and evaluate there.

No mocks: a worker process folds a simulated run streamed through Kafka and serves its metrics; the
``prometheus`` binary scrapes it every second; each PromQL ``expr`` of grafana/dashboards/*.json,
with Grafana's template variables replaced by concrete values, goes through the HTTP API.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

# The fixtures are imported by name so this module runs whether or not conftest.py imports them too.
from .prometheus_fixture import (  # noqa: F401
    PrometheusServer,
    TwinMetricsServer,
    prometheus_server,
    twin_metrics_server,
)

pytestmark = pytest.mark.integration

DASHBOARDS = Path(__file__).resolve().parents[2] / "grafana" / "dashboards"
ALERTS = Path(__file__).resolve().parents[2] / "deploy" / "alerts.yml"
HOST, VM = "hv-01", "sql-01"
VARIABLES = {
    "host": HOST,
    "vm": VM,
    "__rate_interval": "1m",
    "__interval": "15s",
    "__range": "5m",
}
"""Concrete values for Grafana's variables: a host and VM of examples/dozen.toml, and intervals
long enough to hold the few scrapes the fixture waits for."""


def substitute(expr: str, variables: dict[str, str] = VARIABLES) -> str:
    """Replace ``$name`` and ``${name}`` the way Grafana's template service does."""
    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in variables:
            raise KeyError(f"no value for ${name} in {expr!r}")
        return variables[name]
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, expr)


def _dashboards() -> list[tuple[str, dict[str, Any]]]:
    return [(p.name, json.loads(p.read_text(encoding="utf-8"))) for p in sorted(DASHBOARDS.glob("*.json"))]


def _queries() -> list[Any]:
    params = []
    for name, dashboard in _dashboards():
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                params.append(pytest.param(target["expr"], id=f"{name}:{panel['title']}:{target['refId']}"))
    return params


def _variables() -> list[Any]:
    params = []
    for name, dashboard in _dashboards():
        for var in dashboard.get("templating", {}).get("list", []):
            if var["type"] == "datasource":  # chooses a Prometheus, queries nothing
                continue
            params.append(pytest.param(var["query"], id=f"{name}:${var['name']}"))
    return params


def _annotations() -> list[Any]:
    params = []
    for name, dashboard in _dashboards():
        for annotation in dashboard.get("annotations", {}).get("list", []):
            if "expr" in annotation:
                params.append(pytest.param(annotation["expr"], id=f"{name}:{annotation['name']}"))
    return params


QUERIES = _queries()


def test_there_are_queries_to_check() -> None:
    assert len(QUERIES) >= 40
    assert substitute('x{host="$host", vm="${vm}"}[$__rate_interval]') == 'x{host="hv-01", vm="sql-01"}[1m]'


def test_the_target_is_scraped(prometheus_server: PrometheusServer,
                               twin_metrics_server: TwinMetricsServer) -> None:
    up = prometheus_server.query(f'up{{job="{prometheus_server.job}"}}')
    assert [r["metric"]["instance"] for r in up] == [twin_metrics_server.target]
    assert up[0]["value"][1] == "1"


def test_scraped_values_are_the_replayed_twin(prometheus_server: PrometheusServer,
                                              twin_metrics_server: TwinMetricsServer) -> None:
    record = twin_metrics_server.replay_state.hosts[HOST].vm(VM)
    physical = prometheus_server.query(f'dmtwin_dynamic_memory_vm_physical_bytes{{host="{HOST}", vm="{VM}"}}')
    assert float(physical[0]["value"][1]) == record.assigned_mib * 2**20
    vms = prometheus_server.query("count(dmtwin_dynamic_memory_vm_physical_bytes)")
    assert int(vms[0]["value"][1]) == len(twin_metrics_server.vms[HOST]) == 12


@pytest.mark.parametrize("expr", QUERIES)
def test_dashboard_query_returns_data(prometheus_server: PrometheusServer, expr: str) -> None:
    query = substitute(expr)
    result = prometheus_server.query(query)
    assert result, f"no data for {query!r}"


@pytest.mark.parametrize("query", _variables())
def test_dashboard_variable_lists_the_twin(prometheus_server: PrometheusServer,
                                           twin_metrics_server: TwinMetricsServer, query: str) -> None:
    match = re.fullmatch(r"label_values\((.+), (\w+)\)", query)
    assert match, query
    selector, label = substitute(match.group(1)), match.group(2)
    expected = {"host": set(twin_metrics_server.hosts), "vm": set(twin_metrics_server.vms[HOST])}[label]
    assert set(prometheus_server.label_values(label, selector)) == expected


@pytest.mark.parametrize("expr", _annotations())
def test_annotation_query_reads_the_balancers_decisions(prometheus_server: PrometheusServer, expr: str) -> None:
    """The annotation marks the minutes whose decision counters rose. The fixture's run is fed
    before Prometheus starts, so its counters no longer rise; without the ``> 0`` the same query
    must still find every decision type's series (all zero)."""
    assert expr.endswith(" > 0")
    result = prometheus_server.query(substitute(expr.removesuffix(" > 0")))
    assert result, f"no decision series for {expr!r}"
    assert all(r["metric"]["type"].startswith("decision.") for r in result), result


def test_the_alert_rules_load_and_evaluate_against_the_worker(prometheus_server: PrometheusServer) -> None:
    """deploy/alerts.yml in a real Prometheus: every rule loads and evaluates without error."""

    expected = {rule["alert"] for group in yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"]
                for rule in group["rules"]}
    deadline = time.monotonic() + 30
    while True:
        rules = {rule["name"]: rule for rule in prometheus_server.rules()}
        never = [name for name, rule in rules.items() if rule["lastEvaluation"].startswith("0001-")]
        if rules and not never:  # Prometheus reports the zero time for a rule not yet evaluated
            break
        assert time.monotonic() < deadline, "the rules were never evaluated"
        time.sleep(1)
    assert set(rules) == expected
    for name, rule in rules.items():
        assert rule["health"] == "ok", (name, rule.get("lastError"))


def test_every_metric_an_alert_reads_is_scraped_from_the_worker(prometheus_server: PrometheusServer) -> None:
    names = {name for group in yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"]
             for rule in group["rules"] for name in re.findall(r"\bdmtwin_\w+", rule["expr"])}
    assert len(names) >= 6
    for name in sorted(names):
        assert prometheus_server.query(f'count({{__name__="{name}"}})'), f"{name} is not scraped"
