"""Event logs as JSON Lines: encoding, decoding with precise errors, and replay.

One event per line, encoded by ``encode`` (pydantic's JSON, fields in model order), so the same
events always give the same bytes. A chained event (``twin.chain``) ends with its ``"chain"``
digest; without it, the line is the event's canonical form. ``.gz`` files are read and written
compressed. Lines of an older schema version are upgraded on reading (``twin.upcast``).
"""

from __future__ import annotations

import gzip
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Iterable, Iterator

from pydantic import ValidationError

from .engine import Twin
from .errors import Rejected
from .events import DECISION_TYPES, EVENT_ADAPTER, SCHEMA_VERSION, BalancerRound, Decision, Entry
from .upcast import upcast

__all__ = ["encode", "decode", "peek", "rejection", "open_log", "read_log", "Replay", "replay", "write_log"]

AnyEvent = Entry


def encode(event: AnyEvent) -> str:
    """One log line (without the newline): the canonical JSON, then the chain digest if any."""
    body = event.model_dump_json()
    if event.chain is None:
        return body
    return f'{body[:-1]},"chain":"{event.chain}"}}'


def decode(line: str | bytes, position: int | None = None) -> AnyEvent:
    """Parse and validate one log line; raise ``Rejected`` naming the field and value.

    A line of an older schema version is upgraded (``twin.upcast``); a newer one is refused."""
    try:
        return EVENT_ADAPTER.validate_json(line)
    except ValidationError as error:
        problem = rejection(error, line, position)
    upgraded = _upgraded(line, problem, position)
    if upgraded is None:
        raise problem from None
    return upgraded


def _upgraded(line: str | bytes, problem: Rejected, position: int | None) -> AnyEvent | None:
    """The line as an event of the current schema if it is of another version, else None."""
    if problem.field == "json":
        return None
    try:
        data = json.loads(line)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("v", SCHEMA_VERSION) == SCHEMA_VERSION:
        return None
    try:
        current = upcast(data)
        return EVENT_ADAPTER.validate_python(current)
    except Rejected as refused:
        raise refused.at(position) if position is not None else refused from None
    except ValidationError as error:
        raise rejection(error, json.dumps(current), position) from None


_HEAD = re.compile(rb'\{"v":(\d+),"at_ms":(\d+),"host":"([^"\\]*)"')


def peek(line: bytes) -> tuple[int, str] | None:
    """(at_ms, host) of a line as ``encode`` writes it, without parsing it; None if it does not
    start like one (then parse it to know)."""
    match = _HEAD.match(line)
    if match is None:
        return None
    return int(match[2]), match[3].decode("utf-8", "replace")


def rejection(error: ValidationError, line: str | bytes, position: int | None = None) -> Rejected:
    """The first problem of a validation error, as a rejection naming its field and value."""
    first = error.errors(include_url=False)[0]
    kind, loc, value = first["type"], first["loc"], first.get("input")
    if kind == "json_invalid":
        text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
        return Rejected("json", text[:120], f"not valid JSON ({first['msg']})", position)
    if kind in ("union_tag_invalid", "union_tag_not_found", "model_type", "model_attributes_type"):
        tag = value.get("type") if isinstance(value, dict) else value
        return Rejected("type", tag, "not a known event type", position)
    # loc[0] is the type tag, and so is any part with a dot (a nested decision's): field names have none
    path = [str(part) for part in loc[1:] if not (isinstance(part, str) and "." in part)] or ["event"]
    if kind == "missing":
        return Rejected(".".join(path), None, "missing", position)
    return Rejected(".".join(path), value, first["msg"], position)


def open_log(path: str | Path, mode: str = "r") -> IO[Any]:
    """Open a log for text reading or writing, gzip-compressed when the name ends in .gz."""
    path = Path(path)
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, mode.replace("t", "") + "b"), encoding="utf-8")  # type: ignore[arg-type]
    return open(path, mode, encoding="utf-8")


def read_log(lines: Iterable[str | bytes]) -> Iterator[tuple[int, AnyEvent | Rejected]]:
    """(line number, event) for each non-blank line, or (line number, Rejected) for a bad one;
    line numbers start at 1."""
    for position, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield position, decode(line, position)
        except Rejected as rejected:
            yield position, rejected


def write_log(events: Iterable[AnyEvent], out: IO[str]) -> int:
    """Write events, a line each; return how many."""
    count = 0
    for event in events:
        out.write(encode(event))
        out.write("\n")
        count += 1
    return count


@dataclass
class Replay:
    """The outcome of folding a log: final state, every decision, every rejected event."""

    twin: Twin = field(default_factory=Twin)
    events: int = 0
    decisions: list[Decision] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    rejected_lines: list[str] = field(default_factory=list)


def replay(lines: Iterable[str | bytes], into: Replay | None = None) -> Replay:
    """Fold every valid line of a log; keep going past bad ones and report each of them."""
    result = into or Replay()
    apply = result.twin.apply
    for position, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            event = decode(line, position)
            apply(event)
        except Rejected as rejected:
            _reject(result, rejected.at(position), line)
            continue
        result.events += 1
        if isinstance(event, DECISION_TYPES):
            result.decisions.append(event)  # type: ignore[arg-type]
        elif isinstance(event, BalancerRound):
            result.decisions += event.decisions
    return result


def _reject(result: Replay, rejected: Rejected, line: str | bytes) -> None:
    result.rejected.append(rejected)
    text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
    result.rejected_lines.append(text.rstrip("\n"))
