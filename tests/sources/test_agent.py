"""The guest agent, for real: this machine's /proc/meminfo, read on a short period."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from streams.telemetry.agent import JsonlSink, run_agent
from twin.events import Decision, GuestStatusReported, InputEvent, VmStarted
from twin.guest import linux_balloon_floor_mib
from twin.log import open_log, replay

from .helpers import DATA, replays, types


def meminfo_mib() -> dict[str, int]:
    fields = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    return {key: int(fields[key].split()[0]) // 1024 for key in ("MemTotal", "MemAvailable", "Committed_AS")}


def test_three_real_reports_after_a_prologue_validate_and_replay(tmp_path: Path):
    before = meminfo_mib()
    sent: list[InputEvent | Decision] = []
    started = time.monotonic()
    count = run_agent("test-host", "this-machine", sent.append, interval_s=0.05, count=3)
    elapsed = time.monotonic() - started
    after = meminfo_mib()

    assert count == 5 and types(sent) == ["host.joined", "vm.started", "guest.status", "guest.status",
                                          "guest.status"]
    assert elapsed >= 0.1  # two waits of 50 ms between three readings
    started_vm = sent[1]
    assert isinstance(started_vm, VmStarted)
    total = started_vm.settings.startup_mib
    assert before["MemTotal"] <= total  # MemTotal, plus the balloon if this is a ballooned guest
    assert sent[0].total_mib >= total + sent[0].reserve_mib
    reports = [e for e in sent if isinstance(e, GuestStatusReported)]
    floor = linux_balloon_floor_mib(before["MemTotal"])
    for report in reports:
        assert 0 < report.available_mib <= total
        low = min(before["Committed_AS"], after["Committed_AS"]) + floor
        assert low * 0.5 <= report.committed_mib <= total * 8 + floor  # Committed_AS may exceed RAM
        assert abs(report.available_mib - before["MemAvailable"]) < total // 2
    times = [e.at_ms for e in sent]
    assert times == sorted(times) and times[-1] - times[2] >= 90
    assert abs(times[0] / 1000 - time.time()) < 60
    replays(sent)

    log = tmp_path / "agent.jsonl"
    with JsonlSink(log) as sink:
        assert run_agent("test-host", "this-machine", sink, interval_s=0.01, count=2) == 4
    with open_log(log) as lines:
        result = replay(lines)
    assert result.events == 4 and result.rejected == []


def test_a_stop_event_ends_an_endless_agent():
    stop = threading.Event()
    sent: list[InputEvent | Decision] = []
    worker = threading.Thread(target=run_agent, args=("h", "vm", sent.append, 0.02), kwargs={"stop": stop})
    worker.start()
    time.sleep(0.15)
    stop.set()
    worker.join(timeout=5)
    assert not worker.is_alive()
    assert len(sent) >= 4
    replays(sent)


def test_the_agent_reads_any_proc_root_and_sizes_the_host(tmp_path: Path):
    (tmp_path / "meminfo").write_text((DATA / "meminfo_plain.txt").read_text())
    sent: list[InputEvent | Decision] = []
    run_agent("h", "vm", sent.append, interval_s=0, count=1, proc_root=str(tmp_path), balloon_path=None,
              host_mib=65536)
    assert sent[0].total_mib == 65536
    assert sent[2].committed_mib == 1502220 // 1024 + linux_balloon_floor_mib(4028716 // 1024)
