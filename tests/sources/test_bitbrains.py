"""The Bitbrains trace → a packed scenario → what Dynamic Memory saves."""

from __future__ import annotations

import gzip
import subprocess
import sys
import time
from pathlib import Path

import pytest

from twin.scenario import Scenario, VmSpec, simulate
from twin.sources import SourceProblem, ingest
from twin.sources.bitbrains import (
    DEFAULT_PATH,
    bitbrains_scenario,
    measure,
    pack,
    read_bitbrains,
)
from twin.workload import Steady

from .helpers import DATA, replays

SMALL = DATA / "bitbrains_small.csv"
ROOT = Path(__file__).resolve().parents[2]


def test_zero_usage_is_a_gap_and_bad_rows_are_reported():
    problems: list[SourceProblem] = []
    vms = read_bitbrains(SMALL, problems=problems)
    assert [(p.line, p.reason) for p in problems] == [
        (8, "time goes backwards for VM 1 (1372630900 < 1372631004): row skipped"),
        (11, "bad number in ['2', '1372633704', '4194304', '']: row skipped"),
        (13, "bad number in ['2', '1372634304', '4194304', 'abc']: row skipped"),
    ]
    one = vms[0]
    assert one.usage == [(1372629804, 1048576), (1372630104, 2097152), (1372630704, 3670016),
                         (1372631004, 1048576), (1372631304, 524288)]  # 0 left out, repeated time: last
    assert [vm.vm for vm in vms] == [1, 2, 3, 4, 5] and vms[2].usage == []
    assert [t for t, _ in vms[3].provisioned] == [1372629804, 1372630104, 1372630704]
    assert [vm.vm for vm in read_bitbrains(SMALL, vms=2, problems=[])] == [1, 2]


def test_the_scenario_turns_usage_into_traces_and_packs_first_fit_decreasing(tmp_path: Path):
    compressed = tmp_path / "memory.csv.gz"
    compressed.write_bytes(gzip.compress(SMALL.read_bytes()))
    problems: list[SourceProblem] = []
    scenario = bitbrains_scenario(compressed, vms=5, host_mib=20480, reserve_mib=2048, overcommit=1.0,
                                  time_scale=60, problems=problems)
    assert [p.reason for p in problems][3:] == ["VM 3: no usage in the window: left out"]
    assert scenario.duration_s == -(-(1372634604 - 1372629804) // 60)
    assert [[vm.name for vm in host.vms] for host in scenario.hosts] == [["vm-0004", "vm-0005"],
                                                                         ["vm-0001", "vm-0002"]]
    vm1 = scenario.hosts[1].vms[0]
    assert (vm1.maximum_mib, vm1.minimum_mib, vm1.startup_mib) == (8192, 512, 1280)  # 1 GiB × 1.2 → 128s
    assert vm1.workload.points[:3] == [(0.0, 1024.0), (5.0, 2048.0), (15.0, 3584.0)]
    vm2 = scenario.hosts[1].vms[1]
    assert vm2.start_at_s == (1372633404 - 1372629804) // 60  # boots when its trace starts
    replays(simulate(scenario))
    replays(ingest("bitbrains", compressed, vms=5, host_mib=20480, overcommit=1.0, problems=[]))


def test_first_fit_keeps_sums_within_the_host():
    def vm(name: str, maximum: int, startup: int) -> VmSpec:
        return VmSpec(name=name, startup_mib=startup, minimum_mib=512, maximum_mib=maximum,
                      workload=Steady(mib=100))

    hosts = pack([vm("a", 4096, 1024), vm("b", 16384, 2048), vm("c", 8192, 4096), vm("d", 4096, 4096)],
                 host_mib=10240, reserve_mib=2048, overcommit=2.0)
    assert [[v.name for v in h.vms] for h in hosts] == [["b"], ["a", "c"], ["d"]]
    for host in hosts[1:]:
        assert sum(v.maximum_mib for v in host.vms) <= 2.0 * 8192
        assert sum(v.startup_mib for v in host.vms) <= 8192


def test_measure_compares_assigned_with_maximum_and_counts_warnings():
    scenario = Scenario.model_validate({"duration_s": 120, "hosts": [{"name": "h", "total_mib": 8192, "vms": [
        {"name": "small", "startup_mib": 1024, "minimum_mib": 512, "maximum_mib": 4096,
         "workload": {"kind": "steady", "mib": 600, "noise_percent": 0}},
        {"name": "grows", "startup_mib": 1024, "minimum_mib": 512, "maximum_mib": 2048,
         "workload": {"kind": "steady", "mib": 3000, "noise_percent": 0}}]}]})
    result = measure(simulate(scenario))
    assert result.seconds == 120 and result.reports == 240 and result.peak_maximum_mib == 6144
    assert result.warning_vms == {"h/grows"}  # demand above its Maximum: Warning for good
    assert 0.45 < result.warning_fraction <= 0.5
    assert 0 < result.saved_fraction < 1
    assert result.as_dict()["saved_percent"] == round(100 * result.saved_fraction, 2)


needs_trace = pytest.mark.skipif(not DEFAULT_PATH.exists(), reason=f"no Bitbrains trace at {DEFAULT_PATH}")


@needs_trace
def test_twenty_real_vms_for_three_hours_in_a_few_seconds():
    started = time.monotonic()
    problems: list[SourceProblem] = []
    scenario = bitbrains_scenario(vms=20, host_mib=32768, reserve_mib=2048, overcommit=4.0,
                                  duration_s=3 * 3600, time_scale=30, problems=problems)
    assert scenario.duration_s == 360
    events = list(simulate(scenario))
    result = measure(events)
    assert len(result.vms) == 20 - len(problems) >= 15
    assert 0.5 < result.saved_fraction < 1  # Bitbrains VMs use a small part of what they were given
    assert result.peak_assigned_mib <= sum(h.total_mib - h.reserve_mib for h in scenario.hosts)
    assert result.warning_fraction < 0.05
    replays(events)
    assert time.monotonic() - started < 20


@needs_trace
def test_the_example_script_prints_the_savings():
    run = subprocess.run([sys.executable, str(ROOT / "examples" / "bitbrains.py"), "--vms", "20", "--hours", "3",
                          "--time-scale", "30", "--host-gib", "32"], capture_output=True, text=True, check=True,
                         cwd=ROOT, timeout=60)
    assert "memory saved" in run.stdout and "Memory Status Warning" in run.stdout


def test_the_study_options_pack_round_robin_with_capacity_and_startup():
    scenario = bitbrains_scenario(SMALL, vms=5, capacity_mib=16384, reserve_mib=1024, packing="round-robin",
                                  hosts=2, startup_mib=1024, minimum_mib=256, buffer_percent=10, time_scale=60,
                                  problems=[])
    names = [[vm.name for vm in host.vms] for host in scenario.hosts]
    assert names == [["vm-0002", "vm-0004"], ["vm-0001", "vm-0005"]]  # VM v on host v % 2
    assert all(h.total_mib == 16384 + 1024 and h.reserve_mib == 1024 for h in scenario.hosts)
    vm1 = scenario.hosts[1].vms[0]
    assert (vm1.startup_mib, vm1.minimum_mib, vm1.buffer_percent) == (1024, 256, 10)


def test_first_fit_onto_a_given_number_of_hosts():
    scenario = bitbrains_scenario(SMALL, vms=5, host_mib=9216, reserve_mib=1024, overcommit=1.0, hosts=1,
                                  time_scale=60, problems=[])
    assert len(scenario.hosts) == 1 and len(scenario.hosts[0].vms) == 4


def test_the_grid_follows_the_reference_rules():
    from twin.sources.bitbrains import read_grid

    grid = read_grid(SMALL, steps=6)
    assert grid.vms.tolist()[:2] == [1, 2]
    # VM 1: 1 GiB, 2 GiB, a gap (0: carried forward), two rows on one step (the largest wins)
    assert grid.demand_mib[0, :4].tolist() == [1024, 2048, 2048, 3584]
    assert grid.demand_mib[2].tolist() == [0] * 6  # VM 3 never reports a usage: 0 all along
    assert grid.maximum_mib[0] == 8192
