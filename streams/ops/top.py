"""``dmtwin top``: Hyper-V Manager's memory columns for every VM, live, in a terminal.

It reads the /hosts/ page of one or more running workers (each serves the hosts it owns) and
redraws a table per host every few seconds, for users without Grafana. ``--sort`` orders the VMs
by a column; on a terminal the Memory Status is coloured (``--color``, ``NO_COLOR``); ``--json``
prints the pages' hosts once, as JSON.

A page that answers but is not a worker's (another program on the port) ends ``top`` at once with
one line saying so; a worker not listening yet is waited for, its error shown on the screen
(``--once`` fails instead, exit 5).
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
from typing import Any, Sequence

from twin.report import table

__all__ = ["render", "top_main", "build_parser", "fetch", "NotAWorker", "SORT_KEYS"]

COLUMNS = (
    ("VM", "name", "<"), ("Assigned", "assigned_mib", ">"), ("Demand", "demand_mib", ">"),
    ("Status", "status", "<"), ("Pressure%", "pressure_current", ">"), ("Avg%", "pressure_average", ">"),
    ("Balloon", "balloon_mib", ">"), ("Visible", "visible_mib", ">"), ("Paged", "smart_paging_mib", ">"),
    ("Min", "minimum_mib", ">"), ("Max", "maximum_mib", ">"), ("Weight", "weight", ">"),
)
"""Hyper-V Manager's columns (Assigned Memory, Memory Demand, Memory Status), then the rest."""

SORT_KEYS = {title.lower().rstrip("%"): key for title, key, _ in COLUMNS}
"""``--sort`` names: the column titles in lower case (``vm``, ``assigned``, ``demand``, ``status``, …)."""

STATUS_COLOURS = {"OK": "32", "Low": "33", "Warning": "1;31", "Paging": "1;35"}
"""ANSI colours of Memory Status: OK green, Low yellow, Warning bold red, Paging bold magenta."""

STATUS_ORDER = {"Paging": 0, "Warning": 1, "Low": 2, "OK": 3}
"""``--sort status`` puts the VMs that need attention first."""


class NotAWorker(Exception):
    """A URL answered, but not with a dmtwin worker's /hosts/ page."""


def fetch(urls: Sequence[str]) -> list[dict[str, Any]]:
    """The hosts of every page, sorted by name; ``NotAWorker`` if a page is not a worker's,
    ``OSError`` if one cannot be read."""
    hosts: list[dict[str, Any]] = []
    for url in urls:
        try:
            with urllib.request.urlopen(url, timeout=5) as page:
                body = page.read()
        except urllib.error.HTTPError as error:
            raise NotAWorker(f"{url} answered HTTP {error.code} {error.reason}: it is not a dmtwin worker's "
                             "/hosts/ page (another program on that port?); give the worker's page with --url, "
                             "or start the worker with --web-port PORT") from None
        try:
            data = json.loads(body)
            hosts += data["hosts"]
        except (ValueError, KeyError, TypeError):
            raise NotAWorker(f"{url} answered, but not with a dmtwin worker's /hosts/ JSON (another program on "
                             "that port?); give the worker's page with --url") from None
    return sorted(hosts, key=lambda h: h["host"])


def _sorted(vms: list[dict[str, Any]], key: str, reverse: bool) -> list[dict[str, Any]]:
    if key == "name":
        return sorted(vms, key=lambda vm: vm["name"], reverse=reverse)
    if key == "status":
        return sorted(vms, key=lambda vm: (STATUS_ORDER.get(vm.get("status") or "", 4), vm["name"]), reverse=reverse)
    # numbers: largest first, like top; VMs without a value last
    return sorted(vms, key=lambda vm: (vm.get(key) is None, -(vm.get(key) or 0), vm["name"]), reverse=reverse)


def _colour(text: str, vms: list[dict[str, Any]]) -> str:
    """``text`` (a table of ``vms``, header first) with each VM's Status cell coloured."""
    lines = text.split("\n")
    header = lines[0]
    start = header.index("Status")
    end = header.index("Pressure%")
    for i, vm in enumerate(vms, start=1):
        code = STATUS_COLOURS.get(vm.get("status") or "")
        if code:
            line = lines[i]
            lines[i] = f"{line[:start]}\x1b[{code}m{line[start:end].rstrip()}\x1b[0m" + \
                " " * (len(line[start:end]) - len(line[start:end].rstrip())) + line[end:]
    return "\n".join(lines)


def render(hosts: list[dict[str, Any]], sort: str = "vm", reverse: bool = False, colour: bool = False) -> str:
    """One block per host: its balancer counters, then its VMs (memory in MiB), sorted by the
    column ``sort`` (``SORT_KEYS``), the Status coloured with ``colour``."""
    if not hosts:
        return "no hosts yet: is a worker running, and is telemetry flowing?\n"
    out = []
    for h in hosts:
        b = h["balancer"]
        out.append(f"{h['host']}  ({h['policy']})  total {h['total_mib']} MiB  reserve {h['reserve_mib']} MiB  "
                   f"available {b['available_memory']} MiB  for balancing {b['available_memory_for_balancing']}"
                   f" MiB  avg pressure {b['average_pressure']:.0f}%  current {b['system_current_pressure']}%")
        if h["vms"]:
            vms = _sorted(h["vms"], SORT_KEYS[sort], reverse)
            text = table(vms, COLUMNS)
            out.append(_colour(text, vms) if colour else text)
        else:
            out.append("  (no VMs running)")
        out.append("")
    return "\n".join(out)


def _use_colour(choice: str) -> bool:
    if choice != "auto":
        return choice == "always"
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


def build_parser():  # type: ignore[no-untyped-def]
    """``dmtwin top``'s options."""
    import argparse

    parser = argparse.ArgumentParser(prog="dmtwin top", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", action="append", help="a worker's /hosts/ page; repeat for several "
                        "(default http://localhost:6066/hosts/)")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes (default 2)")
    parser.add_argument("--once", action="store_true", help="print one table and exit")
    parser.add_argument("--sort", choices=tuple(SORT_KEYS), default="vm", metavar="COLUMN",
                        help="order the VMs by this column: " + ", ".join(SORT_KEYS) +
                        " (default vm; numbers largest first, status: Paging, Warning, Low, OK)")
    parser.add_argument("--reverse", action="store_true", help="the other way round")
    parser.add_argument("--color", "--colour", choices=("auto", "always", "never"), default="auto",
                        help="colour the Memory Status: auto (on a terminal, unless NO_COLOR is set), always, never")
    parser.add_argument("--json", action="store_true", help="print the hosts of the pages once, as JSON, and exit")
    parser.add_argument("--title", metavar="TEXT", default="",
                        help="lines to keep above the table at every redraw (scripts/run's URLs)")
    return parser


def top_main(argv: Sequence[str] | None = None) -> int:
    from streams.cli.failure import UNREACHABLE, Failure

    args = build_parser().parse_args(argv)
    urls = args.url or ["http://localhost:6066/hosts/"]
    colour = _use_colour(args.color)
    once = args.once or args.json
    try:
        while True:
            try:
                hosts = fetch(urls)
                if args.json:
                    sys.stdout.write(json.dumps({"hosts": hosts}, indent=2, ensure_ascii=False) + "\n")
                    return 0
                screen = render(hosts, args.sort, args.reverse, colour)
            except NotAWorker as error:
                raise Failure(str(error), UNREACHABLE) from None
            except OSError as error:
                reason = getattr(error, "reason", error)
                if once:
                    raise Failure(f"cannot read {', '.join(urls)} ({reason}): is the worker running? "
                                  "(dmtwin worker, or scripts/run)", UNREACHABLE) from None
                screen = f"waiting for {', '.join(urls)}: {reason} (is the worker running?)\n"
            if once:
                sys.stdout.write(screen)
                return 0
            title = args.title.rstrip("\n") + "\n\n" if args.title else ""
            sys.stdout.write("\x1b[H\x1b[2J" + title + time.strftime("%H:%M:%S  dmtwin top") +
                             f"  (sorted by {args.sort}{', reversed' if args.reverse else ''}; Ctrl-C to quit)\n\n" +
                             screen)
            sys.stdout.flush()
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0
