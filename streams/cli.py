"""The ``dmtwin`` command line.

Offline commands (``simulate``, ``replay``, ``schema``) use only the pure core in ``twin``; the
commands that need Kafka or Faust import them lazily, so the offline ones start fast and work
without a broker.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

__all__ = ["main"]


def _simulate(args: argparse.Namespace) -> int:
    if args.to:
        return _simulate_to_kafka(args)
    from twin.errors import Rejected
    from twin.log import open_log, write_log
    from twin.scenario import load_scenario, simulate

    scenario = load_scenario(args.scenario)
    rejected: list[Rejected] = []
    events = simulate(scenario, rejected=rejected)
    if args.output in (None, "-"):
        count = write_log(events, sys.stdout)
    else:
        with open_log(args.output, "w") as out:
            count = write_log(events, out)
    for error in rejected:
        print(f"dmtwin simulate: left out: {error}", file=sys.stderr)
    where = args.output if args.output not in (None, "-") else "stdout"
    print(f"dmtwin simulate: {count} events written to {where}", file=sys.stderr)
    return 0


def _simulate_to_kafka(args: argparse.Namespace) -> int:
    import asyncio

    from twin.scenario import load_scenario

    from .app import Settings
    from .feed import feed, parse_kafka_url

    settings = Settings()
    scenario = load_scenario(args.scenario)
    stats = asyncio.run(feed(scenario, parse_kafka_url(args.to), settings.topics, speed=args.speed,
                             per_guest=args.per_guest, partitions=settings.partitions))
    print(f"dmtwin simulate: {stats.seconds} s of event time, {stats.reports} reports in "
          f"{stats.messages} messages, {stats.answers} commands answered", file=sys.stderr)
    return 0


def _worker(args: argparse.Namespace) -> int:
    import asyncio
    import dataclasses

    import faust

    from .app import Settings, Worker
    from .feed import ensure_topics

    overrides = {k: v for k, v in {
        "broker": args.broker, "store": args.store, "data_dir": args.data_dir and Path(args.data_dir),
        "partitions": args.partitions, "web_port": args.web_port, "metrics_port": args.metrics_port,
        "app_id": args.app_id}.items() if v is not None}
    settings = dataclasses.replace(Settings(), **overrides)
    # Topics first: a consumer group ignores topics that do not exist when it joins.
    asyncio.run(ensure_topics(settings.broker, settings.topics, settings.partitions))
    worker = Worker(settings)
    if settings.metrics_port:
        from .metrics import serve

        serve(worker.registry, settings.metrics_port)
    print(f"dmtwin worker: broker {settings.broker}, state in {settings.data_dir}; hosts at "
          f"http://localhost:{settings.web_port}/hosts/, metrics at "
          f"http://localhost:{settings.metrics_port}/metrics", file=sys.stderr)
    try:
        faust.Worker(worker.app, loglevel=args.loglevel).execute_from_commandline()
    except SystemExit as done:
        return int(done.code or 0)
    return 0


def _replay(args: argparse.Namespace) -> int:
    from twin.log import open_log, replay
    from twin.report import summary, to_json, to_text

    with (open_log(args.log) if args.log != "-" else sys.stdin) as lines:
        result = replay(lines)
    data = summary(result, decisions=not args.no_decisions)
    sys.stdout.write(to_json(data) + "\n" if args.json else to_text(data))
    if args.rejects:
        with open(args.rejects, "w", encoding="utf-8") as out:
            for error, line in zip(result.rejected, result.rejected_lines):
                out.write(json.dumps({**error.as_dict(), "line": line}, sort_keys=True) + "\n")
    for error in result.rejected:
        print(f"dmtwin replay: rejected {error}", file=sys.stderr)
    if args.serve is not None:
        from .metrics import serve_replay

        serve_replay(result, args.serve)
    return 0


def _schema(args: argparse.Namespace) -> int:
    from twin.schema import write_schemas

    written = write_schemas(Path(args.out))
    print(f"dmtwin schema: {len(written)} schemas in {args.out}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dmtwin", description="A digital twin of Hyper-V Dynamic Memory.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("simulate", help="run a scenario and write its event log (JSON Lines)")
    p.add_argument("scenario", help="scenario file (.toml or .json), see examples/")
    p.add_argument("-o", "--output", help="log file to write (.gz compresses); default stdout")
    p.add_argument("--to", metavar="kafka://HOST:PORT",
                   help="stream to Kafka instead, and answer the twin's commands as the guests would")
    p.add_argument("--speed", type=float, default=1.0,
                   help="with --to: event seconds per wall second (1 = real time, 0 = as fast as possible)")
    p.add_argument("--per-guest", action="store_true",
                   help="with --to: one message per guest report instead of one frame per host and second")
    p.set_defaults(run=_simulate)

    p = sub.add_parser("worker", help="run the Faust worker (several share hosts through the consumer group)")
    p.add_argument("--broker", help="Kafka bootstrap host:port (default $DMTWIN_BROKER or localhost:9092)")
    p.add_argument("--store", help="table store: rocksdb:// (default) or memory://")
    p.add_argument("--data-dir", help="where this worker keeps its tables (one per worker on a machine)")
    p.add_argument("--partitions", type=int, help="partitions of the input topics (default 4)")
    p.add_argument("--web-port", type=int, help="port of the /hosts/ page (default 6066)")
    p.add_argument("--metrics-port", type=int, help="Prometheus port (default 9108, 0 = off)")
    p.add_argument("--app-id", help="consumer group (default dmtwin)")
    p.add_argument("--loglevel", default="warning")
    p.set_defaults(run=_worker)

    p = sub.add_parser("replay", help="fold an event log and print state, decisions and counters")
    p.add_argument("log", help="event log (JSON Lines, .gz allowed; - for stdin)")
    p.add_argument("--json", action="store_true", help="print canonical JSON instead of tables")
    p.add_argument("--no-decisions", action="store_true", help="leave the list of decisions out")
    p.add_argument("--rejects", metavar="FILE", help="write every rejected line, with its reason, here")
    p.add_argument("--serve", type=int, metavar="PORT",
                   help="then serve the replayed counters for Prometheus until Ctrl-C")
    p.set_defaults(run=_replay)

    p = sub.add_parser("schema", help="write the JSON Schema of every event")
    p.add_argument("--out", default="docs/schemas", help="folder to write to (default docs/schemas)")
    p.set_defaults(run=_schema)

    for name, (_, _, description) in PASSTHROUGH.items():
        sub.add_parser(name, help=description, add_help=False)
    return parser


PASSTHROUGH = {
    "kafka": ("streams.broker", "main", "fetch, start, stop a local single-node Kafka: up | down | status"),
    "ingest": ("streams.ingest", "ingest_main",
               "turn a telemetry source (perfmon, meminfo, virsh, bitbrains, synthetic) into events"),
    "agent": ("streams.agent", "agent_main", "report this Linux machine's memory as a guest, every second"),
    "top": ("streams.top", "top_main", "live table of every VM, like Hyper-V Manager's memory columns"),
}
"""Commands with a parser of their own: ``dmtwin NAME --help`` shows their options."""


def _passthrough(name: str, rest: list[str]) -> int:
    import importlib

    module, function, _ = PASSTHROUGH[name]
    entry = getattr(importlib.import_module(module), function)
    if name == "ingest":
        from .sink import sink_for

        return int(entry(rest, sink_factory=sink_for))
    return int(entry(rest))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] and argv[0] in PASSTHROUGH:
        return _passthrough(argv[0], argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except (OSError, ValueError) as error:
        print(f"dmtwin {args.command}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
