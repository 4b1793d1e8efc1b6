"""The twin of a fleet: hosts by name, the fold for replay and the decision loop for live use.

Two ways in, one core:

- ``Twin.apply(event)`` folds any event, input or decision, as recorded. Replaying a log is
  applying every line of it.
- ``Twin.handle(event)`` takes an *input*, folds it, derives the decisions it causes (a balancing
  round on ``balancer.tick``, Smart Paging on ``vm.restarted``), folds those too and returns them.
  A log written from ``handle`` therefore replays through ``apply`` to the same state.
- ``Twin.ingest(message)`` is the live worker's step: one input message (an event, or a frame of
  status reports) in, its log entries out, a frame as one entry and a round with its decisions
  as one entry (``balancer.round``).
"""

from __future__ import annotations

from typing import Iterable, Sequence

from . import balancer
from .errors import Rejected
from .events import (
    DECISION_TYPES,
    BalancerRound,
    BalancerTicked,
    Decision,
    HostJoined,
    InputEvent,
    SmartPagingStarted,
    StatusFrame,
    VmRestarted,
    trusted,
)
from .host import apply as fold
from .host import apply_frame, fold_round
from .rounds import plan_many
from .state import Col, HostState

__all__ = ["Twin", "kept_reports", "refuse_marked"]


def refuse_marked(frame: StatusFrame) -> None:
    """Raise ``Rejected`` if an input frame says its round ran: only the log says so."""
    if frame.balanced:
        raise Rejected("balanced", True, "an input frame cannot say that its host's round ran "
                                         "(the worker's log marks a frame so)")


def kept_reports(frame: StatusFrame, rejected: list[tuple[int, Rejected]]) -> StatusFrame | None:
    """The frame with only the reports not ``rejected`` (by index); None if none is left."""
    if not rejected:
        return frame
    if len(rejected) == len(frame.reports):
        return None
    refused = {k for k, _ in rejected}
    return frame.model_copy(update={"reports": [r for k, r in enumerate(frame.reports) if k not in refused]})


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

    def frame(self, frame: StatusFrame) -> tuple[StatusFrame | None, list[tuple[int, Rejected]]]:
        """Fold the reports of ``frame`` its host accepts; return them as a frame (None: none was)
        and the refused ones by index in the frame. Raises ``Rejected`` if the host is unknown, or
        if the frame says that its round ran (``balanced``: only the log says so)."""
        refuse_marked(frame)
        rejected = apply_frame(self.host(frame.host), frame)
        return kept_reports(frame, rejected), rejected

    def round(self, host: str, at_ms: int) -> BalancerRound:
        """Run a balancing round of ``host`` at ``at_ms``, fold it, and return it as one entry."""
        state = self.host(host)
        fold(state, BalancerTicked(at_ms=at_ms, host=host))
        decisions = balancer.plan(state, at_ms)
        if decisions:
            fold_round(state, at_ms, decisions)
        return trusted(BalancerRound, at_ms=at_ms, host=host, decisions=decisions)

    def rounds(self, due: Sequence[tuple[str, int]]) -> list[BalancerRound]:
        """``round`` of each (host, at_ms), the hosts all different, computed together
        (``twin.rounds``): the same entries as one ``round`` after the other."""
        states = [self.host(host) for host, _ in due]
        for state, (host, at_ms) in zip(states, due):
            fold(state, BalancerTicked(at_ms=at_ms, host=host))
        entries = []
        for state, (host, at_ms), decisions in zip(states, due, plan_many([(s, at) for s, (_, at) in zip(states, due)])):
            if decisions:
                fold_round(state, at_ms, decisions)
            entries.append(trusted(BalancerRound, at_ms=at_ms, host=host, decisions=decisions))
        return entries

    def due(self, host: str, at_ms: int, tick_ms: int = 1000) -> bool:
        """Whether an input of ``host`` at ``at_ms`` makes a round due: a tick has passed since the
        host's last round, and the input is not behind the host's clock."""
        state = self.hosts.get(host)
        return state is not None and at_ms - state.last_round_ms >= tick_ms and at_ms >= state.last_at_ms

    def ingest(self, message: InputEvent | StatusFrame, tick_ms: int = 1000, run_round: bool = True
               ) -> tuple[list[InputEvent | Decision | StatusFrame | BalancerRound], list[tuple[int | None, Rejected]]]:
        """The live driver's rule: fold one input message, then run a balancing round of its host if
        a tick has passed since the host's last round.

        Returns the log entries in order (the input, or the frame's accepted reports as one frame;
        any decisions of the input; the round, if one ran, as one entry with its decisions) and the
        rejected inputs, with their index in the frame (None: the message as a whole). Rounds are
        recorded, so replaying the log needs no clock. ``run_round=False`` leaves a due round to the
        caller (``due``, then ``rounds`` for many hosts at once).
        """
        entries: list[InputEvent | Decision | StatusFrame | BalancerRound] = []
        if isinstance(message, StatusFrame):
            try:
                kept, refused = self.frame(message)
            except Rejected as error:
                return [], [(None, error)]
            rejected: list[tuple[int | None, Rejected]] = list(refused)
            if kept is None:
                return [], rejected
            entries.append(kept)
        else:
            rejected = []
            try:
                if isinstance(message, BalancerTicked):  # a round asked for: recorded as the round
                    return [self.round(message.host, message.at_ms)], rejected
                decisions = self.handle(message)
            except Rejected as error:
                return [], [(None, error)]
            entries.append(message)
            entries.extend(decisions)
        if run_round and self.due(message.host, message.at_ms, tick_ms):
            entries.append(self.round(message.host, message.at_ms))
        return entries, rejected

    def handle_all(self, events: Iterable[InputEvent]) -> list[Decision]:
        """``handle`` each input in turn; return every decision."""
        return [d for event in events for d in self.handle(event)]

    def rederive(self, entries: Iterable[InputEvent | Decision | StatusFrame | BalancerRound]) -> list[Decision]:
        """Every decision a log's inputs lead to: recorded decisions are skipped, each round is run
        again (``round``) and each other input handled."""
        decisions: list[Decision] = []
        for entry in entries:
            if isinstance(entry, BalancerRound):
                decisions += self.round(entry.host, entry.at_ms).decisions
            elif isinstance(entry, StatusFrame) and entry.balanced:  # its reports, then its round
                self.apply(entry.model_copy(update={"balanced": False}))
                decisions += self.round(entry.host, entry.at_ms).decisions
            elif not isinstance(entry, DECISION_TYPES):
                decisions += self.handle(entry)  # type: ignore[arg-type]
        return decisions

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
