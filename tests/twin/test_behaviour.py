"""Scenarios that reproduce documented Hyper-V Dynamic Memory behaviour (DOMAIN.md §1.4–§1.7)."""

import pytest

from twin.engine import Twin
from twin.events import MemoryAdditionRequested
from twin.invariants import violations
from twin.scenario import Scenario, simulate


def run(hosts, duration_s=300, seed=1):
    twin = Twin()
    scenario = Scenario.model_validate({"seed": seed, "duration_s": duration_s, "hosts": hosts})
    events = list(simulate(scenario, twin=twin))
    return twin, events


def vm(name, workload, startup=2048, minimum=512, maximum=8192, **extra):
    return {"name": name, "startup_mib": startup, "minimum_mib": minimum, "maximum_mib": maximum,
            "workload": workload, **extra}


def history(events, twin_name):
    """Assigned memory of one VM after each of its decisions' answers, from the log."""
    return [e for e in events if getattr(e, "vm", None) == twin_name]


def test_an_idle_vm_gives_memory_back_when_another_needs_it():
    twin, _ = run([{"name": "h", "total_mib": 9216, "reserve_mib": 1024, "vms": [
        vm("idle", {"kind": "idle", "mib": 400}, startup=4096),
        vm("busy", {"kind": "steady", "mib": 5000}, startup=2048),
    ]}], duration_s=120)
    host = twin.hosts["h"]
    idle, busy = host.vm("idle"), host.vm("busy")
    assert idle.assigned_mib < 1024 and idle.balloon_mib > 3000 and idle.remove_operations >= 1
    assert busy.assigned_mib > 5000 and busy.status in ("OK", "Low")


def test_idle_surplus_is_kept_while_nobody_needs_it_then_reclaimed_late():
    twin, events = run([{"name": "h", "total_mib": 32768, "reserve_mib": 1024, "vms": [
        vm("idle", {"kind": "idle", "mib": 400}, startup=4096)]}], duration_s=120)
    balloons = [e for e in events if e.type == "decision.balloon"]
    assert balloons, "surplus should be reclaimed in the end"
    start_ms = events[0].at_ms
    assert balloons[0].at_ms - start_ms >= 60_000  # Hyper-V reclaims late (§1.4)


def test_a_vm_under_load_grows_up_to_but_not_past_maximum():
    twin, events = run([{"name": "h", "total_mib": 65536, "reserve_mib": 2048, "vms": [
        vm("hungry", {"kind": "steady", "mib": 20000}, maximum=6144)]}], duration_s=60)
    hungry = twin.hosts["h"].vm("hungry")
    assert hungry.assigned_mib == 6144 and hungry.status == "Warning"
    adds = [e for e in events if e.type == "decision.hot_add"]
    assert max(e.target_mib for e in adds) <= 6144


def test_weight_decides_who_gets_memory_when_the_host_is_short():
    twin, _ = run([{"name": "h", "total_mib": 10240, "reserve_mib": 1024, "vms": [
        vm("high", {"kind": "steady", "mib": 6000}, weight=10000),
        vm("low", {"kind": "steady", "mib": 6000}, weight=0),
    ]}], duration_s=120)
    host = twin.hosts["h"]
    assert host.vm("high").assigned_mib > host.vm("low").assigned_mib + 1000
    assert host.free_mib() < 256


def test_buffers_go_first_when_the_host_is_short():
    twin, _ = run([{"name": "h", "total_mib": 11264, "reserve_mib": 1024, "vms": [
        vm("a", {"kind": "steady", "mib": 4500, "noise_percent": 0}),
        vm("b", {"kind": "steady", "mib": 4500, "noise_percent": 0}),
    ]}], duration_s=120)
    host = twin.hosts["h"]
    for name in ("a", "b"):  # 9000 MiB of demand fit in 10240, the 20 % buffers (10800) do not
        record = host.vm(name)
        assert record.demand_mib <= record.assigned_mib < record.ideal_mib


def test_a_guest_without_hot_add_never_exceeds_what_it_has_seen():
    twin, events = run([{"name": "h", "total_mib": 7168, "reserve_mib": 1024, "vms": [
        vm("old", {"kind": "batch", "idle_mib": 300, "job_mib": 6000, "every_s": 120, "job_s": 60},
           startup=3072, guest={"os": "linux", "hot_add": False}),
        vm("other", {"kind": "diurnal", "base_mib": 3000, "amplitude_mib": 2000, "period_s": 100}),
    ]}], duration_s=300)
    assert not [e for e in events if isinstance(e, MemoryAdditionRequested) and e.vm == "old"]
    old = twin.hosts["h"].vm("old")
    assert old.visible_mib == 3072 and old.assigned_mib <= 3072
    assert old.add_operations > 0  # it did get ballooned memory back


def test_linux_guests_answer_partially_at_their_floor():
    twin, events = run([{"name": "h", "total_mib": 8192, "reserve_mib": 1024, "vms": [
        vm("linux", {"kind": "steady", "mib": 2500}, startup=4096, guest={"os": "linux"}, weight=0),
        vm("hog", {"kind": "steady", "mib": 6000}, startup=1024, weight=10000),
    ]}], duration_s=120)
    answers = {e.seq: e for e in events if e.type == "guest.balloon_response" and e.vm == "linux"}
    asks = [e for e in events if e.type == "decision.balloon" and e.vm == "linux"]
    assert any(answers[a.seq].released_mib < a.remove_mib for a in asks)
    linux = twin.hosts["h"].vm("linux")
    floor = 232 + 4096 // 16  # hv_balloon.c compute_balloon_floor() for 4 GiB
    assert linux.assigned_mib >= 2500 + floor - 64  # never ballooned far into its workload


@pytest.mark.parametrize("policy", ["hyperv", "squeezed", "mom", "esx"])
def test_every_policy_keeps_the_invariants(policy):
    twin = Twin()
    scenario = Scenario.model_validate({"seed": 5, "duration_s": 200, "hosts": [
        {"name": "h", "total_mib": 12288, "reserve_mib": 1024, "policy": policy, "vms": [
            vm("a", {"kind": "diurnal", "base_mib": 3000, "amplitude_mib": 2500, "period_s": 80}),
            vm("b", {"kind": "bursty", "base_mib": 1000, "burst_mib": 3000, "bursts_per_hour": 200}),
            vm("c", {"kind": "idle"}, startup=4096, guest={"os": "linux"}),
            vm("d", {"kind": "steady", "mib": 2000}, guest={"hot_add": False}, restart_at_s=[100]),
        ]}]})
    for _ in simulate(scenario, twin=twin):
        assert violations(twin.hosts["h"]) == []
    assert sum(r.add_operations + r.remove_operations for r in twin.hosts["h"].records()) > 0


def test_squeezed_gives_every_vm_the_same_fraction():
    twin, _ = run([{"name": "h", "total_mib": 9216, "reserve_mib": 1024, "policy": "squeezed", "vms": [
        vm("a", {"kind": "steady", "mib": 3000}, startup=2048, minimum=1024, maximum=8192),
        vm("b", {"kind": "idle"}, startup=2048, minimum=512, maximum=4608),
    ]}], duration_s=60)
    a, b = twin.hosts["h"].vm("a"), twin.hosts["h"].vm("b")
    fa = (a.assigned_mib - 1024) / (8192 - 1024)
    fb = (b.assigned_mib - 512) / (4608 - 512)
    assert fa == pytest.approx(fb, abs=0.05)
