"""The ``dmtwin`` command line.

Offline commands (``simulate``, ``replay``, ``schema``) use only the pure core in ``twin``; the
commands that need Kafka or Faust import them lazily, so the offline ones start fast and work
without a broker.

``main`` (the ``dmtwin`` console script, ``streams.cli:main``, and ``python -m streams.cli``)
parses with ``parser.build_parser`` and runs the chosen subcommand from ``commands``; the
``PASSTHROUGH`` commands (``kafka``, ``ingest``, ``agent``, ``top``) get the rest of the command
line for parsers of their own.
"""

from __future__ import annotations

import sys
from typing import Sequence

from .parser import PASSTHROUGH, build_parser

__all__ = ["main", "build_parser", "PASSTHROUGH"]


def _passthrough(name: str, rest: list[str]) -> int:
    import importlib

    module, function, _ = PASSTHROUGH[name]
    entry = getattr(importlib.import_module(module), function)
    if name == "ingest":
        from ..telemetry.sink import sink_for

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
