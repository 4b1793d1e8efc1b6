"""A guest agent: this Linux machine's memory, read every second, as the twin's input events.

``run_agent`` reads ``/proc/meminfo`` (and ``/sys/kernel/debug/hv-balloon`` when it may) on a fixed
period and hands each event to a *sink*, any callable taking one event: ``JsonlSink`` writes JSON
Lines (``twin.log.encode``), a Kafka producer can be plugged in the same way. It first emits a
prologue, ``HostJoined`` then ``VmStarted`` (settings from the guest's view, see
``twin.sources.meminfo``), so that its output replays on its own; then one ``GuestStatusReported``
per period, carrying what Linux's hv_balloon driver would send (DOMAIN.md §2.4).

Event time is this machine's clock (never going backwards); the parsing itself is
``twin.sources.meminfo``'s, shared with recorded meminfo files.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Callable, Sequence

from twin.events import InputEvent
from twin.sources.errors import Problems, SourceProblem
from twin.sources.meminfo import (
    HvBalloon,
    Meminfo,
    parse_hv_balloon,
    parse_meminfo,
    vm_sample,
)
from twin.sources.observed import (
    DEFAULT_RESERVE_MIB,
    HYPERV_DEFAULT_MINIMUM_MIB,
    ObservedHost,
    Snapshot,
)

from .jsonl import JsonlSink, Sink

__all__ = ["Sink", "JsonlSink", "run_agent", "agent_main", "build_parser", "HV_BALLOON_PATH"]

HV_BALLOON_PATH = "/sys/kernel/debug/hv-balloon"


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except OSError:  # absent, or debugfs without root
        return None


def read_guest(proc_root: str | Path = "/proc", balloon_path: str | Path | None = HV_BALLOON_PATH,
               problems: Problems | None = None) -> tuple[Meminfo | None, HvBalloon | None]:
    """This machine's meminfo and, when readable, its hv-balloon state."""
    problems = problems or Problems(f"{proc_root}/meminfo", [])
    text = _read(Path(proc_root) / "meminfo")
    meminfo = parse_meminfo(text, problems) if text is not None else None
    balloon_text = _read(Path(balloon_path)) if balloon_path else None
    balloon = parse_hv_balloon(balloon_text, problems) if balloon_text else None
    return meminfo, balloon


def run_agent(host: str, vm: str, sink: Sink, interval_s: float = 1.0, count: int | None = None,
              proc_root: str = "/proc", *, balloon_path: str | None = HV_BALLOON_PATH,
              host_mib: int | None = None, reserve_mib: int = DEFAULT_RESERVE_MIB,
              minimum_mib: int = HYPERV_DEFAULT_MINIMUM_MIB, maximum_mib: int | None = None,
              stop: threading.Event | None = None, clock: Callable[[], float] = time.time,
              problems: list[SourceProblem] | None = None) -> int:
    """Report this guest every ``interval_s`` seconds, ``count`` times (forever when None, or until
    ``stop`` is set); return how many events went to ``sink``.

    The host is sized ``host_mib`` or, by default, the VM's Maximum RAM (the driver's
    ``max_dynamic_page_count``, else what the guest sees) + ``reserve_mib``. A reading that fails
    (unreadable or malformed meminfo) is skipped and added to ``problems`` when given.
    """
    report = Problems(f"{proc_root}/meminfo", problems if problems is not None else [])
    observed = ObservedHost(host, report, total_mib=host_mib, reserve_mib=reserve_mib, minimum_mib=minimum_mib,
                            maximum_mib=maximum_mib)
    stop = stop or threading.Event()
    sent, reports, last_ms, joined = 0, 0, 0, False
    next_at = time.monotonic()
    while count is None or reports < count:
        meminfo, balloon = read_guest(proc_root, balloon_path, report)
        at_ms = last_ms = max(last_ms, int(clock() * 1000))
        if meminfo is not None:
            sample = vm_sample(vm, meminfo, balloon)
            events: list[InputEvent] = []
            if not joined:
                capacity = max(sample.memory_mib, maximum_mib or sample.maximum_mib or 0)
                joined_event = observed.join(at_ms, capacity)
                observed.total_mib = joined_event.total_mib
                events.append(joined_event)
                joined = True
            events += observed.step(Snapshot(at_ms, 0, [sample]))
            for event in events:
                sink(event)
            sent += len(events)
        reports += 1
        if count is not None and reports >= count:
            break
        next_at += interval_s
        if stop.wait(max(0.0, next_at - time.monotonic())):
            break
    return sent


def build_parser():  # type: ignore[no-untyped-def]
    """``dmtwin agent``'s options."""
    import argparse
    import socket

    parser = argparse.ArgumentParser(prog="dmtwin agent", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="hyperv-host", help="name of the Hyper-V host this guest runs on")
    parser.add_argument("--vm", default=socket.gethostname(), help="name of this VM (default: hostname)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between reports (default 1)")
    parser.add_argument("--count", type=int, help="stop after this many reports (default: until Ctrl-C)")
    parser.add_argument("--host-mib", type=int, help="the host's memory (default: VM maximum + reserve)")
    parser.add_argument("--proc-root", default="/proc", help="where /proc is mounted (default /proc)")
    parser.add_argument("-o", "--output", metavar="FILE", help="JSON Lines file to append to (default stdout)")
    parser.add_argument("--kafka", metavar="HOST:PORT", help="send to the twin's input topics on this Kafka broker "
                        "instead (kafka://HOST:PORT too)")
    parser.add_argument("--to", help=argparse.SUPPRESS)  # the old spelling: a file, or kafka://HOST:PORT
    from ..kafka.security import add_kafka_security_options

    add_kafka_security_options(parser)
    return parser


def agent_main(argv: Sequence[str] | None = None) -> int:
    """``dmtwin agent --host H --vm V [--interval 1] [--count N] [-o FILE | --kafka HOST:PORT]``."""
    from ..kafka.security import security_from_args

    parser = build_parser()
    args = parser.parse_args(argv)
    problems: list[SourceProblem] = []
    from .ingest import target_of
    from .sink import sink_for

    if not (args.kafka or args.output or args.to):
        args.output = "-"
    args.to = target_of(parser, args)
    try:
        security = security_from_args(args) if args.to.startswith("kafka://") else None
        sink = sink_for(args.to, append=True, security=security)
    except (OSError, ValueError) as error:
        print(f"dmtwin agent: {error}", file=sys.stderr)
        return 2
    try:
        run_agent(args.host, args.vm, sink, args.interval, args.count, args.proc_root,
                  host_mib=args.host_mib, problems=problems)
    except KeyboardInterrupt:
        pass
    finally:
        sink.close()  # type: ignore[attr-defined]
    for problem in problems:
        print(f"dmtwin agent: {problem}", file=sys.stderr)
    print(f"dmtwin agent: {sink.count} events sent to {args.to}", file=sys.stderr)  # type: ignore[attr-defined]
    return 0
