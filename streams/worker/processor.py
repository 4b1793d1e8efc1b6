"""What the worker does with input messages, without Faust or Kafka: bytes in, records out.

The worker (``streams.worker.app``) drives two steps per message:

1. ``decode``: parse the message (one input event, or a frame of status reports) with the twin's
   models, so that it can be ordered by event time (``streams.worker.ordering``) before it is folded;
2. ``HostProcessor.fold``: fold it into its host's record with ``Twin.ingest`` (which runs the
   balancing round when a tick is due), collecting every rejected input, and return the log
   entries, commands and dead letters it causes.

Every log entry is hash-chained to the host's previous one (``twin.chain``); the head of the chain
is kept in the host's record, so the chain continues across restarts and rebalances.

Nothing valid is lost: a frame with one bad report still applies the others, and every rejected
message or report becomes a dead letter carrying the original bytes once, and the reason. An input
more than ``lateness_ms`` behind its host's event time is dead-lettered as ``late``.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, field
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from pydantic import ValidationError

from twin.chain import Chainer
from twin.batch import Batch
from twin.engine import Twin
from twin.errors import Rejected
from twin.events import DECISION_TYPES, INPUT_MESSAGE_ADAPTER, BalancerRound, Decision, Entry, InputEvent, StatusFrame
from twin.log import rejection
from twin.state import HostState

from ..ops.pipeline import rejection_reason

__all__ = ["Source", "Record", "Outputs", "Decoded", "HostRecord", "HostProcessor", "decode",
           "dead_letter", "RAW_ORIGINAL_BYTES", "DEFAULT_LATENESS_MS"]

RAW_ORIGINAL_BYTES = 256 * 1024
"""Originals larger than this are kept as the dead letter's value itself (raw, once), with the
description in the record's headers, so the record stays within the broker's size limit."""

DEFAULT_LATENESS_MS = 300_000
"""How far behind its host's event time an input may arrive and still be folded (5 minutes:
longer than the broker outages the fault benchmark runs)."""


@dataclass(frozen=True)
class Source:
    """Where a message came from."""

    topic: str
    partition: int
    offset: int

    @property
    def slot(self) -> str:
        return f"{self.topic}:{self.partition}"

    def line(self) -> str:
        """``topic:partition@offset``, for descriptions."""
        return f"{self.topic}:{self.partition}@{self.offset}"


@dataclass(frozen=True)
class Record:
    """A record to produce: its value and its headers."""

    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass
class Outputs:
    """Records to send for one message."""

    log: list[bytes] = field(default_factory=list)
    balloon_commands: list[bytes] = field(default_factory=list)
    addition_commands: list[bytes] = field(default_factory=list)
    dead_letters: list[Record] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    """Why each dead letter was sent: json, type, schema, state or late (streams.ops.pipeline)."""
    inputs: list[str] = field(default_factory=list)
    """Type of each accepted input."""
    reports: int = 0
    decisions: list[str] = field(default_factory=list)
    rounds: int = 0
    fold_seconds: float = 0.0
    """Time spent folding the message (with its share of the balancing rounds, if one ran)."""



@dataclass
class HostRecord:
    """A host's durable record: its state and the digest of the last log entry written for it
    (the head of its hash chain, ``twin.chain``), with the number of entries in its chain.

    Serialized as a JSON header line ``{"chain": "...", "entries": n}``, then the state.
    """

    state: HostState
    chain: str | None = None
    entries: int = 0

    def to_bytes(self) -> bytes:
        header = {"chain": self.chain, "entries": self.entries}
        return json.dumps(header, separators=(",", ":")).encode() + b"\n" + self.state.to_bytes()

    @classmethod
    def from_bytes(cls, blob: bytes) -> HostRecord:
        head, _, body = blob.partition(b"\n")
        header = json.loads(head)
        return cls(HostState.from_bytes(body), header.get("chain"), int(header.get("entries", 0)))

    def copy(self) -> HostRecord:
        return HostRecord(self.state.copy(), self.chain, self.entries)


@dataclass
class Decoded:
    """A message after decoding: its event(s), or the dead letter it became."""

    source: Source
    key: bytes | None
    value: bytes
    message: Any = None
    """The decoded ``InputEvent`` or ``StatusFrame``; None if the message was rejected."""
    rejected: Outputs | None = None

    @property
    def at_ms(self) -> int:
        """Event time, for ordering; a rejected message orders first (-1)."""
        return -1 if self.message is None else int(self.message.at_ms)

    @property
    def host(self) -> str | None:
        return None if self.message is None else str(self.message.host)


def dead_letter(original: bytes | None, source: Source, reason: str, field_name: str = "",
                value: Any = None, index: int | None = None) -> Record:
    """A dead-letter record: why, and the original bytes, once.

    Up to ``RAW_ORIGINAL_BYTES`` the value is a JSON description holding the original (as text
    when it is UTF-8, else base64). Above that the value *is* the original, and the description
    (with ``"original": null, "original_bytes": n``) is in the ``dmtwin-dead-letter`` header."""
    raw = original or b""
    record: dict[str, Any] = {"reason": reason, "field": field_name, "value": _plain(value), "index": index,
                              "topic": source.topic, "partition": source.partition, "offset": source.offset}
    if len(raw) > RAW_ORIGINAL_BYTES:
        record.update(original=None, original_bytes=len(raw), original_encoding="raw: the record's value")
        return Record(raw, (("dmtwin-dead-letter", json.dumps(record, sort_keys=True).encode()),))
    try:
        text, encoding = raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(raw).decode("ascii"), "base64"
    record.update(original=text, original_encoding=encoding)
    return Record(json.dumps(record, sort_keys=True, ensure_ascii=False).encode())


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float)):
        return value
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= 200 else text[:200] + f"… ({len(text)} characters)"


def decode(key: bytes | None, value: bytes | None, source: Source) -> Decoded:
    """Decode one message; a message that cannot be an input becomes its dead letter."""
    raw = value or b""
    try:
        message = INPUT_MESSAGE_ADAPTER.validate_json(raw)
    except ValidationError as error:
        problem = rejection(error, raw)
        out = Outputs(dead_letters=[dead_letter(raw, source, problem.reason, problem.field, problem.value)],
                      reasons=[rejection_reason(problem, stage="decode")])
        return Decoded(source, key, raw, rejected=out)
    if key is None or key.decode("utf-8", "replace") != message.host:
        out = Outputs(dead_letters=[dead_letter(raw, source, f"message key {key!r} is not its host: key "
                                                "every message by its host name", "host", message.host)],
                      reasons=["schema"])
        return Decoded(source, key, raw, rejected=out)
    return Decoded(source, key, raw, message)


class HostProcessor:
    """Folds decoded messages into host records."""

    def __init__(self, tick_ms: int = 1000, lateness_ms: int = DEFAULT_LATENESS_MS) -> None:
        self.tick_ms = tick_ms
        self.lateness_ms = lateness_ms

    def fold(self, item: Decoded, record: HostRecord | None) -> tuple[HostRecord | None, Outputs]:
        """Fold one message into ``record`` (changed in place: pass a copy to keep the original);
        return the host's record (None: the host never joined) and the outputs."""
        host = item.host
        outs, records = self.fold_batch([item], lambda name: record if name == host else None)
        return records.get(host, record) if host is not None else record, outs[0]

    def fold_batch(self, items: Sequence[Decoded], record_of: Callable[[str], HostRecord | None]
                   ) -> tuple[list[Outputs], dict[str, HostRecord]]:
        """Fold a batch of messages, in order; the outputs of each, and the records of the hosts
        they changed. ``record_of(host)`` gives a host's record to start from (a copy: it is
        changed in place), or None.

        The rounds that come due are computed together (``Twin.rounds``), each at the latest
        moment that keeps its host's order: before the host's next message in the batch, else at
        the end. A round's entries go with the message that made it due, so each host's log reads
        exactly as if every message were folded with its round on its own."""
        batch = Batch(Twin(), self.tick_ms)
        working: dict[str, HostRecord] = {}
        outs: list[Outputs] = []
        waiting: dict[str, tuple[Outputs, list[Entry]]] = {}  # each host's message whose round is due
        for item in items:
            host = item.host
            if host is not None and host not in working:
                record = record_of(host)
                if record is not None:
                    working[host] = record
                    batch.twin.hosts[host] = record.state
            outs.append(self._fold(batch, item, working, waiting))
        started = time.perf_counter()
        rounds = batch.flush()
        self._rounds(rounds, working, waiting, time.perf_counter() - started)
        return outs, working

    def _fold(self, batch: Batch, item: Decoded, working: dict[str, HostRecord],
              waiting: dict[str, tuple[Outputs, list[Entry]]]) -> Outputs:
        """Fold one message (its round waits in ``batch``); chain its entries. A frame whose round
        is due waits for it: if the round decides nothing, the frame is logged ``balanced``
        instead of being followed by an empty round."""
        if item.rejected is not None:
            return item.rejected
        out = Outputs()
        message, source = item.message, item.source
        host = message.host
        in_frame = isinstance(message, StatusFrame)
        record = working.get(host)
        started = time.perf_counter()
        earlier = batch.settle(host)  # the host's waiting round moves its clock, which lateness reads
        if record is not None:
            message = self._drop_late(message, record.state, item, out)
        if message is not None:
            entries, rejected, _ = batch.add(message)
        out.fold_seconds = time.perf_counter() - started
        self._rounds(earlier, working, waiting, out.fold_seconds)  # the waiting work ran first
        if message is None:
            return out
        held = in_frame and host in batch.due and len(entries) == 1
        if host in batch.due:
            waiting[host] = (out, list(entries) if held else [])
        for index, error in rejected:
            out.dead_letters.append(dead_letter(item.value, source, error.reason, error.field, error.value,
                                                index if in_frame else None))
            out.reasons.append(rejection_reason(error, stage="apply"))
        state = batch.twin.hosts.get(host)
        if state is None:  # nothing about this host was ever accepted
            return out
        if record is None:
            record = working[host] = HostRecord(state)
        if not held:
            self._log(record, entries, out)
        return out

    def _rounds(self, rounds: list[tuple[str, BalancerRound]], working: dict[str, HostRecord],
                waiting: dict[str, tuple[Outputs, list[Entry]]], seconds: float) -> None:
        """Log each round that ran with the message that made it due, with its share of ``seconds``
        (after the frame it waited with; in that frame's entry if it decided nothing)."""
        for host, entry in rounds:
            out, held = waiting.pop(host)
            out.fold_seconds += seconds / len(rounds)
            if held and not entry.decisions:
                self._log(working[host], [held[0].model_copy(update={"balanced": True})], out)
            else:
                self._log(working[host], [*held, entry], out)

    def _log(self, record: HostRecord, entries: Sequence[Entry], out: Outputs) -> None:
        """Chain ``entries`` onto the host's log, and note what they hold."""
        host = record.state.name
        chainer = Chainer({host: record.chain} if record.chain else None)
        for entry in entries:
            out.log.append(chainer.line(entry).encode())
            if isinstance(entry, BalancerRound):
                out.rounds += 1
                out.inputs.append("balancer.tick")
                self._commands(entry.decisions, out)
            elif isinstance(entry, DECISION_TYPES):
                self._commands((entry,), out)
            elif isinstance(entry, StatusFrame):
                out.inputs += ["guest.status"] * len(entry.reports)
                out.reports += len(entry.reports)
                if entry.balanced:
                    out.rounds += 1
                    out.inputs.append("balancer.tick")
            else:
                out.inputs.append(entry.type)
                out.reports += entry.type == "guest.status"
        record.chain = chainer.heads.get(host, record.chain)
        record.entries += len(entries)

    @staticmethod
    def _commands(decisions: Iterable[Decision], out: Outputs) -> None:
        """Each decision for the guests' actuators, as a whole event of its own (a round's
        written from its rows, ``twin.decisions``)."""
        written = getattr(decisions, "commands", None)
        for kind, text in written() if written else ((d.type, d.model_dump_json()) for d in decisions):
            out.decisions.append(kind)
            if kind in ("decision.balloon", "decision.unballoon"):
                out.balloon_commands.append(text.encode())
            elif kind == "decision.hot_add":
                out.addition_commands.append(text.encode())

    def _drop_late(self, message: InputEvent | StatusFrame, state: HostState, item: Decoded,
                   out: Outputs) -> InputEvent | StatusFrame | None:
        """The message, or None if it is more than ``lateness_ms`` behind the host's event time:
        then it is dead-lettered (each report of a frame: they share its time)."""
        horizon = state.last_at_ms - self.lateness_ms
        if message.at_ms >= horizon:
            return message
        behind = state.last_at_ms - message.at_ms
        error = Rejected("at_ms", message.at_ms, f"late: {behind} ms behind host {state.name!r}'s event "
                                                 f"time {state.last_at_ms} (lateness allowed: {self.lateness_ms} ms)")
        reports = len(message.reports) if isinstance(message, StatusFrame) else 0
        for index in range(reports) if reports else [None]:
            out.dead_letters.append(dead_letter(item.value, item.source, error.reason, error.field, error.value, index))
            out.reasons.append("late")
        return None

    def process(self, key: bytes | None, value: bytes | None, source: Source,
                record: HostRecord | None) -> tuple[HostRecord | None, Outputs]:
        """Decode and fold one message (for tests and benchmarks: the worker orders in between)."""
        return self.fold(decode(key, value, source), record)
