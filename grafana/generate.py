"""Generate the twin's Grafana dashboards as code (grafana-foundation-sdk, pinned exactly).

    python grafana/generate.py            # write grafana/dashboards/*.json
    python grafana/generate.py --check    # exit 1 if a checked-in file differs from the code

Every query goes to the datasource chosen by the ``datasource`` template variable (any
Prometheus; by default the provisioned one, uid ``dmtwin-prometheus``,
grafana/provisioning/datasources/prometheus.yml) and uses only metrics defined in
``streams.ops.metrics.METRICS``; tests/contract/test_dashboards.py holds both to that. Pressure is a
ratio (1.0 = the VM has exactly what it needs), so pressure panels draw a reference line at 1.0
and never cap the axis there.

The dashboards link fleet → host → VM: a host's series on the fleet opens that host, a VM's series
on the host opens that VM, each carrying the datasource and the time range; every dashboard also
has a menu of the others that keeps the variables. Balancer decisions are annotations on the
fleet, host and VM dashboards.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from grafana_foundation_sdk.builders import prometheus, stat, statetimeline, timeseries
from grafana_foundation_sdk.builders.common import (
    GraphThresholdsStyleConfig,
    ReduceDataOptions,
    StackingConfig,
    VizLegendOptions,
)
from grafana_foundation_sdk.builders.dashboard import (
    AnnotationQuery,
    Dashboard,
    DashboardLink,
    DatasourceVariable,
    QueryVariable,
    Row,
    ThresholdsConfig,
)
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models import units
from grafana_foundation_sdk.models.common import (
    BigValueColorMode,
    BigValueGraphMode,
    BigValueJustifyMode,
    BigValueTextMode,
    GraphThresholdsStyleMode,
    LegendDisplayMode,
    LegendPlacement,
    PercentChangeColorMode,
    StackingMode,
    VisibilityMode,
    VizOrientation,
)

__all__ = ["DATASOURCE_UID", "DATASOURCE_VARIABLE", "DECISIONS_ANNOTATION", "OUT", "DASHBOARDS", "fleet", "host", "vm", "pipeline", "render", "main"]

DATASOURCE_UID = "dmtwin-prometheus"
"""The provisioned Prometheus: the ``datasource`` variable's default."""
DATASOURCE_VARIABLE = "datasource"
DATASOURCE = model.DataSourceRef(type_val="prometheus", uid="${%s}" % DATASOURCE_VARIABLE)
OUT = Path(__file__).resolve().parent / "dashboards"
TAGS = ["dmtwin", "hyper-v", "dynamic-memory"]

HOST = 'host="$host"'
VM = 'host="$host", vm="$vm"'
RATE = "[$__rate_interval]"
WORKER = "and on (job, instance) dmtwin_build_info"
"""Keeps the process_* series of dmtwin's own processes (Prometheus exposes them too)."""

Panel = Builder[model.Panel]


# ---------------------------------------------------------------------------------------------
# Building blocks


def q(expr: str, legend: str = "__auto", ref: str = "A") -> prometheus.Dataquery:
    """A Prometheus query on the provisioned datasource."""
    return prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref).datasource(DATASOURCE)


def _targets(panel: Panel, queries: Iterable[tuple[str, str]]) -> None:
    for i, (expr, legend) in enumerate(queries):
        panel.with_target(q(expr, legend, chr(ord("A") + i)))  # type: ignore[attr-defined]


def _one_line_at(value: float, color: str = "red") -> ThresholdsConfig:
    return ThresholdsConfig().mode(model.ThresholdsMode.ABSOLUTE).steps([
        model.Threshold(value=None, color="transparent"),
        model.Threshold(value=value, color=color),
    ])


def graph(title: str, unit: str, *queries: tuple[str, str], description: str = "",
          width: int = 12, height: int = 8, stacked: bool = False,
          reference: float | None = None, minimum: float | None = 0) -> timeseries.Panel:
    """A time series panel; ``reference`` draws a dashed threshold line at that value."""
    panel = (
        timeseries.Panel().title(title).description(description).datasource(DATASOURCE)
        .unit(unit).span(width).height(height).line_width(1).fill_opacity(10)
        .legend(VizLegendOptions().display_mode(LegendDisplayMode.LIST)
                .placement(LegendPlacement.BOTTOM).show_legend(True))
    )
    if minimum is not None:
        panel.min(minimum)
    if stacked:
        panel.stacking(StackingConfig().mode(StackingMode.NORMAL).group("A")).fill_opacity(35)
    if reference is not None:
        panel.thresholds(_one_line_at(reference)).thresholds_style(
            GraphThresholdsStyleConfig().mode(GraphThresholdsStyleMode.DASHED))
    _targets(panel, queries)
    return panel


def single(title: str, unit: str, *queries: tuple[str, str], description: str = "",
           width: int = 6, height: int = 4, warn_at: float | None = None) -> stat.Panel:
    """A stat panel showing the last value; ``warn_at`` turns it red from that value."""
    panel = (
        stat.Panel().title(title).description(description).datasource(DATASOURCE)
        .unit(unit).span(width).height(height)
        .graph_mode(BigValueGraphMode.AREA).color_mode(BigValueColorMode.VALUE)
        .justify_mode(BigValueJustifyMode.AUTO).text_mode(BigValueTextMode.AUTO)
        .wide_layout(True).show_percent_change(False)
        .percent_change_color_mode(PercentChangeColorMode.STANDARD)
        .orientation(VizOrientation.AUTO)
        .reduce_options(ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    )
    steps = [model.Threshold(value=None, color="green")]
    if warn_at is not None:
        steps.append(model.Threshold(value=warn_at, color="red"))
    panel.thresholds(ThresholdsConfig().mode(model.ThresholdsMode.ABSOLUTE).steps(steps))
    _targets(panel, queries)
    return panel


def override(panel: timeseries.Panel, series: str, **properties: object) -> timeseries.Panel:
    """Field properties for the series named ``series`` (e.g. ``custom.fillBelowTo``)."""
    return panel.override_by_name(series, [
        model.DynamicConfigValue(id_val=key.replace("__", "."), value=value)
        for key, value in properties.items()
    ])


def variable(name: str, label: str, query: str, *, multi: bool = False) -> QueryVariable:
    """A template variable from ``label_values(...)`` on the provisioned datasource."""
    var = (
        QueryVariable(name).label(label).datasource(DATASOURCE)
        .query(query)
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED).sort(model.VariableSort.ALPHABETICAL_ASC)
    )
    if multi:
        var.multi(True).include_all(True).all_value(".*")
    return var


DECISIONS_ANNOTATION = 'sum by (type) (increase(dmtwin_decisions_total[1m])) > 0'
"""Balancer decisions (balloon, unballoon, hot-add, ...) emitted in each minute, by type. The
counter has no host label, so the marks are those of every host, on every dashboard."""


def board(uid: str, title: str, description: str, *, decisions: bool = False) -> Dashboard:
    """A dashboard with the ``datasource`` variable first, a menu of the other dmtwin dashboards
    that keeps the variables and the time, and (``decisions``) the balancer's decisions marked."""
    dash = (
        Dashboard(title).uid(uid).description(description).tags(TAGS).editable()
        .refresh("10s").time("now-30m", "now").timezone("browser")
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .with_variable(
            DatasourceVariable(DATASOURCE_VARIABLE).label("Data source").type("prometheus")
            .current(model.VariableOption(selected=True, text="Prometheus", value=DATASOURCE_UID)))
        .link(DashboardLink("dmtwin").type(model.DashboardLinkType.DASHBOARDS).tags(TAGS[:1])
              .as_dropdown(True).include_vars(True).keep_time(True))
    )
    if decisions:
        dash.annotation(AnnotationQuery().name("Balancer decisions, all hosts").datasource(DATASOURCE)
                        .enable(True).hide(False).icon_color("orange").expr(DECISIONS_ANNOTATION))
    return dash


def drill(panel: timeseries.Panel, title: str, uid: str, **variables: str) -> timeseries.Panel:
    """A data link from each series of ``panel`` to dashboard ``uid``, with ``variables`` (values
    may use the series' labels, e.g. ``${__field.labels.vm}``), the datasource and the time range."""
    query = "&".join([f"var-{name}={value}" for name, value in variables.items()]
                     + ["${%s:queryparam}" % DATASOURCE_VARIABLE, "${__url_time_range}"])
    return panel.data_links([DashboardLink(title).type(model.DashboardLinkType.LINK)
                             .url(f"/d/{uid}/{uid}?{query}")])


def _rows(dash: Dashboard, rows: Iterable[tuple[str, Iterable[Panel]]]) -> Dashboard:
    for title, panels in rows:
        dash.with_row(Row(title))
        for panel in panels:
            dash.with_panel(panel)
    return dash


# ---------------------------------------------------------------------------------------------
# Dashboards


def fleet() -> Dashboard:
    """Every host at a glance: how many, how pressed, how much memory is left, who is short."""
    sel = 'host=~"$host"'
    dash = board("dmtwin-fleet", "dmtwin / Fleet overview",
                 "Hyper-V Dynamic Memory across all hosts of the twin.", decisions=True)
    to_host: dict[str, str] = {"host": "${__field.labels.host}"}
    dash.with_variable(variable("host", "Host", "label_values(dmtwin_host_memory_total_bytes, host)",
                                multi=True))
    return _rows(dash, [
        ("Fleet", [
            single("Hosts", units.Short, (f"count(dmtwin_host_memory_total_bytes{{{sel}}})", "hosts")),
            single("Running VMs", units.Short,
                   (f"count(dmtwin_dynamic_memory_vm_physical_bytes{{{sel}}})", "VMs")),
            single("VMs in Warning", units.Short,
                   (f'sum(dmtwin_dynamic_memory_vm_memory_status{{{sel}, status="Warning"}})', "Warning"),
                   description="VMs whose assigned memory is below their demand (Memory Status = Warning).",
                   warn_at=1),
            single("Available memory", units.BytesIEC,
                   (f"sum(dmtwin_dynamic_memory_balancer_available_memory_bytes{{{sel}}})", "available"),
                   description="Sum of the balancers' Available Memory."),
        ]),
        ("Per host", [
            drill(graph("Average pressure by host", units.PercentUnit,
                        (f"dmtwin_dynamic_memory_balancer_average_pressure_ratio{{{sel}}}", "{{host}}"),
                        description="Balancer Average Pressure; above 1.0 the VMs are short of memory. "
                                    "Click a host to open it.",
                        reference=1.0), "Open host ${__field.labels.host}", "dmtwin-host", **to_host),
            drill(graph("Available memory by host", units.BytesIEC,
                        (f"dmtwin_dynamic_memory_balancer_available_memory_bytes{{{sel}}}", "{{host}}"),
                        description="Balancer Available Memory: what is left for VMs, host reserve "
                                    "excluded."), "Open host ${__field.labels.host}", "dmtwin-host", **to_host),
            drill(graph("VMs in Warning by host", units.Short,
                        (f'sum by (host) (dmtwin_dynamic_memory_vm_memory_status{{{sel}, status="Warning"}})',
                         "{{host}}")), "Open host ${__field.labels.host}", "dmtwin-host", **to_host),
            graph("Memory assigned to VMs, share of capacity", units.PercentUnit,
                  (f"sum by (host) (dmtwin_dynamic_memory_vm_physical_bytes{{{sel}}}) / on (host) "
                   f"(dmtwin_host_memory_total_bytes{{{sel}}} - dmtwin_host_memory_reserve_bytes{{{sel}}})",
                   "{{host}}"),
                  description="Physical memory of all VMs / (host total - host reserve).",
                  reference=1.0),
            graph("VMs by Memory Status", units.Short,
                  (f"sum by (status) (dmtwin_dynamic_memory_vm_memory_status{{{sel}}})", "{{status}}"),
                  stacked=True, width=24),
        ]),
    ])


def host() -> Dashboard:
    """One host's balancer over time, and its memory split by VM."""
    dash = board("dmtwin-host", "dmtwin / Host", "The Dynamic Memory balancer of one host and its VMs.",
                 decisions=True)
    to_vm = {"host": "$host", "vm": "${__field.labels.vm}"}
    opens = "Open VM ${__field.labels.vm}"
    dash.with_variable(variable("host", "Host", "label_values(dmtwin_host_memory_total_bytes, host)"))
    assigned = graph(
        "Assigned memory by VM, and total demand", units.BytesIEC,
        (f"dmtwin_dynamic_memory_vm_physical_bytes{{{HOST}}}", "{{vm}}"),
        (f"sum(dmtwin_dynamic_memory_vm_demand_bytes{{{HOST}}})", "total demand"),
        description="Physical Memory of each VM, stacked; the dashed line is the VMs' total demand.",
        stacked=True)
    override(assigned, "total demand", custom__stacking={"mode": "none", "group": "A"},
             custom__fillOpacity=0, custom__lineStyle={"fill": "dash", "dash": [10, 10]},
             color={"mode": "fixed", "fixedColor": "red"})
    return _rows(dash, [
        ("Balancer", [
            graph("Balancer memory", units.BytesIEC,
                  (f"dmtwin_dynamic_memory_balancer_available_memory_bytes{{{HOST}}}", "Available Memory"),
                  (f"dmtwin_dynamic_memory_balancer_available_memory_for_balancing_bytes{{{HOST}}}",
                   "Available Memory For Balancing"),
                  (f"dmtwin_host_memory_total_bytes{{{HOST}}} - dmtwin_host_memory_reserve_bytes{{{HOST}}}",
                   "capacity for VMs"),
                  description="Hyper-V Dynamic Memory Balancer counters and the host's capacity."),
            graph("Balancer pressure", units.PercentUnit,
                  (f"dmtwin_dynamic_memory_balancer_average_pressure_ratio{{{HOST}}}", "Average Pressure"),
                  (f"dmtwin_dynamic_memory_balancer_system_current_pressure_ratio{{{HOST}}}",
                   "System Current Pressure"),
                  reference=1.0),
            graph("Memory added and removed", units.BytesPerSecondIEC,
                  (f"sum(rate(dmtwin_dynamic_memory_vm_added_bytes_total{{{HOST}}}{RATE}))", "added"),
                  (f"sum(rate(dmtwin_dynamic_memory_vm_removed_bytes_total{{{HOST}}}{RATE}))", "removed"),
                  description="Bytes per second added (hot-add, unballoon) and removed (balloon) "
                              "over all VMs of the host."),
            graph("Running VMs by Memory Status", units.Short,
                  (f"sum by (status) (dmtwin_dynamic_memory_vm_memory_status{{{HOST}}})", "{{status}}"),
                  stacked=True),
        ]),
        ("VMs", [
            drill(assigned, opens, "dmtwin-vm", **to_vm),
            drill(graph("Demand by VM", units.BytesIEC,
                        (f"dmtwin_dynamic_memory_vm_demand_bytes{{{HOST}}}", "{{vm}}"), stacked=True),
                  opens, "dmtwin-vm", **to_vm),
            drill(graph("Current pressure by VM", units.PercentUnit,
                        (f"dmtwin_dynamic_memory_vm_pressure_current_ratio{{{HOST}}}", "{{vm}}"),
                        description="Click a VM to open it.", reference=1.0),
                  opens, "dmtwin-vm", **to_vm),
            drill(graph("Balloon by VM", units.BytesIEC,
                        (f"dmtwin_dynamic_memory_vm_balloon_bytes{{{HOST}}}", "{{vm}}"), stacked=True,
                        description="Memory ballooned out of each guest."),
                  opens, "dmtwin-vm", **to_vm),
        ]),
    ])


STATUS_COLORS = {"OK": "green", "Low": "yellow", "Warning": "red", "Paging": "purple", "None": "gray"}


def _status_timeline() -> statetimeline.Panel:
    panel = (
        statetimeline.Panel().title("Memory Status").datasource(DATASOURCE).span(24).height(5)
        .description("Hyper-V Manager's Memory Status column over time (None = blank).")
        .show_value(VisibilityMode.NEVER).merge_values(True)
        .legend(VizLegendOptions().show_legend(False).display_mode(LegendDisplayMode.HIDDEN)
                .placement(LegendPlacement.BOTTOM))
        .mappings([model.ValueMap(options={"0": model.ValueMappingResult(text=" ", color="transparent"),
                                           "1": model.ValueMappingResult(text="current", color="green")})])
    )
    for status, color in STATUS_COLORS.items():
        panel.override_by_name(status, [model.DynamicConfigValue(id_val="mappings", value=[
            {"type": "value", "options": {"0": {"text": " ", "color": "transparent"},
                                          "1": {"text": status, "color": color}}}])])
    panel.with_target(q(f"dmtwin_dynamic_memory_vm_memory_status{{{VM}}}", "{{status}}"))
    return panel


def vm() -> Dashboard:
    """One VM: what it has, what it sees, what it needs, how pressed it is, what the balancer did."""
    dash = board("dmtwin-vm", "dmtwin / VM", "Hyper-V Dynamic Memory counters of one VM.", decisions=True)
    dash.with_variable(variable("host", "Host", "label_values(dmtwin_host_memory_total_bytes, host)"))
    dash.with_variable(variable("vm", "VM", 'label_values(dmtwin_dynamic_memory_vm_physical_bytes{host="$host"}, vm)'))
    memory = graph(
        "Physical vs guest-visible vs demand", units.BytesIEC,
        (f"dmtwin_dynamic_memory_vm_physical_bytes{{{VM}}}", "Physical Memory"),
        (f"dmtwin_dynamic_memory_vm_guest_visible_physical_memory_bytes{{{VM}}}", "Guest Visible Physical Memory"),
        (f"dmtwin_dynamic_memory_vm_demand_bytes{{{VM}}}", "Memory Demand"),
        (f"dmtwin_dynamic_memory_vm_ideal_bytes{{{VM}}}", "ideal"),
        description="Assigned memory, what the guest sees (its high-watermark), what it needs, and "
                    "what the balancer aims for.")
    override(memory, "ideal", custom__lineStyle={"fill": "dash", "dash": [10, 10]}, custom__fillOpacity=0)
    band = graph(
        "Pressure band", units.PercentUnit,
        (f"dmtwin_dynamic_memory_vm_pressure_maximum_ratio{{{VM}}}", "Maximum Pressure"),
        (f"dmtwin_dynamic_memory_vm_pressure_average_ratio{{{VM}}}", "Average Pressure"),
        (f"dmtwin_dynamic_memory_vm_pressure_minimum_ratio{{{VM}}}", "Minimum Pressure"),
        (f"dmtwin_dynamic_memory_vm_pressure_current_ratio{{{VM}}}", "Current Pressure"),
        (f"1 / (1 + dmtwin_dynamic_memory_vm_buffer_ratio{{{VM}}})", "target 1 / (1 + buffer)"),
        description="Minimum, average and maximum pressure over the last minute; the red dashed line "
                    "at 1.0 is demand = assigned, the dotted one the balancer's target.",
        reference=1.0, width=24)
    override(band, "Maximum Pressure", custom__fillBelowTo="Minimum Pressure", custom__fillOpacity=20)
    override(band, "Minimum Pressure", custom__fillOpacity=0)
    override(band, "target 1 / (1 + buffer)", custom__lineStyle={"fill": "dot", "dash": [0, 10]},
             custom__fillOpacity=0)
    return _rows(dash, [
        ("Memory", [
            single("Seconds since the VM's newest event", units.Seconds,
                   (f"dmtwin_vm_last_report_age_seconds{{{VM}}}", "age"),
                   description="Wall-clock seconds since the twin heard of this VM; red after 60 s "
                               "(alert DmtwinVmReportsStopped).", width=24, height=3, warn_at=60),
            memory,
            graph("Balloon, Smart Paging and guest available memory", units.BytesIEC,
                  (f"dmtwin_dynamic_memory_vm_balloon_bytes{{{VM}}}", "balloon"),
                  (f"dmtwin_dynamic_memory_vm_smart_paging_working_set_bytes{{{VM}}}",
                   "Smart Paging Working Set Size"),
                  (f"dmtwin_dynamic_memory_vm_guest_available_bytes{{{VM}}}", "Guest Available Memory")),
        ]),
        ("Pressure and status", [band, _status_timeline()]),
        ("Balancer actions", [
            graph("Add and remove operations", units.OpsPerMinute,
                  (f"rate(dmtwin_dynamic_memory_vm_add_operations_total{{{VM}}}{RATE}) * 60",
                   "Memory Add Operations"),
                  (f"rate(dmtwin_dynamic_memory_vm_remove_operations_total{{{VM}}}{RATE}) * 60",
                   "Memory Remove Operations")),
            graph("Memory added and removed", units.BytesPerSecondIEC,
                  (f"rate(dmtwin_dynamic_memory_vm_added_bytes_total{{{VM}}}{RATE})", "Added Memory"),
                  (f"rate(dmtwin_dynamic_memory_vm_removed_bytes_total{{{VM}}}{RATE})", "Removed Memory")),
        ]),
        ("Settings", [
            single("Minimum / Startup / Maximum RAM", units.BytesIEC,
                   (f"dmtwin_dynamic_memory_vm_minimum_bytes{{{VM}}}", "Minimum"),
                   (f"dmtwin_dynamic_memory_vm_startup_bytes{{{VM}}}", "Startup"),
                   (f"dmtwin_dynamic_memory_vm_maximum_bytes{{{VM}}}", "Maximum"), width=12),
            single("Memory buffer", units.PercentUnit,
                   (f"dmtwin_dynamic_memory_vm_buffer_ratio{{{VM}}}", "buffer")),
            single("Memory weight", units.NoUnit,
                   (f"dmtwin_dynamic_memory_vm_weight{{{VM}}}", "weight"), width=3),
            single("Dynamic Memory", units.NoUnit,
                   (f"dmtwin_dynamic_memory_vm_enabled{{{VM}}}", "enabled"), width=3)
            .mappings([model.ValueMap(options={"0": model.ValueMappingResult(text="off"),
                                               "1": model.ValueMappingResult(text="on")})]),
        ]),
    ])


def pipeline() -> Dashboard:
    """The worker's own health: throughput, decisions, dead letters, balancing time, lag."""
    dash = board("dmtwin-pipeline", "dmtwin / Pipeline health",
                 "The Faust worker that folds events into the twin.")
    bucket = f"sum by (le) (rate(dmtwin_balancer_round_duration_seconds_bucket{RATE}))"
    return _rows(dash, [
        ("Throughput", [
            graph("Guest status reports processed", units.OpsPerSecond,
                  (f"sum(rate(dmtwin_reports_processed_total{RATE}))", "reports/s")),
            graph("Events by type", units.OpsPerSecond,
                  (f"sum by (type) (rate(dmtwin_events_total{RATE}))", "{{type}}"), stacked=True),
            graph("Decisions by type", units.OpsPerSecond,
                  (f"sum by (type) (rate(dmtwin_decisions_total{RATE}))", "{{type}}"), stacked=True),
            graph("Dead letters by reason", units.OpsPerSecond,
                  (f"sum by (reason) (rate(dmtwin_dead_letters_total{RATE}))", "{{reason}}"),
                  description="Records the worker could not apply: json, type, schema or state.",
                  stacked=True),
        ]),
        ("Latency and lag", [
            graph("Event-time lag", units.Seconds,
                  ("dmtwin_event_time_lag_seconds", "{{instance}}"),
                  description="Wall clock minus the newest event time each worker folded: how far "
                              "the twin is behind real time (alert DmtwinEventTimeLag above 30 s).",
                  reference=30, minimum=None),
            graph("Seconds since each host's newest event", units.Seconds,
                  ("dmtwin_host_last_report_age_seconds", "{{host}}"),
                  description="A host whose feed stopped climbs here (alert DmtwinHostReportsStopped "
                              "above 60 s).", reference=60, minimum=None),
            graph("Balancer round duration", units.Seconds,
                  (f"histogram_quantile(0.5, {bucket})", "p50"),
                  (f"histogram_quantile(0.99, {bucket})", "p99"),
                  (f"sum(rate(dmtwin_balancer_round_duration_seconds_sum{RATE})) / "
                   f"sum(rate(dmtwin_balancer_round_duration_seconds_count{RATE}))", "mean")),
            graph("Consumer lag", units.Short,
                  ("sum by (topic, partition) (dmtwin_consumer_lag_messages)", "{{topic}}/{{partition}}"),
                  description="Messages not yet consumed, by topic and partition."),
            graph("Transactions", units.Seconds,
                  ("histogram_quantile(0.99, sum by (le) (rate(dmtwin_transaction_duration_seconds_bucket"
                   f"{RATE})))", "p99 commit"),
                  (f"sum(rate(dmtwin_transaction_records_total{RATE}))", "records/s"),
                  description="Each batch of a partition commits outputs, state and offsets in one Kafka "
                              "transaction (docs/exactly-once.md)."),
        ]),
        ("Audit chain", [
            graph("Entries appended to the hash chain", units.OpsPerSecond,
                  (f"sum(rate(dmtwin_events_total{RATE}))", "inputs"),
                  (f"sum(rate(dmtwin_decisions_total{RATE}))", "decisions"),
                  description="Every accepted input and every decision is appended to its host's "
                              "hash-chained log (dmtwin.event-log), each entry carrying the digest "
                              "of the one before. `dmtwin log export` then `dmtwin audit verify` "
                              "checks the chain and re-derives every decision.",
                  stacked=True, width=16),
            single("Input accepted into the chain", units.PercentUnit,
                   (f"sum(rate(dmtwin_events_total{RATE})) / (sum(rate(dmtwin_events_total{RATE})) + "
                    f"sum(rate(dmtwin_dead_letters_total{RATE})))", "accepted"),
                   description="Share of the input records that became chain entries; the rest went "
                               "to dmtwin.dead-letter with their original bytes and are not audited.",
                   width=8, height=8),
        ]),
        ("Worker process", [
            single("Workers scraped", units.Short, ("count(dmtwin_build_info)", "workers"),
                   description="Workers whose metrics Prometheus reads now (alert DmtwinWorkerDown)."),
            single("Version", units.NoUnit, ("count by (version) (dmtwin_build_info)", "{{version}}"),
                   description="dmtwin releases running, with how many workers run each."),
            graph("CPU", units.PercentUnit,
                  (f"rate(process_cpu_seconds_total{RATE}) {WORKER}", "{{instance}}"),
                  description="CPU time per second of each worker process (1.0 = one core).",
                  width=6, height=4),
            graph("Resident memory", units.BytesIEC,
                  (f"process_resident_memory_bytes {WORKER}", "{{instance}}"),
                  width=6, height=4),
        ]),
    ])


DASHBOARDS: dict[str, Callable[[], Dashboard]] = {
    "fleet.json": fleet,
    "host.json": host,
    "vm.json": vm,
    "pipeline.json": pipeline,
}
"""File name under grafana/dashboards/ → the function that builds it."""


def _number(dash: model.Dashboard) -> model.Dashboard:
    """Give every panel and row a unique id, in layout order."""
    for i, panel in enumerate(dash.panels or [], start=1):
        panel.id_val = i
    return dash


def render(build: Callable[[], Dashboard]) -> str:
    """The JSON text of one dashboard, exactly as checked in."""
    return JSONEncoder(sort_keys=True, indent=2).encode(_number(build().build())) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    parser.add_argument("--out", type=Path, default=OUT, help=f"folder to write (default {OUT})")
    args = parser.parse_args(argv)
    stale = []
    for name, build in DASHBOARDS.items():
        path = args.out / name
        text = render(build)
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    if stale:
        print(f"grafana/generate.py: out of date: {', '.join(stale)} (run python grafana/generate.py)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
