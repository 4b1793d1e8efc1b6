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
TUNED = {1.0: "foresight:price_mib=200000,hold=3", 0.7: "foresight:price_mib=5600,hold=1"}
"""foresight's parameters chosen on July for each capacity (docs/whatif-policies.md): the price is
what a VM-step of Warning avoided is worth in MiB, the user's own exchange rate."""
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


def _plain(result) -> dict:
    data = dict(vars(result))
    data["step_total_mib"] = result.step_total_mib.tolist()
    return data


def report(paths: list[str], hosts: int | None = None) -> int:
    """The table of the first hosts every run in ``paths`` has finished (an interrupted run's)."""
    import numpy as np

    from twin.study import PolicyResult

    parts: dict[tuple[float, str], list] = {}
    for path in paths:
        for line in Path(path).read_text().splitlines():
            item = json.loads(line)
            data = item["result"]
            data["step_total_mib"] = np.array(data["step_total_mib"], dtype=np.int64)
            parts.setdefault((item["capacity"], item["policy"]), []).append(PolicyResult(**data))
    if hosts is not None:
        for run in [run for run, v in parts.items() if len(v) < hosts]:
            print(f"left out: {run[1]} at {run[0]}x has only {len(parts.pop(run))} hosts")
    hosts = min(len(v) for v in parts.values())
    rows = [{**merge(v[:hosts]).as_dict(), "capacity": c} for (c, _), v in parts.items()]
    rows.sort(key=lambda r: (-r["capacity"], r["policy"] != "hyperv", r["policy"]))
    reference = reference_rows(REFERENCE.read_text(), 10) if REFERENCE.exists() and hosts == 10 else {}
    print(f"July study: 500 VMs, 7 days at trace time, 10 hosts; {hosts} of 10 hosts run"
          + ("" if hosts == 10 else " (totals over those hosts only: the reference's rows, for all 10, are left out)"))
    print(format_table(rows, reference, goal=True))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--capacity", type=float, action="append", help="× Σ 1.2·p95 (default 1.0 and 0.7)")
    parser.add_argument("--policy", action="append",
                        help="policies (default: every one, foresight with the parameters in TUNED)")
    parser.add_argument("--jobs", type=int, default=2, help="processes (default 2)")
    parser.add_argument("--hosts-run", type=int, default=10, help="run only the first N of the 10 hosts")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    parser.add_argument("--only-at", action="append", default=[], metavar="CAP=POLICY",
                        help="run POLICY at capacity CAP only (e.g. 0.7=foresight:price_mib=4096)")
    parser.add_argument("--parts", metavar="FILE", action="append",
                        help="append each host's result to FILE (JSON Lines) as it comes; with --report, "
                             "print the table of what the FILEs hold (the first hosts every run has)")
    parser.add_argument("--report", action="store_true", help="only print the table of the --parts FILEs")
    parser.add_argument("--report-hosts", type=int, help="with --report: the first N hosts (runs with fewer "
                        "are left out and named)")
    args = parser.parse_args()
    if args.report:
        return report(args.parts, args.report_hosts)
    args.parts = args.parts[0] if args.parts else None
    from twin.study import STUDY_POLICIES as POLICIES

    capacities = args.capacity or [1.0, 0.7]
    policies = args.policy or list(POLICIES)
    only = [tuple(x.split("=", 1)) for x in args.only_at]
    if not args.policy:  # foresight with the parameters chosen for each capacity
        policies.remove("foresight")
        for c in capacities:
            tuned = TUNED.get(c, "foresight")
            policies.append(tuned)
            only.append((str(c), tuned))
    runs = [(c, p) for c in capacities for p in policies if not any(p == q and c != float(k) for k, q in only)]
    # host by host, every run: at any moment the first hosts are done for all (see --parts)
    tasks = [(c, p, h) for h in range(args.hosts_run) for c, p in runs]
    began = time.perf_counter()
    parts: dict[tuple[float, str], list] = {}
    with ProcessPoolExecutor(args.jobs) as pool:
        for capacity, policy, result in pool.map(_task, tasks):
            parts.setdefault((capacity, policy), []).append(result)
            if args.parts:
                with open(args.parts, "a", encoding="utf-8") as out:
                    out.write(json.dumps({"capacity": capacity, "policy": policy, "host": len(parts[(capacity, policy)]) - 1,
                                          "result": _plain(result)}) + "\n")
    elapsed = time.perf_counter() - began
    rows = [{**merge(parts[run]).as_dict(), "capacity": run[0]} for run in runs]
    reference = reference_rows(REFERENCE.read_text(), 10) if REFERENCE.exists() else {}
    print(f"July study: 500 VMs, 7 days at trace time, 10 hosts ({args.hosts_run} run)")
    print(format_table(rows, reference, goal=True))
    events = sum(r["events"] for r in rows)
    print(f"wall time {elapsed:.1f} s with {args.jobs} processes; {events:,} events folded, "
          f"{events / elapsed:,.0f} events/s")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
