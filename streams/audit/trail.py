"""Offline writers' audit trail: a chained log, its signed checkpoints and its rejects, side by side.

``dmtwin simulate -o LOG`` and ``dmtwin ingest ... --to LOG`` write

- ``LOG``: the events, hash-chained per host (``twin.chain``);
- ``LOG.checkpoints.jsonl``: with ``--key``, a signed checkpoint per host every
  ``--checkpoint-every`` seconds of event time and one at the end (``twin.signing.Trail``), the
  offline counterpart of the worker's checkpoint topic;
- ``LOG.rejects.jsonl``: every input the twin refused (or row a source could not read), where it
  would have been, the offline counterpart of the worker's dead-letter topic. Always written, so
  that an empty file says that nothing was refused.

``dmtwin audit verify LOG`` finds both files by these names.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from twin.errors import Rejected
from twin.events import Decision, InputEvent
from twin.log import open_log
from twin.signing import Signer, Trail

__all__ = ["TrailStats", "checkpoints_path", "rejects_path", "write_trail"]


def checkpoints_path(log: str | Path) -> Path:
    return Path(f"{log}.checkpoints.jsonl")


def rejects_path(log: str | Path) -> Path:
    return Path(f"{log}.rejects.jsonl")


@dataclass
class TrailStats:
    lines: int = 0
    checkpoints: int = 0
    rejects: int = 0


def write_trail(events: Iterable[InputEvent | Decision], output: str | None, signer: Signer | None = None,
                every_ms: int = 10_000, source: str = "simulate",
                refused: list[tuple[InputEvent, Rejected]] | None = None,
                problems: list[Any] | None = None) -> TrailStats:
    """Write ``events`` chained to ``output`` (None or ``-``: stdout, without side files).

    ``refused`` and ``problems`` are lists the event source appends to while it runs (inputs the
    twin refused, rows a source could not read); each new entry goes to the rejects file after the
    lines written so far."""
    to_stdout = output in (None, "-")
    if to_stdout and signer is not None:
        raise ValueError("--key needs a log file (-o/--to FILE): the checkpoints go next to it")
    trail = Trail(signer, every_ms, source)
    stats = TrailStats()
    seen_refused = seen_problems = 0
    log: IO[str] = sys.stdout if to_stdout else open_log(output, "w")  # type: ignore[arg-type]
    checkpoints: IO[bytes] | None = None if signer is None or to_stdout else open(checkpoints_path(output), "wb")  # type: ignore[arg-type]
    rejects: IO[str] | None = None if to_stdout else open(rejects_path(output), "w", encoding="utf-8")  # type: ignore[arg-type]

    def catch_up() -> None:
        nonlocal seen_refused, seen_problems
        if rejects is None:
            return
        while refused is not None and seen_refused < len(refused):
            event, error = refused[seen_refused]
            rejects.write(trail.refused(event, error) + "\n")
            seen_refused += 1
            stats.rejects += 1
        while problems is not None and seen_problems < len(problems):
            problem = problems[seen_problems]
            where = f"{getattr(problem, 'file', '?')}:{getattr(problem, 'line', None) or ''}".rstrip(":")
            rejects.write(trail.refused(None, Rejected("source", where, getattr(problem, "reason", str(problem))))
                          + "\n")
            seen_problems += 1
            stats.rejects += 1

    try:
        for event in _with_catch_up(events, catch_up):
            due, line = trail.line(event)
            if checkpoints is not None:
                for cp in due:
                    checkpoints.write(cp + b"\n")
                    stats.checkpoints += 1
            log.write(line)
            log.write("\n")
            stats.lines += 1
        catch_up()
        if checkpoints is not None:
            for cp in trail.finish():
                checkpoints.write(cp + b"\n")
                stats.checkpoints += 1
    finally:
        if log is not sys.stdout:
            log.close()
        for side in (checkpoints, rejects):
            if side is not None:
                side.close()
    return stats


def _with_catch_up(events: Iterable[InputEvent | Decision], catch_up: Any) -> Iterator[InputEvent | Decision]:
    for event in events:
        catch_up()  # what the source refused while producing this event came before it
        yield event
