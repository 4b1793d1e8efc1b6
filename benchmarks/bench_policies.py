"""The July capacity study (issue #14): every policy on the Bitbrains trace at its own time, both
capacities, side by side with the independent model's figures.

Run: .venv/bin/python benchmarks/bench_policies.py [--jobs 2] [--capacity 1.0 --capacity 0.7]
     [--policy hyperv ...] [--hosts-run N] [--json FILE]

The study is ``twin.study``'s (the reference's rules: 500 VMs, 2,016 steps of 300 s, VM v on host
v % 10, C = capacity × Σ 1.2·p95 ÷ 10); the reference rows are read from
``../shared/data/bitbrains-rnd-2013-07/REFERENCE.md``. Each policy's line is followed by the
reference's. ``--hosts-run N`` runs only the first N hosts (a quick look: totals then cover those
hosts only, the reference's do not). Per policy, "wall s" is the sum over its hosts' runs
(CPU-seconds of the twin) and events/s the events folded (inputs and decisions) per second of it;
the last line gives the whole run's wall time. Nothing here is asserted: figures are reported.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from twin.sources.bitbrains import DEFAULT_PATH, read_grid  # noqa: E402
from twin.study import format_table, host_result, merge, reference_rows, study_of_grid  # noqa: E402

REFERENCE = DEFAULT_PATH.parent / "REFERENCE.md"
_STUDIES = {}


def _task(args: tuple[float, str, int]):
    capacity, policy, host = args
    study = _STUDIES.get(capacity)
    if study is None:
        study = _STUDIES[capacity] = study_of_grid(read_grid(), hosts=10, capacity=capacity)
    began = time.perf_counter()
    result = host_result(study, host, policy)
    result.wall_s = time.perf_counter() - began
    return capacity, policy, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--capacity", type=float, action="append", help="× Σ 1.2·p95 (default 1.0 and 0.7)")
    parser.add_argument("--policy", action="append", help="policies (default: every one)")
    parser.add_argument("--jobs", type=int, default=2, help="processes (default 2)")
    parser.add_argument("--hosts-run", type=int, default=10, help="run only the first N of the 10 hosts")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args()
    from twin.study import STUDY_POLICIES as POLICIES

    capacities = args.capacity or [1.0, 0.7]
    policies = args.policy or list(POLICIES)
    tasks = [(c, p, h) for c in capacities for p in policies for h in range(args.hosts_run)]
    tasks.sort(key=lambda t: t[1] != "mom")  # the longest first
    began = time.perf_counter()
    parts: dict[tuple[float, str], list] = {}
    with ProcessPoolExecutor(args.jobs) as pool:
        for capacity, policy, result in pool.map(_task, tasks):
            parts.setdefault((capacity, policy), []).append(result)
    elapsed = time.perf_counter() - began
    rows = []
    for capacity in capacities:
        for policy in policies:
            rows.append({**merge(parts[(capacity, policy)]).as_dict(), "capacity": capacity})
    reference = reference_rows(REFERENCE.read_text(), 10) if REFERENCE.exists() else {}
    print(f"July study: 500 VMs, 7 days at trace time, 10 hosts ({args.hosts_run} run)")
    print(format_table(rows, reference))
    events = sum(r["events"] for r in rows)
    print(f"wall time {elapsed:.1f} s with {args.jobs} processes; {events:,} events folded, "
          f"{events / elapsed:,.0f} events/s")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
