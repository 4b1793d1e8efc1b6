"""The fold: Hyper-V's rules on each event, and precise rejections that change nothing."""

import pytest

from twin.errors import Rejected
from twin.events import (
    BalloonResponded,
    HostMemoryChanged,
    HotAddResponded,
    UnballoonResponded,
    VmRestarted,
    VmSettingsChanged,
    VmStopped,
)
from twin.state import MemoryStatus

from .builders import HOST, answer_all, host, report, start, tick


def test_started_vm_has_startup_ram_and_no_data_yet():
    twin = host()
    start(twin, "a", startup=2048)
    vm = twin.hosts[HOST].vm("a")
    assert (vm.assigned_mib, vm.visible_mib, vm.balloon_mib) == (2048, 2048, 0)
    assert vm.status == MemoryStatus.NONE and vm.pressure_current is None
    assert twin.hosts[HOST].free_mib() == 16384 - 1024 - 2048


def test_cold_start_without_room_is_refused_by_name():
    twin = host(total_mib=4096, reserve_mib=1024)
    with pytest.raises(Rejected) as error:
        start(twin, "a", startup=4000, maximum=8192)
    assert error.value.field == "settings.startup_mib" and error.value.value == 4000
    assert "a" not in twin.hosts[HOST].vms


def test_pressure_and_memory_status_follow_the_decompiled_rule():
    twin = host()
    start(twin, "a", startup=2000, minimum=512, buffer=20)
    report(twin, "a", committed=1000, at_ms=1000)  # surplus 1000 vs wanted buffer 200: OK
    vm = twin.hosts[HOST].vm("a")
    assert (vm.pressure_current, vm.status, vm.ideal_mib) == (50, MemoryStatus.OK, 1200)
    report(twin, "a", committed=1900, at_ms=2000)  # surplus 100 < 80 % of 380: Low
    assert twin.hosts[HOST].vm("a").status == MemoryStatus.LOW
    report(twin, "a", committed=2100, at_ms=3000)  # demand above assigned: Warning
    vm = twin.hosts[HOST].vm("a")
    assert (vm.status, vm.pressure_current, vm.pressure_minimum, vm.pressure_maximum) == (
        MemoryStatus.WARNING, 105, 50, 105)
    assert vm.pressure_average == pytest.approx((50 + 95 + 105) / 3)


def test_settings_change_rules_while_running():
    twin = host()
    start(twin, "a", startup=2048, minimum=1024, maximum=4096)
    twin.handle(VmSettingsChanged(at_ms=1, host=HOST, vm="a", minimum_mib=512, maximum_mib=8192,
                                  buffer_percent=50, weight=9000))
    vm = twin.hosts[HOST].vm("a")
    assert (vm.minimum_mib, vm.maximum_mib, vm.buffer_percent, vm.weight) == (512, 8192, 50, 9000)
    with pytest.raises(Rejected, match="Maximum RAM may only be raised") as error:
        twin.handle(VmSettingsChanged(at_ms=2, host=HOST, vm="a", maximum_mib=4096))
    assert (error.value.field, error.value.value) == ("maximum_mib", 4096)
    with pytest.raises(Rejected, match="Minimum RAM may only be lowered"):
        twin.handle(VmSettingsChanged(at_ms=2, host=HOST, vm="a", minimum_mib=1024))
    assert twin.hosts[HOST].vm("a").maximum_mib == 8192


def test_static_memory_vm_refuses_minimum_changes():
    twin = host()
    start(twin, "s", startup=2048, minimum=2048, maximum=2048, dm=False)
    with pytest.raises(Rejected, match="Dynamic Memory is off"):
        twin.handle(VmSettingsChanged(at_ms=1, host=HOST, vm="s", minimum_mib=1024))


def test_a_late_report_is_superseded_by_the_newer_one():
    twin = host()
    start(twin, "a")
    report(twin, "a", 500, at_ms=5000)
    before = twin.hosts[HOST].to_dict()
    report(twin, "a", 600, at_ms=4999)  # arrived late, e.g. after an outage: accepted, changes nothing
    assert twin.hosts[HOST].to_dict() == before


def test_a_report_from_before_the_vm_started_is_refused():
    twin = host()
    start(twin, "a", at_ms=3000)
    report(twin, "a", 500, at_ms=5000)
    with pytest.raises(Rejected) as error:
        report(twin, "a", 600, at_ms=2999)
    assert (error.value.field, error.value.value) == ("at_ms", 2999)
    assert "before its start" in error.value.reason
    assert twin.hosts[HOST].vm("a").demand_mib == 500


def test_settings_changes_still_keep_time_in_order():
    twin = host()
    start(twin, "a")
    report(twin, "a", 500, at_ms=5000)
    with pytest.raises(Rejected, match="time goes backwards"):
        twin.handle(VmSettingsChanged(at_ms=4000, host=HOST, vm="a", weight=100))


def test_unknown_vm_is_refused():
    twin = host()
    with pytest.raises(Rejected) as error:
        report(twin, "ghost", 500, at_ms=1)
    assert (error.value.field, error.value.value) == ("vm", "ghost")


def test_report_larger_than_visible_memory_is_out_of_range():
    twin = host()
    start(twin, "a", startup=1024)
    with pytest.raises(Rejected, match="more than the 1024 MiB"):
        report(twin, "a", 500, at_ms=1, available=5000)


def _balloon_in_flight(twin):
    start(twin, "idle", startup=4096, minimum=512)
    start(twin, "busy", startup=1024, minimum=512, maximum=8192)
    report(twin, "idle", 400, at_ms=1000)
    report(twin, "busy", 3000, at_ms=1000)
    return tick(twin, 1500)


def test_answers_must_match_the_transaction_in_flight():
    twin = host(total_mib=6144, reserve_mib=1024)
    decisions = _balloon_in_flight(twin)
    balloon = next(d for d in decisions if d.type == "decision.balloon")
    with pytest.raises(Rejected, match="answers no balloon request in flight"):
        twin.handle(BalloonResponded(at_ms=1600, host=HOST, vm="idle", seq=balloon.seq + 1, released_mib=10))
    with pytest.raises(Rejected, match="answers no unballoon"):
        twin.handle(UnballoonResponded(at_ms=1600, host=HOST, vm="idle", seq=balloon.seq))
    with pytest.raises(Rejected) as error:
        twin.handle(BalloonResponded(at_ms=1600, host=HOST, vm="idle", seq=balloon.seq,
                                     released_mib=balloon.remove_mib + 2))
    assert error.value.field == "released_mib"


def test_partial_balloon_answer_sets_a_floor_and_counts_removed_memory():
    twin = host(total_mib=6144, reserve_mib=1024)
    balloon = next(d for d in _balloon_in_flight(twin) if d.type == "decision.balloon")
    twin.handle(BalloonResponded(at_ms=1600, host=HOST, vm="idle", seq=balloon.seq, released_mib=100))
    vm = twin.hosts[HOST].vm("idle")
    assert (vm.assigned_mib, vm.visible_mib, vm.balloon_mib) == (3996, 4096, 100)
    assert (vm.removed_mib, vm.remove_operations, vm.floor_mib, vm.pending) == (100, 1, 3996, "none")


def test_hot_add_short_answer_blocks_further_hot_adds():
    twin = host()
    start(twin, "a", startup=1024, maximum=8192)
    report(twin, "a", 3000, at_ms=1000)
    add = tick(twin, 1500)[0]
    assert add.type == "decision.hot_add" and add.add_mib % 128 == 0
    twin.handle(HotAddResponded(at_ms=1600, host=HOST, vm="a", seq=add.seq, added_mib=128))
    vm = twin.hosts[HOST].vm("a")
    assert (vm.assigned_mib, vm.visible_mib, vm.added_mib, vm.hot_add_blocked) == (1152, 1152, 128, True)
    report(twin, "a", 3000, at_ms=2000)
    assert tick(twin, 2500) == []


def test_transient_hot_add_failure_waits_before_retrying():
    twin = host()
    start(twin, "a", startup=1024, maximum=8192)
    report(twin, "a", 3000, at_ms=1000)
    add = tick(twin, 1500)[0]
    twin.handle(HotAddResponded(at_ms=1600, host=HOST, vm="a", seq=add.seq, added_mib=0,
                                result="transient_failure"))
    report(twin, "a", 3000, at_ms=2000)
    assert tick(twin, 2500) == []
    report(twin, "a", 3000, at_ms=40_000)
    assert [d.type for d in tick(twin, 40_500)] == ["decision.hot_add"]


def test_stop_returns_memory_and_keeps_sequence_numbers_unique():
    twin = host()
    start(twin, "a", startup=1024)
    report(twin, "a", 3000, at_ms=1000)
    first = tick(twin, 1500)[0]
    twin.handle(VmStopped(at_ms=2000, host=HOST, vm="a"))
    assert twin.hosts[HOST].free_mib() == 16384 - 1024
    start(twin, "a", startup=1024, at_ms=3000)
    report(twin, "a", 3000, at_ms=4000)
    assert tick(twin, 4500)[0].seq == first.seq + 1


def test_restart_on_a_full_host_uses_smart_paging_until_memory_frees():
    twin = host(total_mib=5120, reserve_mib=1024)  # 4096 MiB for VMs
    start(twin, "a", startup=2048, minimum=512)
    start(twin, "b", startup=2048, minimum=512)
    at = 1000
    for _ in range(5):  # "a" is idle, "b" is busy: memory moves from a to b until the host is full
        report(twin, "a", 300, at_ms=at)
        report(twin, "b", 3200, at_ms=at)
        answer_all(twin, tick(twin, at + 500), at + 700)
        at += 1000
    state = twin.hosts[HOST]
    assert state.vm("a").assigned_mib < 2048 and state.free_mib() < 2048 - state.vm("a").assigned_mib
    missing = 2048 - state.vm("a").assigned_mib - state.free_mib()

    paging = twin.handle(VmRestarted(at_ms=at, host=HOST, vm="a"))
    assert [d.type for d in paging] == ["decision.smart_paging_started"]
    assert paging[0].paging_mib == missing
    vm = state.vm("a")
    assert (vm.status, vm.smart_paging_mib, vm.visible_mib) == (MemoryStatus.PAGING, missing, 2048)

    ended = []
    while not ended:  # b's load goes away; its surplus is reclaimed after a minute and backs a's pages
        at += 1000
        report(twin, "b", 500, at_ms=at)
        decisions = tick(twin, at + 500)
        answer_all(twin, decisions, at + 700)
        ended = [d for d in decisions if d.type == "decision.smart_paging_ended"]
        assert at < 200_000
    assert ended[0].backed_mib == missing
    vm = state.vm("a")
    assert (vm.smart_paging, vm.smart_paging_mib, vm.assigned_mib) == (False, 0, 2048)


def test_host_memory_cannot_shrink_below_what_vms_hold():
    twin = host(total_mib=8192, reserve_mib=1024)
    start(twin, "a", startup=4096, maximum=4096)
    with pytest.raises(Rejected) as error:
        twin.handle(HostMemoryChanged(at_ms=1, host=HOST, total_mib=4096, reserve_mib=1024))
    assert error.value.field == "total_mib"
