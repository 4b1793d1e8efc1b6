"""What the worker does with one input message, without Faust or Kafka: bytes in, records out.

The Faust agent (``streams.app``) is a thin loop around ``HostProcessor.process``:

1. decode the message (one input event, or a frame of status reports) with the twin's models;
2. skip it if this host's state already holds its offset (a message seen before a restart);
3. fold it into the host's state with ``Twin.ingest`` (which runs the balancing round when a tick
   is due), collecting every rejected input;
4. return the new state, the log entries, the commands and the dead letters to send.

Every log entry is hash-chained to the host's previous one (``twin.chain``); the head of the chain
is kept in the host's table value, so the chain continues across restarts and rebalances.

Nothing valid is lost: a frame with one bad report still applies the others, and every rejected
message or report becomes a dead letter carrying the original bytes and the reason.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from twin.chain import Chainer
from twin.engine import Twin
from twin.events import DECISION_TYPES, INPUT_MESSAGE_ADAPTER, StatusFrame
from twin.log import rejection
from twin.state import HostState

from .metrics import rejection_reason

__all__ = ["Source", "Outputs", "HostRecord", "HostProcessor", "dead_letter"]


@dataclass(frozen=True)
class Source:
    """Where a message came from."""

    topic: str
    partition: int
    offset: int

    @property
    def slot(self) -> str:
        return f"{self.topic}:{self.partition}"


@dataclass
class Outputs:
    """Records to send for one message, each a (key, value) pair of bytes."""

    log: list[bytes] = field(default_factory=list)
    balloon_commands: list[bytes] = field(default_factory=list)
    addition_commands: list[bytes] = field(default_factory=list)
    dead_letters: list[bytes] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    """Why each dead letter was sent: json, type, schema or state (streams.metrics)."""
    inputs: list[str] = field(default_factory=list)
    """Type of each accepted input."""
    reports: int = 0
    decisions: list[str] = field(default_factory=list)
    rounds: int = 0
    fold_seconds: float = 0.0
    """Time spent folding the message (with its balancing round, if one ran)."""
    skipped: bool = False


@dataclass
class HostRecord:
    """A host's entry in the worker's table: its state, the offsets already folded into it and the
    digest of the last log entry written for it (the head of its hash chain, ``twin.chain``).

    Serialized as a JSON header line ``{"offsets": {...}, "chain": "..."}``, then the state. A
    header that is a bare offsets object (records written before chaining) reads as no chain yet.
    """

    state: HostState
    offsets: dict[str, int] = field(default_factory=dict)
    chain: str | None = None

    def to_bytes(self) -> bytes:
        header = {"offsets": self.offsets, "chain": self.chain}
        return json.dumps(header, separators=(",", ":")).encode() + b"\n" + self.state.to_bytes()

    @classmethod
    def from_bytes(cls, blob: bytes) -> HostRecord:
        head, _, body = blob.partition(b"\n")
        header = json.loads(head)
        if isinstance(header.get("offsets"), dict):  # offsets keys are "topic:partition", never "offsets"
            return cls(HostState.from_bytes(body), header["offsets"], header.get("chain"))
        return cls(HostState.from_bytes(body), header)


def dead_letter(original: bytes | None, source: Source, reason: str, field_name: str = "",
                value: Any = None, index: int | None = None) -> bytes:
    """A dead-letter record: the original bytes (text when they decode, else base64) and why."""
    raw = original or b""
    try:
        text, encoding = raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(raw).decode("ascii"), "base64"
    record = {"reason": reason, "field": field_name, "value": _plain(value), "index": index,
              "topic": source.topic, "partition": source.partition, "offset": source.offset,
              "original": text, "original_encoding": encoding}
    return json.dumps(record, sort_keys=True, ensure_ascii=False).encode()


def _plain(value: Any) -> Any:
    return value if value is None or isinstance(value, (bool, int, float, str)) else repr(value)


class HostProcessor:
    """Folds messages into host records. Keeps the last state it produced per host, so that a
    record it wrote itself need not be parsed again (the table stays the source of truth)."""

    def __init__(self, tick_ms: int = 1000) -> None:
        self.tick_ms = tick_ms
        self._cache: dict[str, tuple[bytes, HostRecord]] = {}

    def forget(self) -> None:
        """Drop cached states, e.g. when partitions are reassigned."""
        self._cache.clear()

    def load(self, host: str, stored: bytes | None) -> HostRecord | None:
        if stored is None:
            self._cache.pop(host, None)
            return None
        cached = self._cache.get(host)
        if cached is not None and cached[0] == stored:
            return cached[1]
        return HostRecord.from_bytes(stored)

    def process(self, key: bytes | None, value: bytes | None, source: Source,
                stored: bytes | None) -> tuple[bytes | None, Outputs]:
        """Fold one message; return the host's new table value (None: unchanged) and the outputs."""
        out = Outputs()
        try:
            message = INPUT_MESSAGE_ADAPTER.validate_json(value or b"")
        except ValidationError as error:
            problem = rejection(error, value or b"")
            out.dead_letters.append(dead_letter(value, source, problem.reason, problem.field, problem.value))
            out.reasons.append(rejection_reason(problem, stage="decode"))
            return None, out
        host = message.host
        if key is None or key.decode("utf-8", "replace") != host:
            out.dead_letters.append(dead_letter(value, source, f"message key {key!r} is not its host: key "
                                                "every message by its host name", "host", host))
            out.reasons.append("schema")
            return None, out
        record = self.load(host, stored)
        if record is not None and record.offsets.get(source.slot, -1) >= source.offset:
            out.skipped = True
            return None, out
        events = message.events() if isinstance(message, StatusFrame) else [message]
        twin = Twin()
        if record is not None:
            twin.hosts[host] = record.state
        started = time.perf_counter()
        entries, rejected = twin.ingest(events, self.tick_ms)
        out.fold_seconds = time.perf_counter() - started
        for index, error in rejected:
            where = index if isinstance(message, StatusFrame) else None
            out.dead_letters.append(dead_letter(value, source, error.reason, error.field, error.value, where))
            out.reasons.append(rejection_reason(error, stage="apply"))
        state = twin.hosts.get(host)
        if state is None:  # nothing about this host was ever accepted
            return None, out
        chainer = Chainer({host: record.chain} if record is not None and record.chain else None)
        for entry in entries:
            line = chainer.line(entry).encode()
            out.log.append(line)
            if not isinstance(entry, DECISION_TYPES):
                out.inputs.append(entry.type)
            if entry.type == "guest.status":
                out.reports += 1
            elif entry.type == "balancer.tick":
                out.rounds += 1
            elif isinstance(entry, DECISION_TYPES):
                out.decisions.append(entry.type)
                if entry.type in ("decision.balloon", "decision.unballoon"):
                    out.balloon_commands.append(line)
                elif entry.type == "decision.hot_add":
                    out.addition_commands.append(line)
        record = record or HostRecord(state)
        record.state = state
        record.offsets[source.slot] = source.offset
        record.chain = chainer.heads.get(host, record.chain)
        blob = record.to_bytes()
        self._cache[host] = (blob, record)
        return blob, out

