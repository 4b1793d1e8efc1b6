"""The Prometheus exposition of the twin: every defined metric appears, values are the twin's
counters in base units, stopped VMs vanish, and promtool's linter has nothing to say.

A short scenario runs through ``twin.scenario.simulate`` into a ``twin.engine.Twin``; the tests
scrape it through the real ``TwinCollector`` on a private ``CollectorRegistry``.
"""

from __future__ import annotations

import shutil
import socket
import sys
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from streams.ops.collectors import LiveCollector
from streams.ops.metrics import (
    DEAD_LETTER_REASONS,
    LIVE_METRICS,
    MEMORY_STATUSES,
    METRICS,
    metrics_markdown,
)
from streams.ops.pipeline import PipelineMetrics, rejection_reason
from streams.ops.serving import serve, serve_replay, twin_registry
from twin.counters import (
    BalancerCounters,
    VmCounters,
    balancer_counters,
    counter_fields,
    vm_counters,
)
from twin import __version__
from twin.engine import Twin
from twin.errors import Rejected
from twin.events import DECISION_TYPES, BalancerTicked, VmStopped, flatten
from twin.log import Replay, decode
from twin.scenario import Scenario, simulate
from twin.state import MemoryStatus

MIB = 1024 * 1024

SCENARIO = Scenario.model_validate({
    "seed": 3,
    "duration_s": 40,
    "hosts": [
        {"name": "hv-a", "total_mib": 12288, "reserve_mib": 1024, "vms": [
            {"name": "db", "startup_mib": 2048, "minimum_mib": 1024, "maximum_mib": 6144,
             "workload": {"kind": "steady", "mib": 2600}},
            {"name": "web", "startup_mib": 2048, "minimum_mib": 512, "maximum_mib": 4096,
             "buffer_percent": 50, "weight": 2000, "workload": {"kind": "idle", "mib": 300}},
            {"name": "batch", "startup_mib": 1024, "minimum_mib": 512, "maximum_mib": 2048,
             "stop_at_s": 30, "workload": {"kind": "steady", "mib": 900}},
            {"name": "fixed", "startup_mib": 1024, "minimum_mib": 1024, "maximum_mib": 1024,
             "dynamic_memory": False, "workload": {"kind": "steady", "mib": 700}},
        ]},
        # Too small for its VM: it stays short of memory (pressure above 1, status Warning).
        {"name": "hv-b", "total_mib": 3072, "reserve_mib": 1024, "vms": [
            {"name": "starved", "startup_mib": 2048, "minimum_mib": 1024, "maximum_mib": 8192,
             "workload": {"kind": "steady", "mib": 3000}},
        ]},
    ],
})

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(registry: CollectorRegistry) -> Samples:
    """Every sample of the text exposition, keyed by (sample name, labels)."""
    text = generate_latest(registry).decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def vms_in(samples: Samples, name: str) -> set[tuple[str, str]]:
    return {(dict(k)["host"], dict(k)["vm"]) for (n, k) in samples if n == name}


@pytest.fixture(scope="module")
def twin() -> Twin:
    twin = Twin()
    for _ in simulate(SCENARIO, twin):
        pass
    return twin


@pytest.fixture
def registry(twin: Twin) -> CollectorRegistry:
    registry = twin_registry(lambda: twin.hosts.values())
    pipeline = PipelineMetrics(registry)
    pipeline.set_consumer_lag("dmtwin.events", 0, 3)
    return registry


def test_every_defined_metric_is_exposed(registry: CollectorRegistry) -> None:
    names = {name for name, _ in scrape(registry)}
    for d in METRICS:
        exposed = d.name + "_bucket" if d.kind == "histogram" else d.name
        assert exposed in names, f"{d.name} is defined but not exposed"


def test_nothing_is_exposed_that_the_table_does_not_define(registry: CollectorRegistry) -> None:
    allowed = {d.name for d in METRICS}
    allowed |= {d.name + s for d in METRICS if d.kind == "histogram" for s in ("_bucket", "_sum", "_count")}
    allowed |= {d.name.removesuffix("_total") + "_created" for d in METRICS if d.kind == "counter"}
    allowed |= {d.name + "_created" for d in METRICS if d.kind == "histogram"}
    allowed |= PROCESS_AND_PLATFORM
    assert {name for name, _ in scrape(registry)} <= allowed


PROCESS_AND_PLATFORM = {"process_virtual_memory_bytes", "process_resident_memory_bytes",
                        "process_start_time_seconds", "process_cpu_seconds_total", "process_open_fds",
                        "process_max_fds", "python_info"}
"""What prometheus_client's ProcessCollector (Linux) and PlatformCollector expose."""


def test_process_and_platform_metrics_are_on_the_twin_registry(registry: CollectorRegistry) -> None:
    names = {name for name, _ in scrape(registry)}
    assert "python_info" in names
    if sys.platform == "linux":
        assert PROCESS_AND_PLATFORM <= names
        assert value(scrape(registry), "process_resident_memory_bytes") > 0


def test_build_info_names_the_version(registry: CollectorRegistry) -> None:
    assert value(scrape(registry), "dmtwin_build_info", version=__version__) == 1


def test_ages_and_lag_are_measured_against_the_clock_at_scrape(twin: Twin) -> None:
    newest_ms = max(state.last_at_ms for state in twin.hosts.values())
    now = {"s": newest_ms / 1000 + 7.5}
    registry = twin_registry(lambda: twin.hosts.values(), clock=lambda: now["s"])
    samples = scrape(registry)
    assert value(samples, "dmtwin_event_time_lag_seconds") == 7.5
    for state in twin.hosts.values():
        assert value(samples, "dmtwin_host_last_report_age_seconds", host=state.name) \
            == pytest.approx(now["s"] - state.last_at_ms / 1000)
        for record in state.records():
            age = value(samples, "dmtwin_vm_last_report_age_seconds", host=state.name, vm=record.name)
            assert 7.5 <= age < 7.5 + 2, (state.name, record.name)  # all report every second
    assert vms_in(samples, "dmtwin_vm_last_report_age_seconds") \
        == vms_in(samples, "dmtwin_dynamic_memory_vm_physical_bytes")
    now["s"] += 60  # nothing new folded: every age grows by the wall-clock time that passed
    later = scrape(registry)
    assert value(later, "dmtwin_event_time_lag_seconds") == 67.5
    assert value(later, "dmtwin_host_last_report_age_seconds", host="hv-b") \
        == pytest.approx(value(samples, "dmtwin_host_last_report_age_seconds", host="hv-b") + 60)


def test_without_a_clock_only_the_build_is_live(twin: Twin) -> None:
    """A replayed log is not live: no ages, which would be measured from its old event times."""
    names = {name for name, _ in scrape(twin_registry(lambda: twin.hosts.values(), clock=None))}
    assert "dmtwin_build_info" in names
    assert not names & {d.name for d in LIVE_METRICS if d.name != "dmtwin_build_info"}


def test_no_lag_while_the_worker_owns_no_host() -> None:
    registry = CollectorRegistry()
    registry.register(LiveCollector(list, clock=lambda: 1.0e9))
    names = {name for name, _ in scrape(registry)}
    assert names == {"dmtwin_build_info"}


def test_vm_values_are_the_twin_counters_in_base_units(twin: Twin, registry: CollectorRegistry) -> None:
    samples = scrape(registry)
    units = dict(counter_fields(VmCounters))
    checked = 0
    for state in twin.hosts.values():
        for counters in vm_counters(state):
            for d in METRICS:
                if d.scope != "vm" or d.convert == "state":
                    continue
                native = getattr(counters, d.attribute or "")
                unit = units[d.attribute or ""]["unit"]
                expected = native * MIB if unit == "MB" else native / 100 if unit == "percent" else native
                got = value(samples, d.name, host=state.name, vm=counters.vm)
                assert got == pytest.approx(expected), (d.name, counters.vm)
                checked += 1
    assert checked == 15 * sum(len(s.vms) for s in twin.hosts.values())


def test_spot_check_bytes_and_ratios(twin: Twin, registry: CollectorRegistry) -> None:
    samples = scrape(registry)
    db = {c.vm: c for c in vm_counters(twin.hosts["hv-a"])}["db"]
    assert value(samples, "dmtwin_dynamic_memory_vm_physical_bytes", host="hv-a", vm="db") \
        == db.physical_memory * 1048576 > 2048 * 1048576
    assert value(samples, "dmtwin_dynamic_memory_vm_pressure_current_ratio", host="hv-a", vm="db") \
        == db.current_pressure / 100
    assert value(samples, "dmtwin_dynamic_memory_vm_added_bytes_total", host="hv-a", vm="db") \
        == db.added_memory * 1048576 > 0
    web = twin.hosts["hv-a"].vm("web")
    assert value(samples, "dmtwin_dynamic_memory_vm_buffer_ratio", host="hv-a", vm="web") == 0.5
    assert value(samples, "dmtwin_dynamic_memory_vm_weight", host="hv-a", vm="web") == 2000
    assert value(samples, "dmtwin_dynamic_memory_vm_maximum_bytes", host="hv-a", vm="web") \
        == web.maximum_mib * MIB == 4 * 1024**3
    assert value(samples, "dmtwin_dynamic_memory_vm_enabled", host="hv-a", vm="fixed") == 0
    assert value(samples, "dmtwin_dynamic_memory_vm_enabled", host="hv-a", vm="web") == 1
    # Pressure above 100 % is meaningful and must not be clamped.
    starved = {c.vm: c for c in vm_counters(twin.hosts["hv-b"])}["starved"]
    assert starved.current_pressure > 100
    assert value(samples, "dmtwin_dynamic_memory_vm_pressure_current_ratio", host="hv-b",
                 vm="starved") == starved.current_pressure / 100 > 1.0


def test_balancer_and_host_values(twin: Twin, registry: CollectorRegistry) -> None:
    samples = scrape(registry)
    units = dict(counter_fields(BalancerCounters))
    for state in twin.hosts.values():
        counters = balancer_counters(state)
        for d in METRICS:
            if d.scope != "balancer":
                continue
            native = getattr(counters, d.attribute or "")
            unit = units[d.attribute or ""]["unit"]
            expected = native * MIB if unit == "MB" else native / 100
            assert value(samples, d.name, host=state.name) == pytest.approx(expected), d.name
        assert value(samples, "dmtwin_host_memory_total_bytes", host=state.name) == state.total_mib * MIB
        assert value(samples, "dmtwin_host_memory_reserve_bytes", host=state.name) == state.reserve_mib * MIB
    assert value(samples, "dmtwin_dynamic_memory_balancer_available_memory_bytes", host="hv-a") \
        == twin.hosts["hv-a"].free_mib() * MIB


def test_memory_status_is_one_hot(twin: Twin, registry: CollectorRegistry) -> None:
    samples = scrape(registry)
    name = "dmtwin_dynamic_memory_vm_memory_status"
    for state in twin.hosts.values():
        for record in state.records():
            values = {status: value(samples, name, host=state.name, vm=record.name, status=status)
                      for status in MEMORY_STATUSES}
            assert sum(values.values()) == 1
            assert values[record.status or "None"] == 1
    assert value(samples, name, host="hv-b", vm="starved", status="Warning") == 1
    assert value(samples, name, host="hv-a", vm="fixed", status="None") == 1
    assert set(MEMORY_STATUSES) == {s or "None" for s in MemoryStatus.ALL}


def test_a_stopped_vm_vanishes() -> None:
    twin = Twin()
    registry = twin_registry(lambda: twin.hosts.values())
    events = simulate(SCENARIO, twin)
    stop_at = SCENARIO.start_ms + 30_000
    for event in events:
        if event.at_ms >= stop_at - 1000:
            break
    before = scrape(registry)
    assert ("hv-a", "batch") in vms_in(before, "dmtwin_dynamic_memory_vm_physical_bytes")
    for event in events:
        if isinstance(event, VmStopped):
            break
    after = scrape(registry)
    assert all(dict(labels).get("vm") != "batch" for _, labels in after)
    assert ("hv-a", "db") in vms_in(after, "dmtwin_dynamic_memory_vm_physical_bytes")


def test_help_quotes_the_hyper_v_counter(registry: CollectorRegistry) -> None:
    text = generate_latest(registry).decode()
    helps = {f.name: f.documentation for f in text_string_to_metric_families(text)}
    assert "\\Hyper-V Dynamic Memory VM(*)\\Physical Memory" in helps["dmtwin_dynamic_memory_vm_physical_bytes"]
    assert "\\Hyper-V Dynamic Memory VM(*)\\Added Memory" in helps["dmtwin_dynamic_memory_vm_added_bytes"]
    assert "\\Hyper-V Dynamic Memory Balancer(*)\\Average Pressure" in \
        helps["dmtwin_dynamic_memory_balancer_average_pressure_ratio"]
    for d in METRICS:
        if d.scope in ("vm", "balancer") and "(twin)" not in d.source and "column" not in d.source:
            assert d.source.startswith("\\Hyper-V Dynamic Memory "), d.name


def test_the_table_covers_every_counter_once() -> None:
    for cls, scope in ((VmCounters, "vm"), (BalancerCounters, "balancer")):
        fields = [name for name, _ in counter_fields(cls)]
        used = [str(d.attribute) for d in METRICS if d.scope == scope]
        assert sorted(used) == sorted(fields)


def test_names_follow_prometheus_conventions() -> None:
    names = [d.name for d in METRICS]
    assert len(names) == len(set(names))
    for d in METRICS:
        assert d.name.startswith("dmtwin_") and d.name == d.name.lower()
        assert d.name.endswith("_total") == (d.kind == "counter"), d.name
        if d.convert == "mib_to_bytes":
            assert d.name.removesuffix("_total").endswith("_bytes"), d.name
        if d.convert == "percent_to_ratio":
            assert d.name.endswith("_ratio"), d.name
        if d.scope in ("vm", "vm_setting"):
            assert d.labels[:2] == ("host", "vm")
        if d.scope in ("balancer", "host"):
            assert d.labels == ("host",)


def test_the_markdown_table_lists_every_metric() -> None:
    lines = metrics_markdown().splitlines()
    assert len(lines) == 2 + len(METRICS)
    for d, line in zip(METRICS, lines[2:], strict=True):
        assert line.startswith(f"| `{d.name}` | {d.kind} |") and line.count(" | ") == 4


def test_the_global_registry_is_left_alone(registry: CollectorRegistry) -> None:
    scrape(registry)
    assert not [n for n in REGISTRY._names_to_collectors if n.startswith("dmtwin_")]


@pytest.mark.skipif(shutil.which("promtool") is None,
                    reason="promtool not installed (Debian package 'prometheus')")
def test_promtool_check_metrics_is_silent(registry: CollectorRegistry) -> None:
    exposition = generate_latest(registry)
    done = subprocess.run(["promtool", "check", "metrics"], input=exposition, capture_output=True,
                          timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (0, b"", b"")


def test_pipeline_metrics_count_events_decisions_and_dead_letters() -> None:
    registry = CollectorRegistry()
    pipeline = PipelineMetrics(registry)
    twin = Twin()
    entries = simulate(SCENARIO.model_copy(update={"duration_s": 5}), Twin())
    for event in (flat for entry in entries for flat in flatten(entry)):
        if isinstance(event, DECISION_TYPES):
            continue
        decisions = twin.handle(event)  # type: ignore[arg-type]
        pipeline.count([event.type], [d.type for d in decisions],
                       round_seconds=0.001 if isinstance(event, BalancerTicked) else None)
    samples = scrape(registry)
    assert value(samples, "dmtwin_reports_processed_total") == 5 * 5
    assert value(samples, "dmtwin_events_total", type="guest.status") == 25
    assert value(samples, "dmtwin_events_total", type="balancer.tick") == 5 * 2
    assert value(samples, "dmtwin_balancer_round_duration_seconds_count") == 10
    assert value(samples, "dmtwin_events_total", type="vm.settings_changed") == 0
    assert sum(v for (n, _), v in samples.items() if n == "dmtwin_decisions_total") > 0
    for reason in DEAD_LETTER_REASONS:
        assert value(samples, "dmtwin_dead_letters_total", reason=reason) == 0
    pipeline.dead_letter("schema")
    assert value(scrape(registry), "dmtwin_dead_letters_total", reason="schema") == 1
    with pytest.raises(ValueError):
        pipeline.dead_letter("because")


def _rejection(line: str) -> Rejected:
    with pytest.raises(Rejected) as caught:
        decode(line)
    return caught.value


def test_rejection_reasons_are_bounded() -> None:
    assert rejection_reason(_rejection("{not json"), stage="decode") == "json"
    assert rejection_reason(_rejection('{"type": "vm.exploded"}'), stage="decode") == "type"
    bad = '{"type": "vm.stopped", "at_ms": -1, "host": "h", "vm": "v"}'
    assert rejection_reason(_rejection(bad), stage="decode") == "schema"
    twin = Twin()
    with pytest.raises(Rejected) as caught:
        twin.apply(VmStopped(at_ms=0, host="nowhere", vm="v"))
    assert rejection_reason(caught.value, stage="apply") == "state"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode())


def test_serve_exposes_the_registry_over_http(registry: CollectorRegistry) -> None:
    server = serve(registry, 0, "127.0.0.1")
    try:
        port = server.server_address[1]
        body = _get(f"http://127.0.0.1:{port}/metrics")
    finally:
        server.shutdown()
        server.server_close()
    assert 'dmtwin_dynamic_memory_vm_physical_bytes{host="hv-a",vm="db"}' in body


@pytest.fixture
def replayed(twin: Twin) -> Iterator[Replay]:
    yield Replay(twin=twin, events=1)


def test_serve_replay_serves_until_stopped(replayed: Replay) -> None:
    port, stop = _free_port(), threading.Event()
    thread = threading.Thread(target=serve_replay, args=(replayed, port),
                              kwargs={"addr": "127.0.0.1", "stop": stop}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while True:
        try:
            body = _get(f"http://127.0.0.1:{port}/metrics")
            break
        except OSError:
            assert time.monotonic() < deadline, "serve_replay never answered"
            time.sleep(0.05)
    stop.set()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert 'dmtwin_dynamic_memory_balancer_available_memory_bytes{host="hv-b"}' in body
    with pytest.raises(OSError):
        _get(f"http://127.0.0.1:{port}/metrics")


def test_pipeline_metrics_count_a_batch_as_its_messages_one_by_one() -> None:
    messages = [(["guest.status"] * 50, ["decision.balloon", "decision.hot_add"], [], 0.002),
                (["vm.started"], [], ["schema", "schema"], None),
                (["guest.status"] * 12 + ["balancer.tick"], ["decision.balloon"], ["late"], 0.004)]
    one_by_one, batched = CollectorRegistry(), CollectorRegistry()
    each = PipelineMetrics(one_by_one)
    for inputs, decisions, dead, seconds in messages:
        each.count(inputs, decisions, dead, seconds)
    PipelineMetrics(batched).count((k for m in messages for k in m[0]), (k for m in messages for k in m[1]),
                                   (r for m in messages for r in m[2]), [m[3] for m in messages if m[3] is not None])
    def counted(registry: CollectorRegistry) -> dict:  # every sample but the series' creation times
        return {key: v for key, v in scrape(registry).items() if not key[0].endswith("_created")}

    assert counted(batched) == counted(one_by_one)
    assert value(scrape(batched), "dmtwin_reports_processed_total") == 62
    assert value(scrape(batched), "dmtwin_dead_letters_total", reason="schema") == 2
