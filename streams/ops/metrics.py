"""Prometheus exposition of the twin: Hyper-V's Dynamic Memory counters and the pipeline's health.

Every metric is defined once, in ``METRICS``: its exposed name, type, labels, the Hyper-V counter
(or WMI property, or pipeline step) it comes from and how its value is converted. The collector,
``PipelineMetrics``, the docs and the Grafana dashboards are all checked against that table.

Conventions (ECOSYSTEM.md §5, STYLE.md §4 "windows_exporter"):

- one application prefix, ``dmtwin_``; the rest mirrors windows_exporter's grammar
  ``<counter set>_<quantity>_<base unit>[_total]``;
- base units only: Hyper-V's MB (= MiB) become bytes (× 2^20), percent becomes a ratio (÷ 100).
  A pressure ratio above 1.0 means the VM has less than it needs and is never clamped;
- cumulative counters end in ``_total``;
- labels ``host`` and ``vm`` (balancer and host metrics: ``host`` only); no values in names.

The collectors that read the twin at each scrape are ``streams.ops.collectors``'; the worker's own
counters are ``streams.ops.pipeline``'s, and ``streams.ops.serving`` puts them all on a registry
and serves it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from twin.counters import BALANCER_COUNTER_SET, VM_COUNTER_SET, BalancerCounters, VmCounters, counter_fields
from twin.events import GuestStatusReported

__all__ = [
    "PREFIX",
    "BYTES_PER_MIB",
    "MEMORY_STATUSES",
    "DEAD_LETTER_REASONS",
    "ROUND_DURATION_BUCKETS",
    "MetricDef",
    "METRICS",
    "LIVE_METRICS",
    "metric",
    "metrics_markdown",
]

PREFIX = "dmtwin_"
BYTES_PER_MIB = 1 << 20
"""Hyper-V's counters say MB and mean MiB (DOMAIN.md conventions; windows_exporter's MBToBytes)."""

MEMORY_STATUSES: tuple[str, ...] = ("OK", "Low", "Warning", "Paging", "None")
"""Values of the ``status`` label. Hyper-V Manager's blank Memory Status is exposed as ``None``
(the name of that value in the ``VMMemoryStatus`` enum, DOMAIN.md §1.3), because Prometheus
treats an empty label value as no label at all."""

DEAD_LETTER_REASONS: tuple[str, ...] = ("json", "type", "schema", "state", "late")
"""Values of the ``reason`` label of ``dmtwin_dead_letters_total`` (see ``rejection_reason``)."""
REPORT_TYPE: str = GuestStatusReported.model_fields["type"].default
"""Inputs of this type are also counted as reports processed."""

ROUND_DURATION_BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)
"""A balancing round folds one host's table at numpy speed: tens of µs to a few ms."""

TRANSACTION_DURATION_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)
"""A transaction is a few round trips to the broker: milliseconds, seconds while it is away."""

Kind = Literal["gauge", "counter", "histogram"]
Scope = Literal["vm", "vm_setting", "balancer", "host", "pipeline", "live"]
Convert = Literal["mib_to_bytes", "percent_to_ratio", "none", "state"]

_VM = f"\\{VM_COUNTER_SET}(*)\\"
_BALANCER = f"\\{BALANCER_COUNTER_SET}(*)\\"
_SETTING = "Msvm_MemorySettingData."


@dataclass(frozen=True)
class MetricDef:
    """One exposed metric.

    ``name`` is the full exposed name (with ``_total`` for counters); ``source`` the Hyper-V
    counter path, WMI property or pipeline step it comes from, quoted in the HELP text;
    ``attribute`` the field read from the scope's object (``VmCounters``, ``VmRecord``,
    ``BalancerCounters``, ``HostState``); ``convert`` how its native value becomes a base unit.
    """

    name: str
    kind: Kind
    scope: Scope
    labels: tuple[str, ...]
    source: str
    description: str
    attribute: str | None = None
    convert: Convert = "none"

    @property
    def help(self) -> str:
        """HELP text: what it is, then where it comes from and how it was converted."""
        how = {"mib_to_bytes": "MB x 2^20", "percent_to_ratio": "percent / 100"}.get(self.convert)
        return f"{self.description} Source: {self.source}" + (f" ({how})." if how else ".")


def _vm(name: str, attribute: str, description: str, kind: Kind = "gauge",
        convert: Convert = "mib_to_bytes", labels: tuple[str, ...] = ("host", "vm")) -> MetricDef:
    return MetricDef(PREFIX + "dynamic_memory_vm_" + name, kind, "vm", labels,
                     _counter_source(VmCounters, attribute, _VM), description, attribute, convert)


def _setting(name: str, attribute: str, prop: str, description: str,
             convert: Convert = "mib_to_bytes") -> MetricDef:
    return MetricDef(PREFIX + "dynamic_memory_vm_" + name, "gauge", "vm_setting", ("host", "vm"),
                     _SETTING + prop, description, attribute, convert)


def _balancer(name: str, attribute: str, description: str,
              convert: Convert = "mib_to_bytes") -> MetricDef:
    return MetricDef(PREFIX + "dynamic_memory_balancer_" + name, "gauge", "balancer", ("host",),
                     _counter_source(BalancerCounters, attribute, _BALANCER), description, attribute,
                     convert)


def _pipeline(name: str, kind: Kind, labels: tuple[str, ...], source: str,
              description: str) -> MetricDef:
    return MetricDef(PREFIX + name, kind, "pipeline", labels, source, description)


def _counter_source(cls: type, attribute: str, path: str) -> str:
    """The perf counter path of a counter field, e.g. ``\\Hyper-V Dynamic Memory VM(*)\\Physical
    Memory``; for a value Hyper-V shows elsewhere or the twin derives, its own description."""
    meta = dict(counter_fields(cls))[attribute]
    counter = meta["counter"]
    return counter if "(" in counter else path + counter


METRICS: tuple[MetricDef, ...] = (
    # "Hyper-V Dynamic Memory VM" (DOMAIN.md §2.1), one instance per running VM.
    _vm("physical_bytes", "physical_memory", "Memory currently assigned to the VM, in bytes."),
    _vm("guest_visible_physical_memory_bytes", "guest_visible_physical_memory",
        "Memory the guest sees (its high-watermark, ballooned pages included), in bytes."),
    _vm("added_bytes_total", "added_memory", "Memory added to the VM since it started, in bytes.",
        "counter"),
    _vm("removed_bytes_total", "removed_memory",
        "Memory removed from the VM since it started, in bytes.", "counter"),
    _vm("add_operations_total", "memory_add_operations", "Memory add operations since the VM started.",
        "counter", "none"),
    _vm("remove_operations_total", "memory_remove_operations",
        "Memory remove operations since the VM started.", "counter", "none"),
    _vm("pressure_current_ratio", "current_pressure",
        "Current pressure: demand / assigned memory (above 1 the guest is short).",
        convert="percent_to_ratio"),
    _vm("pressure_average_ratio", "average_pressure",
        "Pressure averaged over the last minute of status reports.", convert="percent_to_ratio"),
    _vm("pressure_minimum_ratio", "minimum_pressure",
        "Lowest pressure over the last minute of status reports.", convert="percent_to_ratio"),
    _vm("pressure_maximum_ratio", "maximum_pressure",
        "Highest pressure over the last minute of status reports.", convert="percent_to_ratio"),
    _vm("smart_paging_working_set_bytes", "smart_paging_working_set_size",
        "Memory backed by the Smart Paging file, in bytes."),
    _vm("guest_available_bytes", "guest_available_memory",
        "Memory the guest reports as available, in bytes."),
    _vm("demand_bytes", "memory_demand", "Memory demand (the guest's committed memory), in bytes."),
    _vm("balloon_bytes", "balloon_size",
        "Memory ballooned out of the guest (visible - assigned - paged), in bytes."),
    _vm("ideal_bytes", "ideal_memory",
        "Memory the balancer aims for: demand x (1 + buffer) within Minimum and Maximum, in bytes."),
    _vm("memory_status", "memory_status",
        "Memory Status of the VM: 1 for its current status, 0 for the others.", convert="state",
        labels=("host", "vm", "status")),
    # The VM's Dynamic Memory settings (DOMAIN.md §1.1).
    _setting("startup_bytes", "startup_mib", "VirtualQuantity", "Startup RAM, in bytes."),
    _setting("minimum_bytes", "minimum_mib", "Reservation", "Minimum RAM, in bytes."),
    _setting("maximum_bytes", "maximum_mib", "Limit", "Maximum RAM, in bytes."),
    _setting("buffer_ratio", "buffer_percent", "TargetMemoryBuffer",
             "Memory buffer as a ratio of demand.", "percent_to_ratio"),
    _setting("weight", "weight", "Weight", "Memory weight, 0 to 10000.", "none"),
    _setting("enabled", "dynamic_memory_enabled", "DynamicMemoryEnabled",
             "1 if Dynamic Memory is enabled for the VM, else 0.", "none"),
    # "Hyper-V Dynamic Memory Balancer", instance "System Balancer" (DOMAIN.md §2.2).
    _balancer("available_memory_bytes", "available_memory",
              "Memory left for VMs on the host (host reserve excluded), in bytes."),
    _balancer("available_memory_for_balancing_bytes", "available_memory_for_balancing",
              "Memory available for balancing (free plus reclaimable), in bytes."),
    _balancer("average_pressure_ratio", "average_pressure",
              "Average pressure over the balanced VMs.", "percent_to_ratio"),
    _balancer("system_current_pressure_ratio", "system_current_pressure",
              "Current pressure of the system: total demand / total assigned memory.",
              "percent_to_ratio"),
    # The host's memory, as its host.joined / host.memory_changed events set it.
    MetricDef(PREFIX + "host_memory_total_bytes", "gauge", "host", ("host",),
              "host.joined / host.memory_changed total_mib", "Physical memory of the host, in bytes.",
              "total_mib", "mib_to_bytes"),
    MetricDef(PREFIX + "host_memory_reserve_bytes", "gauge", "host", ("host",),
              "host.joined / host.memory_changed reserve_mib "
              "(HKLM\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion\\Virtualization\\MemoryReserve)",
              "Memory reserved for the management OS, in bytes.", "reserve_mib", "mib_to_bytes"),
    # The pipeline's own health, recorded by the worker through PipelineMetrics.
    _pipeline("reports_processed_total", "counter", (), "guest.status events folded by the worker",
              "Guest status reports processed."),
    _pipeline("events_total", "counter", ("type",), "input events folded by the worker",
              "Input events processed, by event type."),
    _pipeline("dead_letters_total", "counter", ("reason",), "records sent to the dead-letter topic",
              "Records the worker could not apply, by reason (json, type, schema, state, late)."),
    _pipeline("decisions_total", "counter", ("type",), "decisions emitted by the balancer",
              "Balancer decisions emitted, by decision type."),
    _pipeline("balancer_round_duration_seconds", "histogram", (), "twin.Twin.handle(balancer.tick)",
              "Wall-clock time of one balancing round of one host, in seconds."),
    _pipeline("consumer_lag_messages", "gauge", ("topic", "partition"),
              "Kafka end offset minus committed offset",
              "Messages not yet consumed, by topic and partition."),
    _pipeline("transaction_duration_seconds", "histogram", (), "streams.transactions.PartitionProducer.commit",
              "Wall-clock time to send and commit one partition's Kafka transaction, in seconds."),
    _pipeline("transaction_records_total", "counter", (), "streams.app.Worker",
              "Records produced in committed transactions (log, commands, dead letters, snapshots)."),
)

LIVE_METRICS: tuple[MetricDef, ...] = (
    MetricDef(PREFIX + "build_info", "gauge", "live", ("version",), "twin.__version__",
              "Always 1; the version label is the dmtwin release that folds the events."),
    MetricDef(PREFIX + "vm_last_report_age_seconds", "gauge", "live", ("host", "vm"),
              "wall clock at scrape minus the at_ms of the VM's newest event",
              "Seconds since the VM's newest event (status report, answer, lifecycle event or "
              "decision about it); negative if its clock runs ahead."),
    MetricDef(PREFIX + "host_last_report_age_seconds", "gauge", "live", ("host",),
              "wall clock at scrape minus HostState.last_at_ms",
              "Seconds since the newest event of the host; negative if its clock runs ahead."),
    MetricDef(PREFIX + "event_time_lag_seconds", "gauge", "live", (),
              "wall clock at scrape minus the newest event time folded by this worker",
              "How far the twin is behind real time, in seconds (absent while it owns no host)."),
)
"""Computed by ``LiveCollector`` at each scrape; the ages need a wall clock, so a replay (whose
events are not live) exposes only ``dmtwin_build_info`` of them."""

METRICS = METRICS + LIVE_METRICS


def metrics_markdown() -> str:
    """``METRICS`` as a Markdown table (name, type, labels, source), for the docs."""
    unit = {"mib_to_bytes": "MB x 2^20", "percent_to_ratio": "percent / 100"}
    rows = ["| Metric | Type | Labels | Source | Conversion |", "|---|---|---|---|---|"]
    for d in METRICS:
        source = d.source.replace("|", "\\|")
        rows.append(f"| `{d.name}` | {d.kind} | {', '.join(d.labels) or '-'} | {source} | "
                    f"{unit.get(d.convert, '-')} |")
    return "\n".join(rows) + "\n"


def metric(name: str) -> MetricDef:
    """The definition of the metric exposed as ``name``; ``KeyError`` if there is none."""
    for definition in METRICS:
        if definition.name == name:
            return definition
    raise KeyError(name)
