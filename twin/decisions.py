"""A round's decisions as rows of plain values: a busy round without an object per decision.

A round of 1,000 busy VMs makes about 900 requests. Built as pydantic events, they cost about
2 µs each, most of the round. ``Decisions`` keeps each request as a tuple of the values the
round computed, and is a sequence of the events they stand for: those are made only when one is
asked for (the audit tools, a small round folded one decision at a time), equal field for field
to validated events. The hot path reads the rows: ``twin.requests`` folds them, and the round's
log entry and the actuators' commands are written from them, byte for byte as pydantic writes
the events (``tests/twin/test_decisions.py``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, overload

from .events import (
    SCHEMA_VERSION,
    BalloonTargetSet,
    MemoryAdditionRequested,
    SmartPagingEnded,
    UnballoonRequested,
    _compact_json,
    _quoted,
    built,
)
from .state import Pending

__all__ = ["Decisions", "Row", "reason", "BALLOON", "UNBALLOON", "HOT_ADD", "KINDS"]

BALLOON, UNBALLOON, HOT_ADD = int(Pending.BALLOON), int(Pending.UNBALLOON), int(Pending.HOT_ADD)

Row = tuple[int, str, int, int, int, int, int, int, int, str]
"""A request: kind (``BALLOON``, ``UNBALLOON``, ``HOT_ADD``), vm, seq, amount, target_mib, and
its reason's parts: demand, assigned, pressure, the policy's target and why."""

Decision = BalloonTargetSet | UnballoonRequested | MemoryAdditionRequested | SmartPagingEnded

KINDS: dict[int, tuple[type, str, str]] = {  # a request's kind: its event, type tag and amount
    BALLOON: (BalloonTargetSet, "decision.balloon", "remove_mib"),
    UNBALLOON: (UnballoonRequested, "decision.unballoon", "return_mib"),
    HOT_ADD: (MemoryAdditionRequested, "decision.hot_add", "add_mib"),
}
_GIVEN = {kind: {"at_ms", "host", "vm", "seq", field, "target_mib", "reason"} for kind, (_, _, field) in KINDS.items()}
"""The fields a request is made with: what ``model_fields_set`` reports, as for a validated one."""


def reason(policy: str, demand: int, assigned: int, pressure: int, target: int, why: str) -> str:
    """A decision's reason, in words."""
    return (f"{policy}: {why}; demand {demand} MiB, assigned {assigned} MiB, "
            f"pressure {pressure}%, target {target} MiB")


class Decisions(Sequence[Decision]):
    """The decisions of one round of ``host`` at ``at_ms``: ``head`` (Smart Paging ending, made
    as events) and then ``rows``, the requests in order."""

    __slots__ = ("host", "at_ms", "policy", "head", "rows", "_made", "_written")

    def __init__(self, host: str, at_ms: int, policy: str) -> None:
        self.host, self.at_ms, self.policy = host, at_ms, policy
        self.head: list[SmartPagingEnded] = []
        self.rows: list[Row] = []
        self._made: list[Decision] | None = None
        self._written: list[str] | None = None

    def __len__(self) -> int:
        return len(self.head) + len(self.rows)

    @overload
    def __getitem__(self, k: int) -> Decision: ...
    @overload
    def __getitem__(self, k: slice) -> list[Decision]: ...
    def __getitem__(self, k: int | slice) -> Decision | list[Decision]:
        return self.events()[k]

    def __iter__(self) -> Iterator[Decision]:
        return iter(self.events())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, (str, bytes)):
            return self.events() == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(self.events())

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuilt, (self.host, self.at_ms, self.policy, self.head, self.rows)

    def events(self) -> list[Decision]:
        """The decisions as events (made once, on first use)."""
        if self._made is None:
            self._made = [*self.head, *map(self._event, self.rows)]
        return self._made

    def _event(self, row: Row) -> Decision:
        kind, vm, seq, amount, target, demand, assigned, pressure, aim, why = row
        model, tag, field = KINDS[kind]
        return built(model, {"v": SCHEMA_VERSION, "at_ms": self.at_ms, "host": self.host, "chain": None, "vm": vm,
                             "seq": seq, "type": tag, field: amount, "target_mib": target,
                             "reason": reason(self.policy, demand, assigned, pressure, aim, why)}, _GIVEN[kind])

    def compact_json(self) -> list[str]:
        """Each decision as a round's entry writes it: without the round's ``v``, ``at_ms`` and
        ``host`` (written once, on first use: the worker writes the round's line and its commands)."""
        if self._written is None:
            self._written = self._write()
        return self._written

    def _write(self) -> list[str]:
        policy = self.policy
        return [*map(_compact_json, self.head),
                *(f'{{"vm":{_quoted(vm)},"seq":{seq},"type":"{KINDS[kind][1]}","{KINDS[kind][2]}":{amount},'
                  f'"target_mib":{target},"reason":{_quoted(reason(policy, demand, assigned, pressure, aim, why))}}}'
                  for kind, vm, seq, amount, target, demand, assigned, pressure, aim, why in self.rows)]

    def commands(self) -> Iterator[tuple[str, str]]:
        """Each decision's type and its JSON as an event of its own (``model_dump_json``)."""
        for decision in self.head:
            yield decision.type, decision.model_dump_json()
        shared = f'{{"v":{SCHEMA_VERSION},"at_ms":{self.at_ms},"host":{_quoted(self.host)},'
        for row, text in zip(self.rows, self.compact_json()[len(self.head):]):
            yield KINDS[row[0]][1], shared + text[1:]


def _rebuilt(host: str, at_ms: int, policy: str, head: list[SmartPagingEnded], rows: list[Row]) -> Decisions:
    made = Decisions(host, at_ms, policy)
    made.head, made.rows = head, rows
    return made
