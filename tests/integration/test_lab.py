"""Real Linux guests under QEMU, steered by the twin through a real broker, a real worker and the
QMP bridge. No mocks: the asserts read the guests themselves (/proc/meminfo inside the guest, QMP's
balloon ``actual`` and virtio-mem ``size`` on a second QMP monitor the bridge does not use).

A host short of memory runs three guests: ``busy`` (hot-add capable) whose load rises, ``idle``,
and ``holder`` whose load holds most of its memory. The twin hot-adds memory to ``busy`` and
balloons the other two; ``holder`` can only give part of what is asked, and the twin records its
real, partial answer.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from twin.events import flatten
from twin.log import decode, replay
from twin.report import summary
from twin.scenario import Scenario

from .labrun import LabThread
from .pipeline import ROOT, WorkerProcess, read_topic, send_raw, unique_topics, wait_until_quiet

pytestmark = pytest.mark.integration

MIB = 1 << 20
HOST = "lab-t"


def lab_scenario() -> Scenario:
    linux = {"os": "linux"}
    return Scenario.model_validate({"duration_s": 600, "hosts": [{
        "name": HOST, "total_mib": 256 + 3 * 512, "reserve_mib": 256, "policy": "hyperv", "vms": [
            {"name": "busy", "startup_mib": 512, "minimum_mib": 256, "maximum_mib": 1024, "buffer_percent": 100,
             "weight": 8000, "guest": linux, "workload": {"kind": "steady", "mib": 0}},
            {"name": "idle", "startup_mib": 512, "minimum_mib": 256, "maximum_mib": 512, "guest": linux,
             "workload": {"kind": "steady", "mib": 0}},
            {"name": "holder", "startup_mib": 512, "minimum_mib": 128, "maximum_mib": 512, "buffer_percent": 5,
             "guest": linux, "workload": {"kind": "steady", "mib": 300}},
        ]}]})


def wait_for(what: str, check, timeout_s: float = 90.0, every_s: float = 0.5):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(every_s)


def dmtwin(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streams.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


@pytest.fixture
def lab(tmp_path: Path):  # type: ignore[no-untyped-def]
    run = LabThread(lab_scenario(), tmp_path / "lab")
    try:
        reason = run.boot()
        if reason is not None:
            pytest.skip(reason)
        yield run
    finally:
        run.close()


def test_real_guests_get_memory_added_ballooned_and_answer_for_real(kafka_bootstrap, lab, tmp_path):
    key = tmp_path / "worker.key"
    assert dmtwin("keys", "new", str(key)).returncode == 0
    app_id, topics = unique_topics()
    worker = WorkerProcess(kafka_bootstrap, tmp_path / "w", app_id, topics)
    worker.env["DMTWIN_KEY"] = str(key)
    worker.start()
    try:
        # holder's load holds 300 MiB of its ~415 MiB MemTotal before the twin sees it
        lab.call(lab.lab.set_load("holder", 300))
        before = {vm: lab.call(lab.lab.meminfo(vm)) for vm in ("busy", "idle", "holder")}
        bridge = lab.start_bridge(kafka_bootstrap, topics, twin_url=f"http://127.0.0.1:{worker.web_port}")
        wait_for("the twin to see all three guests report",
                 lambda: all(vm["demand_mib"] is not None
                             for vm in worker.hosts().get(HOST, {}).get("vms", [{"demand_mib": None}])
                             ) and len(worker.hosts()[HOST]["vms"]) == 3)

        # busy's load rises: 320 MiB in its tmpfs
        step_at = time.monotonic()
        lab.call(lab.lab.set_load("busy", 320))
        mon = lab.lab.monitors
        wait_for("memory added to busy and idle ballooned",
                 lambda: lab.call(mon["busy"].plugged()) > 0 and lab.call(mon["idle"].actual()) < 512 * MIB
                 and any(a.vm == "holder" for a in bridge.answers))
        wait_for("the twin and QEMU to agree", lambda: not any(v.busy for v in bridge.vms.values())
                 and all(r["pending"] == "none" for r in worker.hosts()[HOST]["vms"]), timeout_s=30)
        reaction_s = time.monotonic() - step_at

        answers = {(a.vm, a.type): a for a in bridge.answers}
        added = answers[("busy", "guest.hot_add_response")]
        idle_answer = answers[("idle", "guest.balloon_response")]
        holder_answer = answers[("holder", "guest.balloon_response")]

        # The real guests: what QMP says and what the guest kernel itself sees.
        after = {vm: lab.call(lab.lab.meminfo(vm)) for vm in ("busy", "idle", "holder")}
        plugged = lab.call(mon["busy"].plugged())
        assert added.result == "success" and plugged == added.added_mib * MIB > 0
        grown_kib = after["busy"]["MemTotal"] - before["busy"]["MemTotal"]
        assert abs(grown_kib - plugged // 1024) <= 2048, (grown_kib, plugged)  # onlined inside the guest
        assert lab.call(mon["idle"].actual()) == (512 - idle_answer.released_mib) * MIB
        assert idle_answer.released_mib > 0
        # ballooned pages stay in MemTotal (deflate-on-oom) but leave the guest's free memory
        assert before["idle"]["MemFree"] - after["idle"]["MemFree"] >= (idle_answer.released_mib - 16) * 1024
        try:
            wait_for("holder's balloon to hold what it answered",
                     lambda: lab.call(mon["holder"].actual()) == (512 - holder_answer.released_mib) * MIB, timeout_s=10)
        except AssertionError:
            raise AssertionError(f"holder actual {lab.call(mon['holder'].actual()) / MIB} MiB, answered "
                                 f"{holder_answer}, asked {[a for a in bridge.answers]}, "
                                 f"{(lab.lab.guests['holder'].console).read_text()[-3000:]}")

        # The twin's records: its decisions and the guests' real answers, in the event log.
        log = [value for _, value in read_topic(kafka_bootstrap, topics.event_log)]
        events = [event for line in log for event in flatten(decode(line))]
        asked = next(e for e in events if e.type == "decision.balloon" and e.vm == "holder")
        recorded = next(e for e in events if e.type == "guest.balloon_response" and e.vm == "holder")
        assert recorded.seq == asked.seq and recorded.released_mib == holder_answer.released_mib
        assert recorded.released_mib < asked.remove_mib, "holder's load holds its memory: a partial answer"
        live = {vm["name"]: vm for vm in worker.hosts()[HOST]["vms"]}
        for vm in ("busy", "idle", "holder"):
            qemu = (lab.call(mon[vm].actual()) + lab.call(mon[vm].plugged())) // MIB
            assert live[vm]["assigned_mib"] == qemu, f"{vm}: the twin believes what QEMU does"
        assert live["holder"]["floor_mib"] == live["holder"]["assigned_mib"], "the twin learnt holder's floor"

        # A command redelivered is not applied twice.
        commands = read_topic(kafka_bootstrap, topics.balloon_commands)
        idle_actual = lab.call(mon["idle"].actual())
        send_raw(kafka_bootstrap, topics.balloon_commands, [commands[0]])
        wait_for("the duplicate to be skipped", lambda: bridge.duplicates >= 1, timeout_s=20)
        assert lab.call(mon["idle"].actual()) == idle_actual

        # Bad input is refused with its field and value, kept, and the bridge goes on.
        ghost = json.dumps({"type": "decision.balloon", "at_ms": int(time.time() * 1000), "host": HOST,
                            "vm": "ghost", "seq": 1, "remove_mib": 64, "target_mib": 448}).encode()
        send_raw(kafka_bootstrap, topics.balloon_commands, [(HOST.encode(), ghost), (HOST.encode(), b'{"type": ')])
        wait_for("the bad commands to be refused", lambda: len(bridge.errors) >= 2, timeout_s=20)
        fields = {(e.field, e.value) for e in bridge.errors}
        assert ("vm", "ghost") in fields and any(f == "json" for f, _ in fields), bridge.errors
        assert (lab.lab.run_dir / "bridge" / "errors.jsonl").read_text().count("\n") >= 2

        # Drift: someone inflates idle's balloon behind the twin's back; the bridge says so.
        idle_actual = lab.call(mon["idle"].actual())
        lab.call(mon["idle"].set_balloon(idle_actual - 64 * MIB))
        parted = wait_for("a drift event", lambda: [d for d in bridge.drifts if d.vm == "idle" and d.state == "parted"],
                          timeout_s=20)
        assert parted[0].drift_mib == pytest.approx(64, abs=2)
        lab.call(mon["idle"].set_balloon(idle_actual))
        wait_for("the drift to close", lambda: bridge.drifts[-1].state == "met", timeout_s=20)
        drift_records = [json.loads(v) for _, v in read_topic(kafka_bootstrap, topics.prefix + "lab.drift")]
        assert [d["state"] for d in drift_records if d["vm"] == "idle"][:2] == ["parted", "met"]

        # A QMP error (a balloon target of 0 bytes) is kept and answered; the bridge keeps reporting.
        impossible = json.dumps({"type": "decision.balloon", "at_ms": int(time.time() * 1000), "host": HOST,
                                 "vm": "holder", "seq": 10_000, "remove_mib": 4096, "target_mib": 0}).encode()
        send_raw(kafka_bootstrap, topics.balloon_commands, [(HOST.encode(), impossible)])
        wait_for("the QMP error", lambda: any(e.field == "qmp" for e in bridge.errors), timeout_s=20)
        qmp_error = next(e for e in bridge.errors if e.field == "qmp")
        assert qmp_error.value == "balloon" and "target" in qmp_error.reason, qmp_error
        reports = bridge.reports
        wait_for("more reports", lambda: bridge.reports > reports + 3, timeout_s=20)
        assert lab.bridge_alive()

        lab.stop_bridge()
        wait_until_quiet(kafka_bootstrap, topics.event_log, quiet_s=4)
        out = tmp_path / "lab.jsonl"
        broker = f"kafka://{kafka_bootstrap}"
        export = dmtwin("log", "export", str(out), "--kafka", broker, "--topic", topics.event_log, "--checkpoints",
                        "--checkpoints-topic", topics.checkpoints)
        assert export.returncode == 0, export.stderr
        verdict = dmtwin("audit", "verify", str(out), "--key", f"{key}.pub")
        assert verdict.returncode == 0, verdict.stdout[-3000:] + verdict.stderr[-2000:]
        assert verdict.stdout.splitlines()[-1].startswith("OK")
        log = [value for _, value in read_topic(kafka_bootstrap, topics.event_log)]
        replayed = replay(log)
        assert replayed.rejected == []
        assert {h["host"]: h for h in summary(replayed, decisions=False)["hosts"]} == worker.hosts(), \
            "the event log replays to the live state"
        print(f"lab: boot {lab.lab.boot_s:.1f} s, load step to memory settled {reaction_s:.1f} s, "
              f"busy +{added.added_mib} MiB, idle -{idle_answer.released_mib} MiB, "
              f"holder -{holder_answer.released_mib} MiB (partial)")
    finally:
        worker.stop()


def test_dmtwin_bridge_drives_a_vm_through_a_qmp_socket_given_on_the_command_line(kafka_bootstrap, tmp_path):
    """As for a libvirt VM: ``dmtwin bridge --qmp VM=SOCKET`` in its own process, on the guest's
    second QMP monitor; the test reads QEMU on the first."""
    host = "solo-h"
    scenario = {"duration_s": 600, "hosts": [{"name": host, "total_mib": 768, "reserve_mib": 256, "policy": "esx",
                "vms": [{"name": "solo", "startup_mib": 512, "minimum_mib": 256, "maximum_mib": 512,
                         "guest": {"os": "linux", "hot_add": False}, "workload": {"kind": "steady", "mib": 0}}]}]}
    path = tmp_path / "solo.json"
    path.write_text(json.dumps(scenario))
    run = LabThread(Scenario.model_validate(scenario), tmp_path / "lab", monitors=False)
    worker = None
    bridge = None
    try:
        reason = run.boot()
        if reason is not None:
            pytest.skip(reason)
        app_id, topics = unique_topics()
        worker = WorkerProcess(kafka_bootstrap, tmp_path / "w", app_id, topics).start()
        guest = run.lab.guests["solo"]
        bridge = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "bridge", "--host", host, "--scenario", str(path),
             "--qmp", f"solo={guest.monitor_socket}", "--kafka", kafka_bootstrap,
             "--twin-url", f"http://127.0.0.1:{worker.web_port}", "--state-dir", str(tmp_path / "bridge")],
            cwd=ROOT, env={**worker.env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        qemu = run.lab.memory["solo"]
        # esx reclaims idle memory at once: the idle guest is ballooned to its Minimum, 256 MiB
        wait_for("the balloon to be applied", lambda: run.call(qemu.actual()) == 256 * MIB, timeout_s=90)
        wait_for("the twin to record the answer",
                 lambda: [(v["assigned_mib"], v["pending"]) for v in worker.hosts()[host]["vms"]] == [(256, "none")],
                 timeout_s=30)
        applied = json.loads((tmp_path / "bridge" / "applied.json").read_text())
        assert applied == {host: {"solo": 1}}
        bridge.terminate()
        out, _ = bridge.communicate(timeout=30)
        assert bridge.returncode == 0, out[-2000:]
        assert "bridging host solo-h: solo" in out and "solo #1 decision.balloon" in out, out[-2000:]
    finally:
        if bridge is not None and bridge.poll() is None:
            bridge.kill()
            bridge.communicate()
        if worker is not None:
            worker.stop()
        run.close()
