"""How much memory Hyper-V Dynamic Memory saves on real VMs, and how often they reach Warning.

Packs the first VMs of the Bitbrains trace onto hosts, runs the twin closed loop (balancer +
simulated guests) and compares with static memory at Maximum RAM. See examples/bitbrains.md.

    .venv/bin/python examples/bitbrains.py --vms 50 --hours 24 --time-scale 60 --host-gib 48
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from twin.log import open_log, write_log
from twin.scenario import simulate
from twin.sources.bitbrains import DEFAULT_PATH, bitbrains_scenario, measure
from twin.sources.errors import SourceProblem


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_PATH, help="Bitbrains memory.csv.gz")
    parser.add_argument("--vms", type=int, default=50, help="the first N VMs of the trace (default 50)")
    parser.add_argument("--hours", type=float, default=24, help="hours of trace to replay (default 24)")
    parser.add_argument("--time-scale", type=float, default=60, help="trace seconds per run second (default 60)")
    parser.add_argument("--host-gib", type=int, default=48, help="memory per host, GiB (default 48)")
    parser.add_argument("--reserve-gib", type=int, default=2, help="host reserve, GiB (default 2)")
    parser.add_argument("--overcommit", type=float, default=4.0,
                        help="Σ Maximum RAM per host ÷ (host − reserve) when packing (default 4)")
    parser.add_argument("--policy", default="hyperv", choices=("hyperv", "squeezed", "mom", "esx"))
    parser.add_argument("--log", help="also write the event log here (JSON Lines, .gz allowed)")
    parser.add_argument("--json", action="store_true", help="print the measurement as JSON")
    args = parser.parse_args(argv)

    problems: list[SourceProblem] = []
    scenario = bitbrains_scenario(args.data, vms=args.vms, host_mib=args.host_gib * 1024,
                                  reserve_mib=args.reserve_gib * 1024, overcommit=args.overcommit,
                                  duration_s=int(args.hours * 3600), time_scale=args.time_scale,
                                  policy=args.policy, problems=problems)
    events = list(simulate(scenario, rejected=[]))
    if args.log:
        with open_log(args.log, "w") as out:
            write_log(events, out)
    result = measure(events)
    data = {"hosts": len(scenario.hosts), "run_seconds": scenario.duration_s, "left_out": len(problems),
            **result.as_dict()}
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    gib = 1024
    print(f"{data['vms']} VMs on {data['hosts']} host(s) of {args.host_gib} GiB, {args.hours:g} h of trace "
          f"in {scenario.duration_s} s ({args.time_scale:g}x), policy {args.policy}; "
          f"{len(problems)} VM(s) left out")
    print(f"  static at Maximum RAM   {data['mean_maximum_mib'] / gib:10.1f} GiB")
    print(f"  Dynamic Memory assigned {data['mean_assigned_mib'] / gib:10.1f} GiB on average, "
          f"{data['peak_assigned_mib'] / gib:.1f} GiB at peak")
    print(f"  guests' demand          {data['mean_demand_mib'] / gib:10.1f} GiB on average")
    print(f"  memory saved            {data['saved_percent']:10.1f} %  (median VM: "
          f"{data['median_vm_saved_percent']:.1f} %)")
    print(f"  Memory Status Warning   {data['warning_percent']:10.2f} %  of {data['reports']} status reports; "
          f"{data['vms_ever_warning']} VM(s) ever in Warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
