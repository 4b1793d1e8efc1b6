"""The twin of a fleet: hosts by name, the fold for replay and the decision loop for live use.

Two ways in, one core:

- ``Twin.apply(event)`` folds any event, input or decision, as recorded. Replaying a log is
  applying every line of it.
- ``Twin.handle(event)`` takes an *input*, folds it, derives the decisions it causes (a balancing
  round on ``balancer.tick``, Smart Paging on ``vm.restarted``), folds those too and returns them.
  A log written from ``handle`` therefore replays through ``apply`` to the same state.
"""

from __future__ import annotations

from typing import Iterable

from . import balancer
from .errors import Rejected
from .events import (
    DECISION_TYPES,
    BalancerTicked,
    Decision,
    HostJoined,
    InputEvent,
    SmartPagingStarted,
    VmRestarted,
)
from .host import apply as fold
from .state import Col, HostState

__all__ = ["Twin"]


class Twin:
    """State of every host the log has introduced, in the order they joined."""

    def __init__(self) -> None:
        self.hosts: dict[str, HostState] = {}

    def host(self, name: str) -> HostState:
        try:
            return self.hosts[name]
        except KeyError:
            raise Rejected("host", name, "no such host has joined") from None

    def apply(self, event: InputEvent | Decision) -> None:
        """Fold one event; raise ``Rejected`` (and change nothing) if it is not valid here."""
        if isinstance(event, HostJoined):
            if event.host in self.hosts:
                raise Rejected("host", event.host, "host has already joined")
            self.hosts[event.host] = HostState(event.host, event.total_mib, event.reserve_mib,
                                               event.policy, event.at_ms)
            return
        fold(self.host(event.host), event)

    def handle(self, event: InputEvent) -> list[Decision]:
        """Fold an input and return the decisions it causes, already folded, in log order."""
        if isinstance(event, DECISION_TYPES):
            raise Rejected("type", event.type, "a decision is not an input: use apply() to replay it")
        self.apply(event)
        if isinstance(event, BalancerTicked):
            decisions: list[Decision] = list(balancer.plan(self.hosts[event.host], event.at_ms))
        elif isinstance(event, VmRestarted):
            decisions = self._smart_paging(event)
        else:
            return []
        for decision in decisions:
            self.apply(decision)
        return decisions

    def ingest(self, events: list[InputEvent], tick_ms: int = 1000
               ) -> tuple[list[InputEvent | Decision], list[tuple[int, Rejected]]]:
        """The live driver's rule: apply a batch of inputs (a frame, or one message), then run a
        balancing round for each host the batch touched if a tick has passed since its last round.

        Returns the log entries in order (each accepted input, its decisions, any round and its
        decisions) and the rejected inputs with their index in the batch. Rounds are recorded as
        ``balancer.tick`` events, so replaying the log needs no clock.
        """
        entries: list[InputEvent | Decision] = []
        rejected: list[tuple[int, Rejected]] = []
        due: dict[str, int] = {}
        for index, event in enumerate(events):
            try:
                decisions = self.handle(event)
            except Rejected as error:
                rejected.append((index, error))
                continue
            entries.append(event)
            entries.extend(decisions)
            due[event.host] = max(due.get(event.host, 0), event.at_ms)
        for host, at_ms in due.items():
            state = self.hosts.get(host)
            if state is not None and at_ms - state.last_round_ms >= tick_ms and at_ms >= state.last_at_ms:
                tick = BalancerTicked(at_ms=at_ms, host=host)
                entries.append(tick)
                entries.extend(self.handle(tick))
        return entries, rejected

    def handle_all(self, events: Iterable[InputEvent]) -> list[Decision]:
        """``handle`` each input in turn; return every decision."""
        return [d for event in events for d in self.handle(event)]

    def _smart_paging(self, event: VmRestarted) -> list[Decision]:
        """Smart Paging is used only when a restarting VM cannot get its Startup RAM (§1.6)."""
        state = self.hosts[event.host]
        row = state.vms.data[state.vms.index[event.vm]]
        if row[Col.PAGING] == 0 or row[Col.SMART_PAGING]:
            return []
        return [SmartPagingStarted(at_ms=event.at_ms, host=event.host, vm=event.vm,
                                   seq=state.last_seq.get(event.vm, 0) + 1,
                                   paging_mib=int(row[Col.PAGING]))]

    def copy(self) -> Twin:
        twin = Twin()
        twin.hosts = {name: state.copy() for name, state in self.hosts.items()}
        return twin
