"""Benchmark of the lab (issue #11): real Linux guests under QEMU, steered by the twin.

Two guests, ``a`` and ``b``, on a host with no memory to spare take turns: one's load steps up
(``--load-mib`` filled into its tmpfs) while the other's drops to nothing. The twin balloons the one
that no longer needs its memory and gives it to the other (unballoon first, virtio-mem after).

It prints:

1. the reaction time from a load step (the start of the fill inside the guest) to memory arriving
   inside that guest: its own ``/proc/meminfo`` MemAvailable ``--arrival-mib`` above where the
   load alone would leave it (MemAvailable before the step − the load), p50 / p99 / max over
   ``--steps`` steps;
2. the drift between the twin's assigned memory (the worker's /hosts/) and QEMU's (balloon
   ``actual`` + virtio-mem ``size``, read on a second QMP monitor), in MiB, sampled each time the
   twin and the bridge have nothing in flight.

Run: .venv/bin/python benchmarks/bench_lab.py [--steps 20]
Uses $DMTWIN_KAFKA_BOOTSTRAP if set, else starts a local broker (streams.kafka.broker) for the run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streams.kafka.broker import LocalKafka  # noqa: E402
from tests.integration.conftest import free_ports  # noqa: E402
from tests.integration.labrun import LabThread  # noqa: E402
from tests.integration.pipeline import WorkerProcess, unique_topics  # noqa: E402
from twin.scenario import Scenario  # noqa: E402

MIB = 1 << 20
HOST = "lab-bench"


def scenario() -> Scenario:
    # Sized so that every step needs memory the host has only in the other guest (both ideals
    # together exceed total - reserve), and a ballooned guest still has room for the load.
    vm = {"startup_mib": 640, "minimum_mib": 448, "maximum_mib": 1024, "buffer_percent": 200,
          "guest": {"os": "linux"}, "workload": {"kind": "steady", "mib": 0}}
    return Scenario.model_validate({"duration_s": 3600, "hosts": [{
        "name": HOST, "total_mib": 256 + 1280, "reserve_mib": 256, "policy": "hyperv",
        "vms": [{"name": "a", **vm}, {"name": "b", **vm}]}]})


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--load-mib", type=int, default=220)
    parser.add_argument("--arrival-mib", type=int, default=32)
    parser.add_argument("--timeout-s", type=float, default=45.0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="dmtwin-bench-lab-") as tmp:
        workdir = Path(tmp)
        broker = None
        bootstrap = os.environ.get("DMTWIN_KAFKA_BOOTSTRAP")
        if not bootstrap:
            port, controller = free_ports(2)
            broker = LocalKafka(data_dir=workdir / "kafka", port=port, controller_port=controller)
            broker.up()
            bootstrap = broker.bootstrap
        app_id, topics = unique_topics()
        worker = WorkerProcess(bootstrap, workdir / "worker", app_id, topics).start()
        lab = LabThread(scenario(), workdir / "lab")
        try:
            reason = lab.boot()
            if reason:
                print(f"bench_lab: {reason}")
                return 1
            print(f"{len(lab.lab.guests)} guests booted in {lab.lab.boot_s:.1f} s "
                  f"({next(iter(lab.lab.guests.values())).accel.upper()})")
            bridge = lab.start_bridge(bootstrap, topics, twin_url=f"http://127.0.0.1:{worker.web_port}")
            controls = {vm: lab.call(lab.lab.control(vm)) for vm in ("a", "b")}
            mon = lab.lab.monitors

            def available_mib(vm: str) -> float:
                return lab.call(controls[vm].meminfo())["MemAvailable"] / 1024

            def twin_vms() -> dict[str, tuple[int, str]]:
                vms = worker.hosts().get(HOST, {}).get("vms", [])
                return {v["name"]: (v["assigned_mib"], v["pending"] if v["demand_mib"] is not None else "no data")
                        for v in vms}

            def bridge_idle() -> bool:
                return not any(v.busy or not v.queue.empty() for v in bridge.vms.values())

            def settled() -> bool:
                vms = twin_vms()
                return len(vms) == 2 and all(p == "none" for _, p in vms.values()) and bridge_idle()

            def drift_sample() -> list[int]:
                """Twin minus QEMU, for a moment when nothing is in flight: the twin's view is read
                before and after QEMU's, and the sample kept only if nothing moved in between."""
                answered = len(bridge.answers)
                before = twin_vms()
                if not (len(before) == 2 and all(p == "none" for _, p in before.values()) and bridge_idle()):
                    return []
                qemu = {vm: (lab.call(mon[vm].actual()) + lab.call(mon[vm].plugged())) // MIB for vm in before}
                if twin_vms() != before or len(bridge.answers) != answered or not bridge_idle():
                    return []
                return [before[vm][0] - qemu[vm] for vm in before]

            deadline = time.monotonic() + 60
            while not settled():
                if time.monotonic() > deadline:
                    raise TimeoutError("the twin does not see both guests")
                time.sleep(0.5)
            reactions: list[float] = []
            fills: list[float] = []
            drifts: list[int] = []
            missed = 0
            up, down = "a", "b"
            for step in range(args.steps):
                lab.call(lab.lab.set_load(down, 0, controls[down]))
                # Without the twin the load would leave MemAvailable at before - load: memory has
                # arrived once it is arrival_mib above that. The clock starts with the fill.
                floor = available_mib(up) - args.load_mib
                loaded = time.monotonic()
                lab.call(lab.lab.set_load(up, args.load_mib, controls[up]))
                fills.append(time.monotonic() - loaded)
                took = None
                while took is None and time.monotonic() - loaded < args.timeout_s:
                    if available_mib(up) >= floor + args.arrival_mib:
                        took = time.monotonic() - loaded
                    else:
                        time.sleep(0.05)
                if took is None:
                    missed += 1
                else:
                    reactions.append(took)
                quiet = time.monotonic() + 20
                while time.monotonic() < quiet and not settled():
                    time.sleep(0.2)
                time.sleep(1.5)
                for _ in range(10):
                    sample = drift_sample()
                    if sample:
                        drifts += sample
                        break
                    time.sleep(0.3)
                print(f"  step {step + 1:2d}: {up} +{args.load_mib} MiB -> "
                      + (f"memory in the guest after {took:.2f} s" if took is not None else "no memory in time"),
                      flush=True)
                up, down = down, up

            print(f"\nreaction time, load step -> memory inside the guest ({len(reactions)} of {args.steps} steps, "
                  f"{missed} missed):")
            if reactions:
                print(f"  p50 {statistics.median(reactions):.2f} s   p99 {percentile(reactions, 99):.2f} s   "
                      f"max {max(reactions):.2f} s   min {min(reactions):.2f} s   "
                      f"(of which the fill itself: p50 {statistics.median(fills):.2f} s)")
            if drifts:
                absolute = [abs(d) for d in drifts]
                print(f"drift, twin assigned - QEMU assigned, settled ({len(drifts)} samples): "
                      f"p50 {statistics.median(absolute):.0f} MiB   max {max(absolute)} MiB   "
                      f"mean {statistics.fmean(drifts):+.1f} MiB")
            print(f"bridge: {len(bridge.answers)} commands answered, {bridge.duplicates} duplicates, "
                  f"{len(bridge.errors)} errors, {len(bridge.drifts)} drift events")
            for control in controls.values():
                lab.call(control.close())
        finally:
            lab.close()
            worker.stop()
            if broker is not None:
                broker.down()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
