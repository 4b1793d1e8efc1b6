"""Benchmark of the audit (issues #5 and #12): replay and verify speed on a log of a million events
or more, next to only parsing the same file, and the peak memory of each; and verify with the
signed checkpoints checked, against verify without.

Run: .venv/bin/python benchmarks/bench_audit.py [--events N] [--vms-per-host N] [--jobs N]
                                                [--checkpoint-every SECONDS]

The log is simulated (``twin.scenario.simulate`` on a fleet of hosts with a dozen VMs each),
chained and signed like ``dmtwin simulate -o LOG --key K`` writes it (a checkpoint per host every
``--checkpoint-every`` seconds of event time, 10 by default; 1 is about the worker's cadence of
one per host per second), and written to a temporary file. Each measurement runs in a fresh
process reading that file, so its peak memory (``ru_maxrss``) is its own. Goal: verify at least
half as fast as parsing. Nothing is asserted.
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

PHASES = ("parse", "chain", "replay", "verify", "verify-signed", "verify-parallel", "verify-parallel-signed")
KEY = bytes(range(32))


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


def write_log(path: Path, events: int, vms_per_host: int, hosts: int, every_ms: int, framed: bool = True
              ) -> tuple[int, int, int]:
    """Write the log; return its lines, the events they hold (a frame's reports, a round's tick and
    decisions each count), and the checkpoints."""
    from twin.events import flatten
    from twin.scenario import simulate
    from twin.signing import Signer, Trail

    trail = Trail(Signer(KEY), every_ms)
    count = checkpoints = flat = 0
    with open(path, "w", encoding="utf-8") as out, open(f"{path}.checkpoints.jsonl", "wb") as signed:
        for event in simulate(fleet(events, vms_per_host, hosts), rejected=[], framed=framed):
            flat += len(flatten(event))
            due, line = trail.line(event)
            for cp in due:
                signed.write(cp + b"\n")
                checkpoints += 1
            out.write(line)
            out.write("\n")
            count += 1
        for cp in trail.finish():
            signed.write(cp + b"\n")
            checkpoints += 1
    return count, flat, checkpoints


def run_phase(phase: str, path: Path, jobs: int) -> dict[str, float]:
    """One measurement, in this process: its time (wall and CPU, children's too), its events, and what
    it found. The machine may be shared: CPU time is the steadier figure."""
    start = time.perf_counter()
    cpu_start = _cpu()
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
    elif phase in ("verify", "verify-signed"):
        from twin.audit import verify
        from twin.signing import CheckpointCheck, Signer

        check = None
        if phase == "verify-signed":  # reading the checkpoints file is part of the work
            check = CheckpointCheck(Signer(KEY).public_key, Path(f"{path}.checkpoints.jsonl").read_bytes().splitlines())
        with open(path, "rb") as lines:
            checked = verify(lines, checkpoints=check)
        count, found = checked.events, checked.problems
        assert phase == "verify" or checked.ok, checked.verdict()
    else:
        from streams.audit.parallel import verify_parallel
        from twin.signing import Signer

        key = checkpoints = None
        if phase == "verify-parallel-signed":
            key, checkpoints = Signer(KEY).public_key, Path(f"{path}.checkpoints.jsonl").read_bytes().splitlines()
        with open(path, "rb") as lines:
            checked = verify_parallel(lines, jobs, key=key, checkpoints=checkpoints)
        count, found = checked.events, checked.problems
        assert phase == "verify-parallel" or checked.ok, checked.verdict()
    seconds = time.perf_counter() - start
    cpu = _cpu() - cpu_start
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss if phase.startswith("verify-parallel") else 0
    return {"seconds": seconds, "cpu_seconds": cpu, "events": count, "problems": found,
            "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "children_peak_mib": children / 1024}


def _cpu() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--vms-per-host", type=int, default=12)
    parser.add_argument("--hosts", type=int, default=8)
    parser.add_argument("--jobs", type=int, default=2, help="processes for verify-parallel")
    parser.add_argument("--flat", action="store_true",
                        help="write every report, tick and decision as its own line (older logs), not frames and rounds")
    parser.add_argument("--checkpoint-every", type=float, default=10.0, metavar="SECONDS",
                        help="event time between a host's checkpoints (default 10)")
    parser.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:  # a child: measure one phase and report as JSON
        print(json.dumps(run_phase(args.phase, Path(args.file), args.jobs)))
        return

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fleet.jsonl"
        started = time.perf_counter()
        count, flat, checkpoints = write_log(path, args.events, args.vms_per_host, args.hosts,
                                             round(args.checkpoint_every * 1000), not args.flat)
        print(f"log: {count:,} lines holding {flat:,} events ({'flat' if args.flat else 'frames and rounds'}), "
              f"{args.hosts} hosts × {args.vms_per_host} VMs, "
              f"{path.stat().st_size / 2**20:,.0f} MiB, {checkpoints:,} checkpoints (one per host every "
              f"{args.checkpoint_every:g} s of event time), simulated, chained and signed in "
              f"{time.perf_counter() - started:.0f} s")
        results = {}
        for phase in PHASES:
            out = subprocess.run([sys.executable, __file__, "--phase", phase, "--file", str(path),
                                  "--jobs", str(args.jobs)], check=True, capture_output=True, text=True)
            results[phase] = json.loads(out.stdout.strip().splitlines()[-1])
        parse_rate = results["parse"]["events"] / results["parse"]["seconds"]
        print(f"{'phase':<26} {'lines/s':>12} {'× parse':>8} {'seconds':>8} {'ev/CPU-s':>10} {'peak MiB':>9}  problems")
        for phase, r in results.items():
            rate = r["events"] / r["seconds"]
            label = f"{phase} ({args.jobs})" if phase.startswith("verify-parallel") else phase
            peak = f"{r['peak_mib']:.0f}" + (f" + {args.jobs}×≤{r['children_peak_mib']:.0f}"
                                            if r["children_peak_mib"] else "")
            print(f"{label:<26} {rate:>12,.0f} {rate / parse_rate:>8.2f} {r['seconds']:>8.1f} "
                  f"{r['events'] / r['cpu_seconds']:>10,.0f} {peak:>9}  {r['problems']}")
        for plain, signed in (("verify", "verify-signed"), ("verify-parallel", "verify-parallel-signed")):
            a, b = (results[p]["events"] / results[p]["seconds"] for p in (plain, signed))
            ca, cb = (results[p]["events"] / results[p]["cpu_seconds"] for p in (plain, signed))
            per_cp = (results[signed]["cpu_seconds"] - results[plain]["cpu_seconds"]) / max(checkpoints, 1) * 1e6
            print(f"{signed}: {b / a:.2f}× the rate of {plain} in wall time, {cb / ca:.2f}× in CPU time "
                  f"({per_cp:,.0f} CPU-µs more per checkpoint)")


if __name__ == "__main__":
    main()
