"""``dmtwin top``: Hyper-V Manager's memory columns for every VM, live, in a terminal.

It reads the /hosts/ page of one or more running workers (each serves the hosts it owns) and
redraws a table per host every few seconds, for users without Grafana.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.request
from typing import Any, Sequence

from twin.report import table

__all__ = ["render", "top_main"]

COLUMNS = (
    ("VM", "name", "<"), ("Assigned", "assigned_mib", ">"), ("Demand", "demand_mib", ">"),
    ("Status", "status", "<"), ("Pressure%", "pressure_current", ">"), ("Avg%", "pressure_average", ">"),
    ("Balloon", "balloon_mib", ">"), ("Visible", "visible_mib", ">"), ("Paged", "smart_paging_mib", ">"),
    ("Min", "minimum_mib", ">"), ("Max", "maximum_mib", ">"), ("Weight", "weight", ">"),
)
"""Hyper-V Manager's columns (Assigned Memory, Memory Demand, Memory Status), then the rest."""


def fetch(urls: Sequence[str]) -> list[dict[str, Any]]:
    hosts: list[dict[str, Any]] = []
    for url in urls:
        with urllib.request.urlopen(url, timeout=5) as page:
            hosts += json.load(page)["hosts"]
    return sorted(hosts, key=lambda h: h["host"])


def render(hosts: list[dict[str, Any]]) -> str:
    """One block per host: its balancer counters, then its VMs (memory in MiB)."""
    if not hosts:
        return "no hosts yet: is a worker running, and is telemetry flowing?\n"
    out = []
    for h in hosts:
        b = h["balancer"]
        out.append(f"{h['host']}  ({h['policy']})  total {h['total_mib']} MiB  reserve {h['reserve_mib']} MiB  "
                   f"available {b['available_memory']} MiB  for balancing {b['available_memory_for_balancing']}"
                   f" MiB  avg pressure {b['average_pressure']:.0f}%  current {b['system_current_pressure']}%")
        out.append(table(h["vms"], COLUMNS) if h["vms"] else "  (no VMs running)")
        out.append("")
    return "\n".join(out)


def top_main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="dmtwin top", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", action="append", help="a worker's /hosts/ page; repeat for several "
                        "(default http://localhost:6066/hosts/)")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes")
    parser.add_argument("--once", action="store_true", help="print one table and exit")
    args = parser.parse_args(argv)
    urls = args.url or ["http://localhost:6066/hosts/"]
    try:
        while True:
            try:
                screen = render(fetch(urls))
            except OSError as error:
                screen = f"cannot read {', '.join(urls)}: {error}\n"
                if args.once:
                    print(screen, file=sys.stderr, end="")
                    return 1
            if args.once:
                sys.stdout.write(screen)
                return 0
            sys.stdout.write("\x1b[H\x1b[2J" + time.strftime("%H:%M:%S  dmtwin top\n\n") + screen)
            sys.stdout.flush()
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0
