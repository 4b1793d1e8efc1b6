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
    return 0


def _schema(args: argparse.Namespace) -> int:
    from twin.schema import write_schemas

    written = write_schemas(Path(args.out))
    print(f"dmtwin schema: {len(written)} schemas in {args.out}", file=sys.stderr)
    return 0


def _kafka(args: argparse.Namespace, rest: list[str]) -> int:
    from streams import broker

    return broker.main(rest)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dmtwin", description="A digital twin of Hyper-V Dynamic Memory.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("simulate", help="run a scenario and write its event log (JSON Lines)")
    p.add_argument("scenario", help="scenario file (.toml or .json), see examples/")
    p.add_argument("-o", "--output", help="log file to write (.gz compresses); default stdout")
    p.set_defaults(run=_simulate)

    p = sub.add_parser("replay", help="fold an event log and print state, decisions and counters")
    p.add_argument("log", help="event log (JSON Lines, .gz allowed; - for stdin)")
    p.add_argument("--json", action="store_true", help="print canonical JSON instead of tables")
    p.add_argument("--no-decisions", action="store_true", help="leave the list of decisions out")
    p.add_argument("--rejects", metavar="FILE", help="write every rejected line, with its reason, here")
    p.set_defaults(run=_replay)

    p = sub.add_parser("schema", help="write the JSON Schema of every event")
    p.add_argument("--out", default="docs/schemas", help="folder to write to (default docs/schemas)")
    p.set_defaults(run=_schema)

    p = sub.add_parser("kafka", help="fetch, start, stop a local single-node Kafka (up|down|status)",
                       add_help=False)
    p.set_defaults(run=None)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["kafka"]:
        return _kafka(argparse.Namespace(), argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except (OSError, ValueError) as error:
        print(f"dmtwin {args.command}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
