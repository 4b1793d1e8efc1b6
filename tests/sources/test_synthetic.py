"""Synthetic fleets from one line, open and closed loop."""

from __future__ import annotations

from collections import Counter

import pytest

from twin.scenario import simulate
from twin.sources.synthetic import fleet, parse_fleet, parse_mix, reports

from .helpers import replays

MIX = "steady:2,diurnal:3,bursty:3,idle:2,leak:1,batch:1"


def test_a_fleet_has_the_mix_on_every_host_with_seeded_varied_settings():
    scenario = fleet(hosts=3, vms=12, mix=MIX, seed=7, host_mib=65536)
    assert [h.name for h in scenario.hosts] == ["hv-01", "hv-02", "hv-03"]
    for host in scenario.hosts:
        assert Counter(vm.workload.kind for vm in host.vms) == parse_mix(MIX)
        assert sum(vm.startup_mib for vm in host.vms) <= host.total_mib - host.reserve_mib
        assert all(vm.minimum_mib <= vm.startup_mib <= vm.maximum_mib for vm in host.vms)
    vms = [vm for h in scenario.hosts for vm in h.vms]
    assert len({vm.maximum_mib for vm in vms}) > 2 and len({vm.buffer_percent for vm in vms}) > 1
    assert {vm.guest.os for vm in vms} == {"linux", "windows"}
    assert fleet(hosts=3, vms=12, mix=MIX, seed=7) == scenario
    assert fleet(hosts=3, vms=12, mix=MIX, seed=8) != scenario


def test_the_string_form_is_the_same_fleet():
    assert parse_fleet(f"3x12 mix={MIX} seed=7 host_mib=65536") == fleet(3, 12, MIX, seed=7, host_mib=65536)
    assert parse_fleet("2x4 seed=1", duration_s=60).duration_s == 60
    with pytest.raises(ValueError, match="unknown setting"):
        parse_fleet("2x4 colour=blue")
    with pytest.raises(ValueError, match="HOSTSxVMS"):
        parse_fleet("four hosts")


def test_mix_counts_are_weights_when_they_do_not_add_up():
    assert Counter(vm.workload.kind for vm in fleet(1, 10, "steady:1,bursty:1").hosts[0].vms) == {
        "steady": 5, "bursty": 5}
    assert sum(1 for _ in fleet(1, 7, "steady:2,idle:1,leak").hosts[0].vms) == 7
    with pytest.raises(ValueError, match="unknown workload kind 'spiky'"):
        parse_mix("steady:1,spiky:2")
    with pytest.raises(ValueError, match="whole count"):
        parse_mix("steady:two")


def test_a_fleet_that_cannot_start_is_refused():
    with pytest.raises(ValueError, match="too small"):
        fleet(1, 40, "steady:1", host_mib=8192)


def test_open_and_closed_loop_both_replay():
    scenario = parse_fleet(f"2x12 mix={MIX} seed=3 duration_s=120")
    open_loop = list(reports(scenario))
    assert sum(e.type == "guest.status" for e in open_loop) > 2 * 12 * 100
    assert not any(e.type.startswith(("decision.", "balancer.")) for e in open_loop)
    replays(open_loop)
    closed = list(simulate(scenario))
    assert any(e.type.startswith("decision.") for e in closed)
    replays(closed)
