"""Replaying logs: determinism, and bad input reported with position, field and value."""

import json

from twin.log import encode, replay
from twin.report import summary, to_json
from twin.scenario import Scenario, simulate

from .builders import HOST

SCENARIO = Scenario.model_validate({
    "seed": 3, "duration_s": 120,
    "hosts": [{"name": HOST, "total_mib": 8192, "reserve_mib": 1024, "vms": [
        {"name": "a", "startup_mib": 1024, "minimum_mib": 512, "maximum_mib": 4096,
         "workload": {"kind": "diurnal", "base_mib": 1500, "amplitude_mib": 1000, "period_s": 60}},
        {"name": "b", "startup_mib": 2048, "minimum_mib": 512, "maximum_mib": 4096,
         "workload": {"kind": "idle", "mib": 300}},
        {"name": "c", "startup_mib": 1024, "minimum_mib": 512, "maximum_mib": 4096,
         "guest": {"os": "linux", "hot_add": False}, "restart_at_s": [60],
         "workload": {"kind": "bursty", "base_mib": 600, "burst_mib": 900, "bursts_per_hour": 120}},
    ]}],
})


def log_lines():
    return [encode(e) for e in simulate(SCENARIO)]


def test_simulation_is_reproducible_bit_for_bit():
    assert log_lines() == log_lines()


def test_replay_rebuilds_the_live_state():
    from twin.engine import Twin

    live = Twin()
    lines = [encode(e) for e in simulate(SCENARIO, twin=live)]
    result = replay(lines)
    assert result.rejected == []
    assert result.events == len(lines)
    assert result.twin.hosts[HOST].to_dict() == live.hosts[HOST].to_dict()
    assert to_json(summary(result)) == to_json(summary(replay(lines)))


def test_every_kind_of_bad_line_is_reported_and_the_rest_replayed():
    good = log_lines()
    bad = [
        "{not json",
        json.dumps({"type": "vm.teleported", "at_ms": 1, "host": HOST, "vm": "a"}),
        json.dumps({"type": "guest.status", "at_ms": 1, "host": HOST, "vm": "a", "available_mib": 0}),
        json.dumps({"type": "guest.status", "at_ms": 1, "host": HOST, "vm": "a",
                    "committed_mib": "lots", "available_mib": 0}),
        json.dumps({"type": "guest.status", "at_ms": 1, "host": HOST, "vm": "a",
                    "committed_mib": -5, "available_mib": 0}),
        json.dumps({"type": "vm.started", "at_ms": 1, "host": HOST, "vm": "z",
                    "settings": {"startup_mib": 1024, "minimum_mib": 512, "maximum_mib": 256}}),
        json.dumps({"type": "guest.status", "at_ms": 10**13, "host": HOST, "vm": "ghost",
                    "committed_mib": 5, "available_mib": 0}),
        json.dumps({"type": "guest.status", "at_ms": 0, "host": HOST, "vm": "a",
                    "committed_mib": 5, "available_mib": 0}),
    ]
    position = 40  # well after the VMs started
    lines = good[:position] + bad + good[position:]
    result = replay(lines)
    got = [(r.position, r.field, r.value) for r in result.rejected]
    assert got == [
        (41, "json", "{not json"),  # 1-based line numbers
        (42, "type", "vm.teleported"),
        (43, "committed_mib", None),
        (44, "committed_mib", "lots"),
        (45, "committed_mib", -5),
        (46, "settings", {"startup_mib": 1024, "minimum_mib": 512, "maximum_mib": 256}),
        (47, "vm", "ghost"),
        (48, "at_ms", 0),
    ]
    assert "missing" in result.rejected[2].reason
    assert "startup_mib=1024 must not exceed maximum_mib=256" in result.rejected[5].reason
    assert "time goes backwards" in result.rejected[7].reason
    assert result.rejected_lines == bad
    assert result.events == len(good)
    assert result.twin.hosts[HOST].to_dict() == replay(good).twin.hosts[HOST].to_dict()


def test_a_tampered_decision_is_rejected():
    lines = log_lines()
    i = next(k for k, line in enumerate(lines) if '"decision.' in line)
    event = json.loads(lines[i])
    event["seq"] += 5
    lines[i] = json.dumps(event)
    result = replay(lines)
    assert result.rejected[0].position == i + 1 and result.rejected[0].field == "seq"
