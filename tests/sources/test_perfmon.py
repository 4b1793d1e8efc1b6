"""PDH-CSV 4.0 counter logs → the twin's inputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from twin.events import GuestStatusReported, HostJoined, VmStarted
from twin.sources import SourceError, SourceProblem
from twin.sources.perfmon import parse_counter_path, perfmon_events, read_perfmon

from .helpers import DATA, replays, types

HV01 = DATA / "perfmon_hv01.csv"
BAD = DATA / "perfmon_bad.csv"
T0 = 1_767_603_600_123  # 01/05/2026 10:00:00.123 in W. Europe Standard Time (bias -60) = 09:00 UTC


def test_counter_paths_split_into_machine_object_instance_counter():
    path = parse_counter_path(r"\\HV01\Hyper-V Dynamic Memory VM(web (test))\Physical Memory")
    assert (path.machine, path.object, path.instance, path.counter) == (
        "HV01", "Hyper-V Dynamic Memory VM", "web (test)", "Physical Memory")
    local = parse_counter_path(r"\Memory\Available MBytes")
    assert (local.machine, local.object, local.instance, local.counter) == ("", "Memory", "", "Available MBytes")
    assert parse_counter_path("Physical Memory") is None


def test_a_host_log_becomes_lifecycle_and_status_reports_that_replay():
    problems: list[SourceProblem] = []
    events = list(read_perfmon(HV01, problems=problems))
    assert problems == []
    assert types(events) == [
        "host.joined", "vm.started", "guest.status", "vm.started", "guest.status",  # sample 1
        "guest.status", "guest.status",  # sample 2
        "guest.status", "guest.status",  # sample 3
        "guest.status",  # sample 4: sql-01's Current Pressure is blank, so it reports nothing
        "vm.stopped", "guest.status",  # sample 5: web (test) is gone
        "guest.status",
    ]
    joined, sql = events[0], events[1]
    assert isinstance(joined, HostJoined) and isinstance(sql, VmStarted)
    assert joined.at_ms == T0 and joined.host == "HV01"
    assert joined.total_mib == 61440 + 2048  # Available Memory + Σ Physical Memory, plus the reserve
    assert (sql.vm, sql.settings.startup_mib, sql.settings.minimum_mib, sql.settings.maximum_mib) == (
        "sql-01", 4096, 512, 1_048_576)
    first = events[2]
    assert isinstance(first, GuestStatusReported)
    assert (first.committed_mib, first.available_mib) == (round(0.90 * 4096), 410)  # pressure × physical
    web = events[4]
    assert web.vm == "web (test)" and web.committed_mib == round(0.70 * 2048) + 512  # + ballooned pages
    assert [e.at_ms - T0 for e in events if e.type == "guest.status"][:3] == [0, 0, 1001]
    state = replays(events).twin.hosts["HV01"]
    assert state.vms.names == ["sql-01"]
    assert state.vm("sql-01").demand_mib == round(0.85 * (4096 + 5 * 256))


def test_flags_size_the_host_and_the_vms():
    events = list(read_perfmon(HV01, host_mib=131072, reserve_mib=4096, minimum_mib=1024, maximum_mib=16384))
    assert (events[0].total_mib, events[0].reserve_mib) == (131072, 4096)
    assert (events[1].settings.minimum_mib, events[1].settings.maximum_mib) == (1024, 16384)
    replays(events)


def test_a_vm_that_does_not_fit_the_given_host_is_reported_and_left_out():
    problems: list[SourceProblem] = []
    events = list(read_perfmon(HV01, host_mib=6000 + 2048, problems=problems))
    assert [(p.line, p.reason) for p in problems] == [
        (2, "VM 'web (test)' cannot start in the twin: 2048 MiB wanted, 1904 MiB free on 'HV01'")]
    assert {e.vm for e in events if e.type == "vm.started"} == {"sql-01"}
    assert "web (test)" not in {getattr(e, "vm", None) for e in events}
    replays(events)


def test_bad_rows_are_reported_with_file_line_and_reason_and_the_rest_is_ingested():
    problems: list[SourceProblem] = []
    events = list(read_perfmon(BAD, problems=problems))
    assert [(p.file, p.line) for p in problems] == [(str(BAD), n) for n in (2, 2, 4, 5, 6, 7, 8)]
    reasons = [p.reason for p in problems]
    assert reasons[0] == r'column 5: unknown counter "\\HV01\Memory\Available MBytes": ignored'
    assert reasons[1].startswith("missing column Hyper-V Dynamic Memory VM(nopressure)\\Current Pressure")
    assert reasons[2].startswith("bad number 'lots' in column 3")
    assert reasons[3] == "6 cells where the header has 8: row skipped"
    assert reasons[4].startswith("time goes backwards")
    assert reasons[5].startswith("bad timestamp 'yesterday'")
    assert reasons[6].startswith("bad number '-5'")
    assert str(problems[3]) == f"{BAD}:5: 6 cells where the header has 8: row skipped"
    # Two machines in one log: two hosts, merged in time order; typeperf's closing messages ignored.
    assert [e.host for e in events if e.type == "host.joined"] == ["HV01", "HV02"]
    assert [e.at_ms for e in events] == sorted(e.at_ms for e in events)
    db = [e for e in events if e.type == "guest.status" and e.vm == "db"]
    assert [e.committed_mib for e in db] == [4096, 4915, 5734, 6144]
    app = [e for e in events if e.type == "guest.status" and e.vm == "app"]
    assert len(app) == 2  # rows 4 and 8 had no usable pressure: missing, not zero
    result = replays(events)
    assert set(result.twin.hosts) == {"HV01", "HV02"}


def test_without_a_problem_list_the_first_problem_is_raised():
    with pytest.raises(SourceError, match="unknown counter"):
        list(read_perfmon(BAD))


def test_text_that_is_not_pdh_csv_is_one_problem_and_no_events():
    problems: list[SourceProblem] = []
    assert list(perfmon_events("Time,Value\n1,2\n", file="x.csv", problems=problems)) == []
    assert [(p.file, p.line) for p in problems] == [("x.csv", 1)]
    assert "not a PDH-CSV 4.0 log" in problems[0].reason


def test_utf16_logs_read_like_utf8_and_the_offset_can_be_overridden(tmp_path: Path):
    utf16 = tmp_path / "dm.csv"
    utf16.write_bytes(HV01.read_text(encoding="utf-8").encode("utf-16"))
    assert list(read_perfmon(utf16)) == list(read_perfmon(HV01))
    summer = list(read_perfmon(HV01, utc_offset_min=120))  # CEST: UTC+2, not the header's -60 bias
    assert summer[0].at_ms == T0 - 3_600_000
