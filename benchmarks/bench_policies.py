"""The July capacity study (issue #14): every policy on the Bitbrains trace at its own time, both
capacities, side by side with the independent model's figures.

Run: .venv/bin/python benchmarks/bench_policies.py [--jobs 2] [--capacity 1.0 --capacity 0.7]
     [--policy hyperv ...] [--hosts-run N] [--json FILE]

The study is ``twin.study``'s (the reference's rules: 500 VMs, 2,016 steps of 300 s, VM v on host
v % 10, C = capacity × Σ 1.2·p95 ÷ 10); the reference rows are read from
``../shared/data/bitbrains-rnd-2013-07/REFERENCE.md``. Each line shows dmtwin, then the reference
in brackets. ``--hosts-run N`` runs only the first N hosts (a quick look: totals then cover those
hosts only, the reference's do not). Wall time is the sum over the hosts' runs (CPU-seconds of the
twin); events/s is events folded (inputs and decisions) per second of that.
Nothing here is asserted: the figures are reported, not pinned.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from twin.sources.bitbrains import DEFAULT_PATH, read_grid  # noqa: E402
from twin.study import host_result, merge, study_of_grid  # noqa: E402

REFERENCE = DEFAULT_PATH.parent / "REFERENCE.md"
COLUMNS = ("warning_vm_h", "low_vm_h", "short_gib_h", "mean_gib", "peak_gib", "max_host_over_c", "saved_percent",
           "moved_tib", "changes")
HEAD = ("Warning VM-h", "Low VM-h", "short GiB-h", "mean GiB", "peak GiB", "max host/C", "saved %", "moved TiB",
        "changes")
PEERS = ("hyperv", "squeezed", "mom", "esx")


def reference(hosts: int) -> dict[tuple[str, float], dict[str, float]]:
    """(policy, capacity) → the reference's figures for ``hosts`` hosts."""
    out = {}
    if not REFERENCE.exists():
        return out
    for line in REFERENCE.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 13 or not re.fullmatch(r"\d+", cells[1]) or int(cells[1]) != hosts:
            continue
        values = [float(c.replace(",", "")) for c in cells[4:]]
        out[(cells[0], float(cells[2].rstrip("x")))] = dict(zip(COLUMNS, values))
    return out


_STUDIES = {}


def _task(args: tuple[float, str, int]):
    capacity, policy, host = args
    study = _STUDIES.get(capacity)
    if study is None:
        study = _STUDIES[capacity] = study_of_grid(read_grid(), hosts=10, capacity=capacity)
    return capacity, policy, host_result(study, host, policy)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--capacity", type=float, action="append", help="× Σ 1.2·p95 (default 1.0 and 0.7)")
    parser.add_argument("--policy", action="append", help="policies (default: every one)")
    parser.add_argument("--jobs", type=int, default=2, help="processes (default 2)")
    parser.add_argument("--hosts-run", type=int, default=10, help="run only the first N of the 10 hosts")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args()
    from twin.policies import POLICIES

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
    ref = reference(10)
    rows = []
    print(f"July study, 10 hosts, {args.hosts_run} run; dmtwin [reference]")
    for capacity in capacities:
        print(f"\ncapacity {capacity}x")
        print(f"{'policy':<9} " + " ".join(f"{h:>22}" for h in HEAD) + f" {'wall s':>8} {'events/s':>9}")
        for policy in policies:
            r = merge(parts[(capacity, policy)]).as_dict()
            r["capacity"] = capacity
            rows.append(r)
            theirs = ref.get((policy, capacity), {})
            cells = []
            for c in COLUMNS:
                mine = f"{r[c]:,.2f}" if c in ("max_host_over_c", "moved_tib") else f"{r[c]:,.1f}"
                if c == "changes":
                    mine = f"{r[c]:,}"
                other = theirs.get(c)
                cells.append(f"{mine:>11} [{other:>8,.1f}]" if other is not None else f"{mine:>11} [{'-':>8}]")
            print(f"{policy:<9} " + " ".join(f"{c:>22}" for c in cells)
                  + f" {r['wall_s']:>8.1f} {r['events_per_s']:>9,.0f}")
        ours = [r for r in rows if r["capacity"] == capacity]
        peers = [r for r in ours if r["policy"] in PEERS]
        best = min(peers, key=lambda r: r["warning_vm_h"]) if peers else None
        for r in ours:
            if best and r["policy"] not in PEERS:
                print(f"  {r['policy']} vs best peer {best['policy']}: Warning "
                      f"{r['warning_vm_h'] / best['warning_vm_h']:.2f}x (goal ≤ 0.70x), mean memory "
                      f"{r['mean_gib'] / best['mean_gib']:.2f}x (goal ≤ 1.00x)")
    events = sum(r["events"] for r in rows)
    print(f"\nwall time {elapsed:.1f} s with {args.jobs} processes; {events:,} events, "
          f"{events / elapsed:,.0f} events/s overall")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
