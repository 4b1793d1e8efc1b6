"""Contracts of the Grafana dashboards in grafana/dashboards/.

- each validates against the JSON Schemas of the pinned grafana-foundation-sdk release (vendored
  under grafana/schemas/, see SOURCE.md there);
- the JSON on disk is exactly what grafana/generate.py produces now, so it cannot drift;
- every metric an expression (panel or annotation) uses is defined in ``streams.ops.metrics.METRICS``;
- every datasource reference is the ``datasource`` template variable, whose default is the
  provisioned Prometheus (uid ``dmtwin-prometheus``);
- fleet → host → VM links carry the variables and the time range; balancer decisions are
  annotations; the pipeline dashboard shows the audit chain.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import re
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import pytest
import yaml

from streams.ops.metrics import METRICS

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "grafana"
DASHBOARDS = GRAFANA / "dashboards"
SCHEMAS = GRAFANA / "schemas"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
FILES = sorted(p.name for p in DASHBOARDS.glob("*.json"))
PANEL_SCHEMAS = {"timeseries": "timeseries", "stat": "stat", "state-timeline": "statetimeline"}


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dmtwin_grafana_generate", GRAFANA / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


generate = _generator()


def _schema(name: str) -> dict[str, Any]:
    return dict(json.loads((SCHEMAS / f"{name}.jsonschema.json").read_text(encoding="utf-8")))


def _dashboard_schema() -> dict[str, Any]:
    """The SDK's dashboard schema, with three known translation slips put back to what Grafana's
    own CUE schema says (the generator turned CUE's "anything" into "object", and dropped null):

    - ``Threshold.value`` is ``number | null`` (null is the base step, i.e. -Infinity);
    - ``MatcherConfig.options`` is any value (``byName`` takes the field name as a string);
    - ``DynamicConfigValue.value`` is any value (e.g. ``custom.fillOpacity`` is a number).
    """
    schema = copy.deepcopy(_schema("dashboard"))
    definitions = schema["definitions"]
    definitions["Threshold"]["properties"]["value"]["type"] = ["number", "null"]
    definitions["MatcherConfig"]["properties"]["options"] = {}
    definitions["DynamicConfigValue"]["properties"]["value"] = {}
    return schema


def _load(name: str) -> dict[str, Any]:
    return dict(json.loads((DASHBOARDS / name).read_text(encoding="utf-8")))


def _panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def _exprs(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for panel in _panels(dashboard):
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]
    for annotation in dashboard.get("annotations", {}).get("list", []):
        if "expr" in annotation:
            yield annotation["name"], annotation["expr"]


def _walk(node: Any, key: str) -> Iterator[Any]:
    """Every value stored under ``key`` anywhere in a JSON document."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                yield v
            yield from _walk(v, key)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item, key)


KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
            "and", "or", "unless", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, keywords, labels left out)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.$])[A-Za-z_:][A-Za-z0-9_:]*", text):
        if text[match.end():].lstrip().startswith("(") or match.group().lower() in KEYWORDS:
            continue
        names.add(match.group())
    return names


STANDARD = {"up", "process_cpu_seconds_total", "process_resident_memory_bytes",
            "process_virtual_memory_bytes", "process_start_time_seconds", "process_open_fds",
            "process_max_fds", "python_info"}
"""Prometheus' own ``up`` and what prometheus_client's process and platform collectors expose
on the worker's registry (streams.ops.serving.twin_registry)."""


def _defined(name: str) -> bool:
    defined = {d.name: d for d in METRICS}
    if name in defined or name in STANDARD:
        return True
    for suffix in ("_bucket", "_sum", "_count"):
        base = name.removesuffix(suffix)
        if base != name and base in defined and defined[base].kind == "histogram":
            return True
    return False


def test_the_dashboards_are_the_four_generated_ones() -> None:
    assert FILES == sorted(generate.DASHBOARDS) == ["fleet.json", "host.json", "pipeline.json", "vm.json"]


@pytest.mark.parametrize("name", FILES)
def test_json_on_disk_is_what_generate_py_produces(name: str) -> None:
    on_disk = (DASHBOARDS / name).read_text(encoding="utf-8")
    assert on_disk == generate.render(generate.DASHBOARDS[name]), \
        f"{name} is stale: run python grafana/generate.py"


@pytest.mark.parametrize("name", FILES)
def test_dashboard_validates_against_the_sdk_schema(name: str) -> None:
    jsonschema.Draft7Validator(_dashboard_schema()).validate(_load(name))


@pytest.mark.parametrize("name", FILES)
def test_targets_and_panel_options_validate(name: str) -> None:
    query = jsonschema.Draft7Validator(_schema("prometheus"))
    for panel in _panels(_load(name)):
        for target in panel.get("targets", []):
            query.validate(target)
        kind = PANEL_SCHEMAS.get(panel["type"])
        if kind is None:
            assert panel["type"] == "row", f"no schema vendored for panel type {panel['type']}"
            continue
        schema = _schema(kind)
        jsonschema.Draft7Validator({**schema, "$ref": "#/definitions/Options"}).validate(panel["options"])
        custom = panel.get("fieldConfig", {}).get("defaults", {}).get("custom")
        if custom is not None and "FieldConfig" in schema["definitions"]:
            jsonschema.Draft7Validator({**schema, "$ref": "#/definitions/FieldConfig"}).validate(custom)


def test_the_schema_check_can_fail() -> None:
    broken = _load("vm.json")
    broken["panels"][1]["gridPos"]["w"] = "wide"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(_dashboard_schema()).validate(broken)


def test_metric_names_reads_promql() -> None:
    expr = ('sum by (host) (rate(dmtwin_a_total{host=~"$host", vm="x"}[$__rate_interval])) / on (host) '
            '(dmtwin_b_bytes - dmtwin_c_bytes) and histogram_quantile(0.99, sum by (le) (rate(d_bucket[5m])))')
    assert metric_names(expr) == {"dmtwin_a_total", "dmtwin_b_bytes", "dmtwin_c_bytes", "d_bucket"}
    assert metric_names("1 / (1 + dmtwin_x_ratio{a=\"b c\"}) * 60") == {"dmtwin_x_ratio"}


@pytest.mark.parametrize("name", FILES)
def test_every_metric_in_an_expr_is_defined(name: str) -> None:
    for title, expr in _exprs(_load(name)):
        used = metric_names(expr)
        assert used, f"{name} / {title}: no metric in {expr!r}"
        undefined = {m for m in used if not _defined(m)}
        assert not undefined, f"{name} / {title}: {sorted(undefined)} not in streams.ops.metrics.METRICS"


def test_every_defined_twin_metric_is_on_some_dashboard() -> None:
    used = {m for name in FILES for _, expr in _exprs(_load(name)) for m in metric_names(expr)}
    used |= {m.rsplit("_", 1)[0] for m in used if m.endswith(("_bucket", "_sum", "_count"))}
    assert {d.name for d in METRICS} - used == set()


def test_every_datasource_is_the_variable_defaulting_to_the_provisioned_one() -> None:
    provisioned = yaml.safe_load(DATASOURCES.read_text(encoding="utf-8"))["datasources"]
    assert [d["uid"] for d in provisioned] == [generate.DATASOURCE_UID] == ["dmtwin-prometheus"]
    assert provisioned[0]["type"] == "prometheus" and provisioned[0]["url"] == "http://prometheus:9090"
    for name in FILES:
        dashboard = _load(name)
        refs = list(_walk(dashboard, "datasource"))
        assert refs, name
        for ref in refs:
            assert ref == {"type": "prometheus", "uid": "${datasource}"}, (name, ref)
        first = dashboard["templating"]["list"][0]
        assert (first["type"], first["name"], first["query"]) == ("datasource", "datasource", "prometheus")
        assert first["current"]["value"] == generate.DATASOURCE_UID, "the default is the provisioned one"
        for panel in _panels(dashboard):
            if panel["type"] != "row":
                assert panel.get("datasource") == refs[0], (name, panel["title"])


def test_panel_ids_and_dashboard_uids_are_unique() -> None:
    uids = [_load(name)["uid"] for name in FILES]
    assert len(set(uids)) == len(uids) and all(1 <= len(uid) <= 40 for uid in uids)
    for name in FILES:
        ids = [p["id"] for p in _panels(_load(name))]
        assert len(set(ids)) == len(ids), name


def test_variables_come_from_label_values() -> None:
    for name in FILES:
        dashboard = _load(name)
        variables = {v["name"]: v for v in dashboard.get("templating", {}).get("list", [])}
        for var in variables.values():
            if var["type"] == "datasource":
                continue
            assert var["type"] == "query" and var["query"].startswith("label_values("), (name, var)
            assert var["query"].endswith(f", {var['name']})")
        used = {m for _, expr in _exprs(dashboard) for m in re.findall(r"\$(\w+)", expr)}
        assert used - {"__rate_interval", "__interval", "__range"} <= set(variables), name
    assert {"host", "vm"} <= {v["name"] for v in _load("vm.json")["templating"]["list"]}


def test_pressure_panels_draw_the_reference_line_at_one() -> None:
    checked = 0
    for name in FILES:
        for panel in _panels(_load(name)):
            exprs = [t["expr"] for t in panel.get("targets", [])]
            if not any("pressure" in e and e.startswith("dmtwin_") for e in exprs):
                continue
            defaults = panel["fieldConfig"]["defaults"]
            assert [s["value"] for s in defaults["thresholds"]["steps"]][1:] == [1.0], panel["title"]
            assert defaults["custom"]["thresholdsStyle"]["mode"] != "off", panel["title"]
            assert "max" not in defaults, f"{panel['title']}: pressure above 1.0 must stay visible"
            checked += 1
    assert checked == 4  # fleet average, host balancer, host per VM, VM pressure band


def _data_links(dashboard: dict[str, Any]) -> dict[str, list[str]]:
    """Panel title → the URLs of its data links."""
    return {panel["title"]: [link["url"] for link in panel["fieldConfig"]["defaults"].get("links", [])]
            for panel in _panels(dashboard) if "fieldConfig" in panel}


def test_fleet_links_to_host_and_host_to_vm_carrying_the_variables() -> None:
    uids = {name: _load(name)["uid"] for name in FILES}
    for source, target, labels in (("fleet.json", "host.json", {"host": "${__field.labels.host}"}),
                                   ("host.json", "vm.json", {"host": "$host", "vm": "${__field.labels.vm}"})):
        urls = [url for links in _data_links(_load(source)).values() for url in links]
        assert len(urls) >= 3, f"{source} has too few links to {target}"
        for url in urls:
            path, _, query = url.partition("?")
            assert path.startswith(f"/d/{uids[target]}/"), url
            params = query.split("&")
            for label, value in labels.items():
                assert f"var-{label}={value}" in params, url
            assert "${datasource:queryparam}" in params and "${__url_time_range}" in params, url
            # Every variable the target needs is given.
            needed = {v["name"] for v in _load(target)["templating"]["list"]} - {"datasource"}
            assert needed <= set(labels), url
    for name in FILES:
        [menu] = _load(name)["links"]
        assert menu["type"] == "dashboards" and menu["includeVars"] and menu["keepTime"], name
        assert set(menu["tags"]) <= {t for other in FILES for t in _load(other)["tags"]}


def test_balancer_decisions_are_annotations() -> None:
    for name in ("fleet.json", "host.json", "vm.json"):
        [annotation] = _load(name)["annotations"]["list"]
        assert annotation["expr"] == generate.DECISIONS_ANNOTATION and annotation["enable"], name
        assert metric_names(annotation["expr"]) == {"dmtwin_decisions_total"}
        assert annotation["datasource"] == {"type": "prometheus", "uid": "${datasource}"}


def test_the_pipeline_shows_the_audit_chain() -> None:
    pipeline = _load("pipeline.json")
    rows = [p["title"] for p in pipeline["panels"] if p["type"] == "row"]
    assert "Audit chain" in rows
    titles = {title for title, _ in _exprs(pipeline)}
    assert {"Entries appended to the hash chain", "Input accepted into the chain"} <= titles
