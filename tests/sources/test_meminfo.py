"""/proc/meminfo and the hv-balloon debugfs file → what a Linux guest reports."""

from __future__ import annotations

import pytest

from twin.guest import linux_balloon_floor_mib
from twin.sources import SourceProblem, ingest
from twin.sources.errors import Problems
from twin.sources.meminfo import (
    HvBalloon,
    Meminfo,
    guest_status,
    parse_hv_balloon,
    parse_meminfo,
    read_meminfo,
)

from .helpers import DATA, replays, types

HYPERV = DATA / "meminfo_hyperv.log"
T0 = 1_767_225_600_000


def blocks() -> list[str]:
    return HYPERV.read_text().split("@")[1:]


def test_meminfo_and_hv_balloon_parse_to_typed_records():
    problems = Problems("t", [])
    text = blocks()[1]
    meminfo = parse_meminfo(text, problems)
    balloon = parse_hv_balloon(text, problems)
    assert meminfo == Meminfo(total_kib=7082428, available_kib=5581636, committed_as_kib=2210816,
                              balloon_kib=1048576)
    assert balloon == HvBalloon(host_version="2.0", capabilities=("enabled", "hot_add"), state=1, page_size=4096,
                                pages_added=0, pages_onlined=0, pages_ballooned=262144,
                                total_pages_committed=984902,
                                max_dynamic_page_count=4194304)
    assert (balloon.ballooned_mib, balloon.maximum_mib) == (1024, 16384)
    assert problems.into == []


def test_committed_is_what_hv_balloon_c_sends():
    """Committed_AS + ballooned + hot-added-not-onlined + floor: the driver's own total, to the MiB."""
    problems = Problems("t", [])
    for text in blocks():
        meminfo, balloon = parse_meminfo(text, problems), parse_hv_balloon(text, problems)
        report = guest_status("h", "vm", 0, meminfo, balloon)
        driver_mib = balloon.total_pages_committed * 4096 / 2**20
        assert abs(report.committed_mib - driver_mib) <= 2
        assert report.available_mib == meminfo.available_kib // 1024
    no_floor = guest_status("h", "vm", 0, meminfo, balloon, floor=False)
    assert report.committed_mib - no_floor.committed_mib == linux_balloon_floor_mib(meminfo.total_mib)


def test_a_recording_becomes_a_guest_that_replays():
    problems: list[SourceProblem] = []
    events = list(read_meminfo(HYPERV, problems=problems, host="hv01", vm="web"))
    assert problems == []
    assert types(events) == ["host.joined", "vm.started", "guest.status", "guest.status", "guest.status"]
    started = events[1]
    assert started.settings.startup_mib == 8131004 // 1024  # MemTotal + an empty balloon
    assert started.settings.maximum_mib == 16384  # max_dynamic_page_count
    assert started.capabilities.hot_add and started.capabilities.hot_add_alignment_mib == 128
    assert [e.at_ms - T0 for e in events] == [0, 0, 0, 1000, 2000]
    ballooned = events[3]
    assert ballooned.committed_mib == 2210816 // 1024 + 1024 + linux_balloon_floor_mib(7082428 // 1024)
    result = replays(events)
    assert result.twin.hosts["hv01"].vm("web").demand_mib == events[-1].committed_mib


def test_without_debugfs_the_meminfo_balloon_line_counts():
    problems = Problems("t", [])
    text = blocks()[1].split("host_version")[0]  # what a non-root reader sees
    meminfo = parse_meminfo(text, problems)
    assert guest_status("h", "vm", 0, meminfo).committed_mib == guest_status(
        "h", "vm", 0, meminfo, parse_hv_balloon(blocks()[1], problems)).committed_mib


def test_a_single_snapshot_needs_a_time():
    problems: list[SourceProblem] = []
    events = list(ingest("meminfo", DATA / "meminfo_plain.txt", problems=problems, at_ms=T0, vm="db"))
    assert types(events) == ["host.joined", "vm.started", "guest.status"] and problems == []
    assert events[1].settings.maximum_mib == events[1].settings.startup_mib == 4028716 // 1024
    replays(events)
    assert list(ingest("meminfo", DATA / "meminfo_plain.txt", problems=problems)) == []
    assert [p.reason for p in problems] == ["no '@<ms>' line and no at_ms given: the snapshot has no time"]


def test_bad_snapshots_are_reported_and_skipped():
    problems: list[SourceProblem] = []
    events = list(read_meminfo(DATA / "meminfo_bad.log", problems=problems))
    assert [(p.line, p.reason) for p in problems] == [
        (1, "text before the first '@<ms>' line: ignored"),
        (8, "meminfo lacks Committed_AS: snapshot skipped"),
        (12, "bad number '3.3e6' for MemAvailable: snapshot skipped"),
        (14, "time goes backwards (@1767225599000): snapshot skipped"),
        (22, "bad number 'many' for pages_ballooned"),
    ]
    assert [e.at_ms - T0 for e in events if e.type == "guest.status"] == [0, 3000]
    replays(events)
    with pytest.raises(ValueError, match="meminfo_bad.log:1: text before"):
        list(read_meminfo(DATA / "meminfo_bad.log"))
