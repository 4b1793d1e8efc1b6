"""dmtwin audit explain: a VM's state at a moment, its last decision and the rule behind it."""

import pytest

from twin.audit import format_time, parse_time
from twin.explain import explain
from twin.chain import Chainer
from twin.engine import Twin
from twin.events import (
    BalancerTicked,
    GuestStatusReported,
    HostJoined,
    MemorySettings,
    VmStarted,
)
from twin.scenario import Scenario

from .logs import T0, chained, grow_log


def test_a_hot_add_is_explained_with_its_numbers():
    why = explain(grow_log(committed=2000), "a", T0 + 1600)
    assert why.host == "h" and why.decision is not None and why.decision.type == "decision.hot_add"
    assert why.decision.add_mib == 1408  # 2400 − 1024 = 1376, up to the 128 MiB alignment
    facts = why.decision_facts
    assert (facts["rule"], facts["demand_mib"], facts["assigned_mib"], facts["pressure_percent"]) == \
        ("grow", 2000, 1024, 195)
    assert (facts["demand_with_buffer_mib"], facts["ideal_mib"], facts["target_mib"], facts["host_short"]) == \
        (2400, 2400, 2400, False)
    text = why.to_text()
    assert "Ideal = demand × (1 + 20% buffer) = 2400 MiB" in text
    assert "hot-added 1408 MiB in multiples of the 128 MiB alignment" in text
    assert "Waiting for the guest's answer to hot_add #1 (1408 MiB)" in text
    assert why.record is not None and why.record.status == "Warning"


def test_a_later_quiet_round_says_why_nothing_happened():
    why = explain(grow_log(committed=2000), "a", T0 + 2600)
    assert why.record is not None and why.record.assigned_mib == 2432 and why.record.status == "OK"
    assert why.decision is not None and why.decision.seq == 1 and why.decision_facts["rule"] == "grow"
    assert why.latest_round_facts["rule"] == "nothing" and why.latest_round_facts["delta_mib"] == -32
    assert "inside the removal dead band" in why.to_text()


def shrink_log():
    """Host of 4096 MiB (1024 reserved): an idle VM holds 2048, a busy one needs 2000 of its 1024."""
    twin, chainer, lines = Twin(), Chainer(), []
    events = [
        HostJoined(at_ms=T0, host="h", total_mib=4096, reserve_mib=1024),
        VmStarted(at_ms=T0, host="h", vm="idle", settings=MemorySettings(startup_mib=2048, minimum_mib=512,
                                                                          maximum_mib=4096, weight=2000)),
        VmStarted(at_ms=T0, host="h", vm="busy", settings=MemorySettings(startup_mib=1024, minimum_mib=512,
                                                                          maximum_mib=4096, weight=8000)),
        GuestStatusReported(at_ms=T0 + 1000, host="h", vm="idle", committed_mib=400, available_mib=1500),
        GuestStatusReported(at_ms=T0 + 1000, host="h", vm="busy", committed_mib=2000, available_mib=0),
        BalancerTicked(at_ms=T0 + 1500, host="h"),
    ]
    for event in events:
        lines += [chainer.line(e) for e in [event, *twin.handle(event)]]
    return lines


def test_a_balloon_is_explained_by_a_short_host():
    why = explain(shrink_log(), "idle", T0 + 1500)
    assert why.decision is not None and why.decision.type == "decision.balloon"
    assert why.decision_facts["rule"] == "shrink" and why.decision_facts["host_short"] is True
    assert why.decision_facts["ideal_mib"] == 512  # 480 with its buffer, but never below Minimum
    assert f"balloon {why.decision.remove_mib} MiB" in why.to_text() and "the host was short" in why.to_text()


def test_smart_paging_is_explained_by_the_restart():
    scenario = Scenario.model_validate({"seed": 1, "duration_s": 160, "hosts": [
        {"name": "h", "total_mib": 6144, "reserve_mib": 1024, "vms": [
            {"name": "idle", "startup_mib": 3072, "minimum_mib": 512, "maximum_mib": 4096, "restart_at_s": [150],
             "workload": {"kind": "idle", "mib": 300, "noise_percent": 0}},
            {"name": "busy", "startup_mib": 1024, "minimum_mib": 512, "maximum_mib": 4096,
             "workload": {"kind": "steady", "mib": 3300, "noise_percent": 0}}]}]})
    why = explain(chained(scenario), "idle", T0 + 150_000)
    assert why.decision is not None and why.decision.type == "decision.smart_paging_started"
    facts = why.decision_facts
    assert facts["rule"] == "smart paging" and facts["paging_mib"] == 3072 - facts["assigned_before_mib"] - facts["free_mib"]
    assert why.record is not None and why.record.status == "Paging"
    assert "Smart Paging file" in why.to_text() and "restarted" in why.to_text()


def test_times_are_milliseconds_or_iso_8601_utc():
    assert parse_time("1767225600500") == T0 + 500
    assert parse_time("2026-01-01T00:00:00.5Z") == T0 + 500
    assert parse_time("2026-01-01T01:00:00+01:00") == T0
    assert parse_time("2026-01-01T00:00:00") == T0
    assert format_time(T0 + 500) == "2026-01-01T00:00:00.500Z"
    with pytest.raises(ValueError, match="ISO-8601"):
        parse_time("yesterday")


def test_a_vm_that_is_not_running_or_not_decided_for_yet():
    early = explain(grow_log(), "a", T0 + 1200)
    assert early.decision is None and "No decision was taken" in early.to_text()
    ghost = explain(grow_log(), "nobody", T0 + 5000)
    assert ghost.record is None and "was not running" in ghost.to_text()
