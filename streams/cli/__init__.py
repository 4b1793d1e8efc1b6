"""The ``dmtwin`` command line.

Offline commands (``simulate``, ``replay``, ``schema``) use only the pure core in ``twin``; the
commands that need Kafka or Faust import them lazily, so the offline ones start fast and work
without a broker.

``main`` (the ``dmtwin`` console script, ``streams.cli:main``, and ``python -m streams.cli``)
parses with ``parser.build_parser`` and runs the chosen subcommand from ``commands``; the
``PASSTHROUGH`` commands (``kafka``, ``ingest``, ``agent``, ``top``) get the rest of the command
line for parsers of their own.

Every command fails the same way (``failure``): one line naming what failed and what to do, an
exit code from ``failure.EXIT_CODES`` (docs/cli.md), and a traceback only with ``--debug``.
"""

from __future__ import annotations

import os
import sys
from typing import Sequence

from .failure import run_reporting
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


def _command(args: object) -> str:
    """``dmtwin audit verify``: the words of the subcommand that runs."""
    words = [getattr(args, "command", "")]
    for attribute in ("keys_command", "log_command", "audit_command", "kafka_command", "lab_command"):
        word = getattr(args, attribute, None)
        if isinstance(word, str):
            words.append(word)
    return " ".join(["dmtwin", *words])


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # --debug anywhere, for every command, passthrough ones included: the traceback of a failure.
    debug = "--debug" in argv or os.environ.get("DMTWIN_DEBUG", "") not in ("", "0")
    argv = [arg for arg in argv if arg != "--debug"]
    if argv[:1] and argv[0] in PASSTHROUGH:
        return run_reporting(f"dmtwin {argv[0]}", lambda: _passthrough(argv[0], argv[1:]), debug)
    args = build_parser().parse_args(argv)
    args.words = _command(args).split()[1:]
    return run_reporting(_command(args), lambda: args.run(args), debug)
