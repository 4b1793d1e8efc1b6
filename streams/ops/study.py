"""``dmtwin study bitbrains [PATH] [options]``: a capacity study at the trace's own time, every policy.

The study is ``twin.study``'s: each VM's samples at trace time on a common week (5-minute samples
stay 5 minutes apart, rounds at each policy's interval, quiet rounds skipped exactly), simulated
guests, the truth of each moment measured. Options choose the packing, the hosts and their
capacity, and the Startup/Minimum/buffer rules; ``--reference FILE`` prints the rows of an
independent model's table (``REFERENCE.md``) under dmtwin's. ``--jobs`` runs hosts in processes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Sequence

__all__ = ["study_main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    from twin.sources.bitbrains import DEFAULT_PATH

    p = argparse.ArgumentParser(prog="dmtwin study", description=__doc__.split("\n\n")[0])
    p.add_argument("source", choices=("bitbrains",))
    p.add_argument("path", nargs="?", default=str(DEFAULT_PATH), help="memory.csv(.gz) (default: the workspace's)")
    p.add_argument("--hosts", type=int, default=10, help="number of hosts (default 10)")
    p.add_argument("--capacity", type=float, action="append",
                   help="each host's capacity as a share of Σ 1.2·p95(demand) ÷ hosts (repeat; default 1.0)")
    p.add_argument("--capacity-mib", type=int, help="each host's capacity for VMs in MiB (instead of --capacity)")
    p.add_argument("--packing", choices=("round-robin", "first-fit"), default="round-robin",
                   help="round-robin: VM v on host v %% hosts; first-fit: by decreasing p95 (default round-robin)")
    p.add_argument("--minimum-mib", type=int, default=512, help="Minimum = min(this, Maximum) (default 512)")
    p.add_argument("--startup-mib", type=int, default=1024, help="Startup = min(this, Maximum) (default 1024)")
    p.add_argument("--buffer-percent", type=int, default=20, help="memory buffer (default 20)")
    p.add_argument("--steps", type=int, default=2016, help="steps of 300 s per VM (default 2016: 7 days)")
    p.add_argument("--vms", type=int, help="only the first N VMs by number")
    p.add_argument("--policy", action="append", help="a policy (repeat), or all (default)")
    p.add_argument("--reference", metavar="FILE", help="an independent model's REFERENCE.md, shown beside")
    p.add_argument("--jobs", type=int, default=1, help="processes (default 1)")
    p.add_argument("--json", action="store_true", help="print JSON")
    return p


_CACHE: dict = {}


def _task(job: tuple) -> tuple:
    from twin.sources.bitbrains import read_grid
    from twin.study import host_result, study_of_grid

    key, capacity, policy, host = job
    path, steps, vms, hosts, capacity_mib, packing, minimum, startup, buffer = key
    grid = _CACHE.get(("grid", path, steps, vms))
    if grid is None:
        grid = _CACHE[("grid", path, steps, vms)] = read_grid(path, steps=steps, vms=vms)
    study = _CACHE.get((key, capacity))
    if study is None:
        study = _CACHE[(key, capacity)] = study_of_grid(
            grid, hosts=hosts, capacity=capacity, capacity_mib=capacity_mib, packing=packing,
            minimum_mib=minimum, startup_mib=startup, buffer_percent=buffer)
    began = time.perf_counter()
    result = host_result(study, host, policy)
    result.wall_s = time.perf_counter() - began
    return capacity, policy, result


def study_main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from twin.study import STUDY_POLICIES as POLICIES
    from twin.study import format_table, merge, reference_rows

    policies = list(POLICIES) if not args.policy or "all" in args.policy else args.policy
    unknown = [p for p in policies if p.removesuffix("+giveup").partition(":")[0] not in POLICIES]
    if unknown:
        print(f"dmtwin study: no policy {', '.join(unknown)} (there are {', '.join(POLICIES)})", file=sys.stderr)
        return 2
    from twin.study import own_policy

    for policy in policies:  # parameters of dmtwin's own policies: refused before any work
        try:
            own_policy(policy)
        except ValueError as error:
            print(f"dmtwin study: --policy {policy}: {error}", file=sys.stderr)
            return 2
    capacities = [None] if args.capacity_mib else (args.capacity or [1.0])
    key = (args.path, args.steps, args.vms, args.hosts, args.capacity_mib, args.packing, args.minimum_mib,
           args.startup_mib, args.buffer_percent)
    jobs = [(key, c if c is not None else 1.0, p, h) for c in capacities for p in policies for h in range(args.hosts)]
    began = time.perf_counter()
    parts: dict = {}
    try:
        if args.jobs > 1:
            with ProcessPoolExecutor(args.jobs) as pool:
                done = list(pool.map(_task, jobs))
        else:
            done = [_task(job) for job in jobs]
    except (OSError, ValueError) as error:
        print(f"dmtwin study: {error}", file=sys.stderr)
        return 2
    for capacity, policy, result in done:
        parts.setdefault((capacity, policy), []).append(result)
    rows = [{**merge(parts[(c if c is not None else 1.0, p)]).as_dict(), "capacity": c if c is not None else 1.0}
            for c in capacities for p in policies]
    elapsed = time.perf_counter() - began
    if args.json:
        print(json.dumps({"rows": rows, "wall_s": elapsed}, indent=1))
        return 0
    reference = {}
    if args.reference:
        with open(args.reference, encoding="utf-8") as f:
            reference = reference_rows(f.read(), args.hosts)
    print(f"study of {args.path}: {args.hosts} hosts, {args.packing}, Minimum {args.minimum_mib}, "
          f"Startup {args.startup_mib}, buffer {args.buffer_percent} %")
    sys.stdout.write(format_table(rows, reference))
    events = sum(r["events"] for r in rows)
    print(f"wall time {elapsed:.1f} s, {events:,} events, {events / elapsed:,.0f} events/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(study_main())
