"""Benchmark of the audit (issue #5): replay and verify speed on a log of a million events or more,
next to only parsing the same file, and the peak memory of each.

Run: .venv/bin/python benchmarks/bench_audit.py [--events N] [--vms-per-host N] [--jobs N]

The log is simulated (``twin.scenario.simulate`` on a fleet of hosts with a dozen VMs each),
chained like ``dmtwin simulate -o`` writes it, and written to a temporary file. Each measurement
runs in a fresh process reading that file, so its peak memory (``ru_maxrss``) is its own. Goal:
verify at least half as fast as parsing. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PHASES = ("parse", "chain", "replay", "verify", "verify-parallel")


def fleet(events: int, vms_per_host: int, hosts: int):  # type: ignore[no-untyped-def]
    """A fleet busy enough to decide often: a dozen (or ``vms_per_host``) varied VMs per host."""
    from twin.scenario import Scenario

    kinds = [
        {"kind": "diurnal", "base_mib": 2500, "amplitude_mib": 1500, "period_s": 600},
        {"kind": "bursty", "base_mib": 1200, "burst_mib": 2000, "bursts_per_hour": 20, "burst_s": 90},
        {"kind": "batch", "idle_mib": 600, "job_mib": 5000, "every_s": 900, "job_s": 300},
        {"kind": "idle", "mib": 400},
        {"kind": "leak", "start_mib": 1500, "mib_per_hour": 2000, "reset_every_s": 3600},
    ]
    per_second = hosts * (vms_per_host + 1.3)  # reports, a tick, and some decisions and answers
    return Scenario.model_validate({"seed": 5, "duration_s": max(60, int(events / per_second)), "hosts": [
        {"name": f"hv-{h:02d}", "total_mib": vms_per_host * 3000, "reserve_mib": 2048, "vms": [
            {"name": f"vm-{i:03d}", "startup_mib": 2048, "minimum_mib": 512, "maximum_mib": 8192,
             "weight": 1000 + (i * 1237) % 9000, "guest": {"os": "linux" if i % 3 == 0 else "windows"},
             "workload": kinds[(i + h) % len(kinds)]} for i in range(vms_per_host)]} for h in range(hosts)]})


def write_log(path: Path, events: int, vms_per_host: int, hosts: int) -> int:
    from twin.chain import Chainer
    from twin.scenario import simulate

    chainer = Chainer()
    count = 0
    with open(path, "w", encoding="utf-8") as out:
        for event in simulate(fleet(events, vms_per_host, hosts), rejected=[]):
            out.write(chainer.line(event))
            out.write("\n")
            count += 1
    return count


def run_phase(phase: str, path: Path, jobs: int) -> dict[str, float]:
    """One measurement, in this process: its time, its events, and what it found."""
    start = time.perf_counter()
    if phase == "parse":
        from twin.events import EVENT_ADAPTER

        validate = EVENT_ADAPTER.validate_json
        with open(path, "rb") as lines:
            count = sum(1 for line in lines if validate(line))
        found = 0
    elif phase == "chain":
        from twin.chain import verify_chain

        with open(path, "rb") as lines:
            found = len(verify_chain(lines))
        with open(path, "rb") as lines:
            count = sum(1 for _ in lines)
    elif phase == "replay":
        from twin.log import replay

        with open(path, "rb") as lines:
            result = replay(lines)
        count, found = result.events, len(result.rejected)
    elif phase == "verify":
        from twin.audit import verify

        with open(path, "rb") as lines:
            checked = verify(lines)
        count, found = checked.events, len(checked.chain) + len(checked.mismatches) + len(checked.rejected)
    else:
        from streams.logtool import verify_parallel

        with open(path, "rb") as lines:
            checked = verify_parallel(lines, jobs)
        count, found = checked.events, len(checked.chain) + len(checked.mismatches) + len(checked.rejected)
    seconds = time.perf_counter() - start
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss if phase == "verify-parallel" else 0
    return {"seconds": seconds, "events": count, "problems": found,
            "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "children_peak_mib": children / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--vms-per-host", type=int, default=12)
    parser.add_argument("--hosts", type=int, default=8)
    parser.add_argument("--jobs", type=int, default=2, help="processes for verify-parallel")
    parser.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:  # a child: measure one phase and report as JSON
        print(json.dumps(run_phase(args.phase, Path(args.file), args.jobs)))
        return

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fleet.jsonl"
        started = time.perf_counter()
        count = write_log(path, args.events, args.vms_per_host, args.hosts)
        print(f"log: {count:,} events, {args.hosts} hosts × {args.vms_per_host} VMs, "
              f"{path.stat().st_size / 2**20:,.0f} MiB, simulated and chained in {time.perf_counter() - started:.0f} s")
        results = {}
        for phase in PHASES:
            out = subprocess.run([sys.executable, __file__, "--phase", phase, "--file", str(path),
                                  "--jobs", str(args.jobs)], check=True, capture_output=True, text=True)
            results[phase] = json.loads(out.stdout.strip().splitlines()[-1])
        parse_rate = results["parse"]["events"] / results["parse"]["seconds"]
        print(f"{'phase':<16} {'events/s':>12} {'× parse':>8} {'seconds':>8} {'peak MiB':>9}  problems")
        for phase, r in results.items():
            rate = r["events"] / r["seconds"]
            label = f"{phase} ({args.jobs})" if phase == "verify-parallel" else phase
            peak = f"{r['peak_mib']:.0f}" + (f" + {args.jobs}×≤{r['children_peak_mib']:.0f}"
                                            if r["children_peak_mib"] else "")
            print(f"{label:<16} {rate:>12,.0f} {rate / parse_rate:>8.2f} {r['seconds']:>8.1f} {peak:>9}  "
                  f"{r['problems']}")


if __name__ == "__main__":
    main()
