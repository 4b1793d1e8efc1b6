"""Small logs for the audit tests: simulated fleets and hand-made hosts, chained like the worker's."""

from __future__ import annotations

from twin.chain import Chainer
from twin.engine import Twin
from twin.events import (
    BalancerTicked,
    GuestCapabilities,
    GuestStatusReported,
    HostJoined,
    HotAddResponded,
    MemorySettings,
    VmStarted,
)
from twin.scenario import Scenario, simulate

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def fleet(duration_s: int = 120, hosts: tuple[str, ...] = ("h1", "h2"), os: str = "linux") -> Scenario:
    """Two VMs per host that grow, shrink and restart: every kind of decision shows up."""
    return Scenario.model_validate({"seed": 7, "duration_s": duration_s, "hosts": [
        {"name": host, "total_mib": 8192, "reserve_mib": 1024, "vms": [
            {"name": "a", "startup_mib": 1024, "minimum_mib": 512, "maximum_mib": 4096,
             "guest": {"os": os},
             "workload": {"kind": "diurnal", "base_mib": 2500, "amplitude_mib": 1500, "period_s": 40}},
            {"name": "b", "startup_mib": 3072, "minimum_mib": 512, "maximum_mib": 4096, "restart_at_s": [70],
             "guest": {"os": os},
             "workload": {"kind": "bursty", "base_mib": 600, "burst_mib": 2500, "bursts_per_hour": 200}},
        ]} for host in hosts]})


def chained(scenario: Scenario) -> list[str]:
    """The scenario's log, as ``dmtwin simulate -o`` writes it."""
    chainer = Chainer()
    return [chainer.line(event) for event in simulate(scenario)]


def grow_log(committed: int = 2000) -> list[str]:
    """Host h (8192 MiB, 1024 reserved), VM a (Startup 1024, 512…4096, buffer 20 %, alignment 128):
    a report of ``committed`` MiB at T0+1000, a round at T0+1500, the guest's answer at T0+1700."""
    twin, chainer, lines = Twin(), Chainer(), []

    def run(event):  # type: ignore[no-untyped-def]
        decisions = twin.handle(event)
        lines.extend(chainer.line(e) for e in [event, *decisions])
        return decisions

    run(HostJoined(at_ms=T0, host="h", total_mib=8192, reserve_mib=1024))
    run(VmStarted(at_ms=T0, host="h", vm="a", capabilities=GuestCapabilities(hot_add_alignment_mib=128),
                  settings=MemorySettings(startup_mib=1024, minimum_mib=512, maximum_mib=4096)))
    run(GuestStatusReported(at_ms=T0 + 1000, host="h", vm="a", committed_mib=committed, available_mib=0))
    for d in run(BalancerTicked(at_ms=T0 + 1500, host="h")):
        run(HotAddResponded(at_ms=T0 + 1700, host="h", vm="a", seq=d.seq, added_mib=d.add_mib))
    run(GuestStatusReported(at_ms=T0 + 2000, host="h", vm="a", committed_mib=committed, available_mib=0))
    run(BalancerTicked(at_ms=T0 + 2500, host="h"))
    return lines
