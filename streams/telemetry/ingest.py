"""``dmtwin ingest SOURCE PATH_OR_SPEC [options] (-o FILE | --kafka HOST:PORT)``: a source's events into a log.

Sources and their options are ``twin.sources``' (``perfmon``, ``meminfo``, ``virsh``, ``bitbrains``,
``synthetic``). Rows a source cannot read are reported on stderr as ``file:line: reason`` and
skipped; ``--strict`` makes any of them fail the command. ``--closed-loop`` runs a scenario source
(bitbrains, synthetic) through ``twin.scenario.simulate``, decisions and guests' answers included;
``--scenario FILE`` saves that scenario as JSON for ``dmtwin simulate``.

A file target (or ``-``, stdout) gets a log like ``dmtwin simulate -o``'s: hash-chained per host,
with ``LOG.rejects.jsonl`` beside it (the rows the source could not read and the inputs the twin
refused, where they would have been) and, with ``--key``, signed checkpoints in
``LOG.checkpoints.jsonl`` (``streams.audit.trail``). Other targets go to a *sink* made by
``sink_factory(target)``, e.g. ``kafka://`` (the worker chains and signs what it logs); the default
factory refuses them.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable, Iterator, Sequence

from twin.events import Decision, InputEvent
from twin.sources import SOURCES, ingest, options, scenario_of
from twin.sources.errors import SourceProblem

from ..kafka.security import add_kafka_security_options, security_from_args
from .jsonl import JsonlSink, Sink

__all__ = ["ingest_main", "build_parser", "file_sink", "OPTION_TYPES"]

OPTION_TYPES: dict[str, Callable[[str], Any]] = {
    "host": str, "vm": str, "domain": str, "at_ms": int, "host_mib": int, "reserve_mib": int,
    "minimum_mib": int, "maximum_mib": int, "utc_offset_min": int, "vms": int, "hosts": int,
    "overcommit": float, "duration_s": int, "time_scale": float, "start_s": int, "buffer_percent": int,
    "os": str, "policy": str, "seed": int, "mix": str, "linux_percent": int, "packing": str,
    "capacity_mib": int, "startup_mib": int,
}
"""Command-line options (``--host-mib`` → ``host_mib``) passed to the source when given."""

OPTION_HELP: dict[str, str] = {
    "host": "name of the Hyper-V host the events belong to", "vm": "name of the VM",
    "domain": "libvirt domain to read", "at_ms": "event time of the first row, ms since the epoch",
    "host_mib": "the host's physical memory, MiB", "reserve_mib": "the host's reserve, MiB",
    "minimum_mib": "the VMs' Minimum RAM, MiB", "maximum_mib": "the VMs' Maximum RAM, MiB",
    "utc_offset_min": "the source's clock offset from UTC, minutes", "vms": "how many VMs",
    "hosts": "how many hosts", "overcommit": "Σ VM maximum ÷ host memory",
    "duration_s": "seconds of event time to produce", "time_scale": "event seconds per second of the trace",
    "start_s": "skip the trace's first seconds", "buffer_percent": "the VMs' memory buffer, percent",
    "os": "guest OS: linux or windows", "policy": "balancer policy: hyperv, squeezed, mom or esx",
    "seed": "seed of the random workloads", "mix": "workload mix, e.g. steady:2,bursty:1",
    "linux_percent": "share of Linux guests, percent",
    "packing": "VMs onto hosts: first-fit (by decreasing Maximum) or round-robin (VM v on host v %% hosts)",
    "capacity_mib": "each host's memory for VMs, MiB (total = this + reserve)",
    "startup_mib": "Startup RAM = min(this, Maximum) instead of the first demand + buffer",
}
"""Help of each of ``OPTION_TYPES``; the sources that take the option are added to it."""


def file_sink(target: str, security: Any = None) -> Sink:
    """A JSON Lines file sink for ``target`` (overwritten; ``-`` is stdout); ``security`` is for
    factories that reach Kafka (``sink_for``)."""
    if "://" in target:
        raise ValueError(f"--to {target}: only files are supported here")
    return JsonlSink(target, mode="w")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dmtwin ingest", description=__doc__.split("\n\n")[0])
    parser.add_argument("source", choices=SOURCES, help="what to read: " + ", ".join(SOURCES))
    parser.add_argument("path", help="the file to read (perfmon, meminfo, virsh, bitbrains) or the fleet spec "
                                     "(synthetic, e.g. '3x12 mix=steady:2,bursty:1 seed=7')")
    parser.add_argument("-o", "--output", metavar="FILE", help="JSON Lines file to write (- for stdout)")
    parser.add_argument("--kafka", metavar="HOST:PORT", help="send to the twin's input topics on this Kafka broker "
                        "instead (kafka://HOST:PORT too)")
    parser.add_argument("--to", help=argparse.SUPPRESS)  # the old spelling: a file, or kafka://HOST:PORT
    parser.add_argument("--strict", action="store_true", help="exit 1 if any row could not be read")
    parser.add_argument("--closed-loop", action="store_true",
                        help="bitbrains/synthetic: simulate the balancer and the guests' answers too")
    parser.add_argument("--scenario", metavar="FILE", help="bitbrains/synthetic: also save the scenario (JSON)")
    parser.add_argument("--key", metavar="PRIVATE", help="file target: sign checkpoints into "
                        "TARGET.checkpoints.jsonl")
    parser.add_argument("--checkpoint-every", type=float, default=10.0, metavar="SECONDS",
                        help="with --key: a checkpoint per host every SECONDS of event time, and at the end")
    parser.add_argument("--no-floor", dest="floor", action="store_false", default=None,
                        help="meminfo: leave the Linux balloon floor out of committed memory")
    for name, kind in OPTION_TYPES.items():
        parser.add_argument("--" + name.replace("_", "-"), dest=name, type=kind, metavar=name.upper(),
                            help=OPTION_HELP.get(name, "source option") + f" ({', '.join(_takers(name))})")
    add_kafka_security_options(parser)
    return parser


def _takers(name: str) -> list[str]:
    return [source for source in SOURCES if name in options(source)]


def target_of(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str:
    """Where to write: ``kafka://HOST:PORT`` for ``--kafka``, else the file of ``-o`` (or the old ``--to``)."""
    given = [t for t in (args.kafka and "kafka://" + args.kafka.removeprefix("kafka://"), args.output, args.to) if t]
    if len(given) != 1:
        parser.error("say where the events go: -o FILE (- for stdout) or --kafka HOST:PORT, one of them")
    return str(given[0])


def _events(args: argparse.Namespace, opts: dict[str, Any], problems: list[SourceProblem],
            refused: list[tuple[InputEvent, Any]] | None = None) -> Iterator[InputEvent | Decision]:
    if not (args.closed_loop or args.scenario):
        yield from ingest(args.source, args.path, problems=problems, **opts)
        return
    from twin.errors import Rejected
    from twin.scenario import simulate
    from twin.sources.synthetic import reports

    scenario = scenario_of(args.source, args.path, problems=problems, **opts)
    if args.scenario:
        with open(args.scenario, "w", encoding="utf-8") as out:
            out.write(scenario.model_dump_json(indent=2) + "\n")
    if not args.closed_loop:
        yield from reports(scenario)
        return
    if refused is not None:  # a file target: they go to its rejects file, where they happened
        yield from simulate(scenario, refused=refused)
        return
    rejected: list[Rejected] = []
    yield from simulate(scenario, rejected=rejected)
    problems.extend(SourceProblem("simulate", None, f"left out: {r}") for r in rejected)


def ingest_main(argv: Sequence[str] | None = None, sink_factory: Callable[[str], Sink] = file_sink) -> int:
    """Run ``dmtwin ingest``; 0 on success, 1 with ``--strict`` and problems, 2 on errors."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.to = target_of(parser, args)
    opts = {name: getattr(args, name) for name in (*OPTION_TYPES, "floor") if getattr(args, name) is not None}
    problems: list[SourceProblem] = []
    try:
        if (args.closed_loop or args.scenario) and args.source not in ("bitbrains", "synthetic"):
            raise ValueError("--closed-loop and --scenario need a scenario source (bitbrains, synthetic)")
        unknown = sorted(set(opts) - set(options(args.source)))
        if unknown:
            raise ValueError(f"source {args.source!r} takes no option "
                             f"{', '.join('--' + u.replace('_', '-') for u in unknown)}")
        refused: list[tuple[InputEvent, Any]] = []
        extra = ""
        if "://" not in args.to:  # a log file (or stdout): chained, with its rejects and checkpoints
            from streams.audit.keys import load_signer
            from streams.audit.trail import write_trail

            signer = load_signer(args.key) if args.key else None
            stats = write_trail(_events(args, opts, problems, refused), args.to, signer,
                                round(args.checkpoint_every * 1000), f"ingest {args.source}", refused,
                                problems if args.to != "-" else None)
            count = stats.lines
            if args.to != "-":
                extra = f"; {stats.rejects} rejects in {args.to}.rejects.jsonl"
            if signer is not None:
                extra += f"; {stats.checkpoints} checkpoints signed by {signer.public_key.short}"
        else:
            if args.key:
                raise ValueError("--key is for file targets: the worker signs what it logs from Kafka")
            if args.to.startswith("kafka://"):  # through the --kafka-* flags and DMTWIN_KAFKA_* variables
                sink = sink_factory(args.to, security=security_from_args(args))  # type: ignore[call-arg]
            else:
                sink = sink_factory(args.to)
            count = 0
            try:
                for event in _events(args, opts, problems):
                    sink(event)
                    count += 1
            finally:
                close = getattr(sink, "close", None)
                if callable(close):
                    close()
    except (OSError, ValueError) as error:
        print(f"dmtwin ingest: {error}", file=sys.stderr)
        return 2
    for problem in problems:
        print(f"dmtwin ingest: {problem}", file=sys.stderr)
    for _, error in refused:
        print(f"dmtwin ingest: refused: {error}", file=sys.stderr)
    print(f"dmtwin ingest: {count} events from {args.source} written to {args.to}, "
          f"{len(problems) + len(refused)} problem(s){extra}", file=sys.stderr)
    return 1 if args.strict and (problems or refused) else 0


if __name__ == "__main__":
    raise SystemExit(ingest_main())
