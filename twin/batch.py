"""Messages of many hosts folded the way the live worker folds a transaction's worth.

Folding a frame and running a round each cost a few dozen small array operations, whatever the
number of VMs. A ``Batch`` therefore lets each host's frame fold and round wait until that host's
next message (or ``flush``), and then does the waiting work of every host together: the frames in
one pass over all their VMs (``twin.frames.fold_many``), then the rounds (``Twin.rounds``). Each
host sees exactly the changes it would see one message at a time, in the same order, so the log
and the state are the same bit for bit; only the work is shared.
"""

from __future__ import annotations

from . import frames
from .engine import Twin, kept_reports, refuse_marked
from .errors import Rejected
from .events import BalancerRound, Decision, InputEvent, StatusFrame
from .host import apply_frame
from .state import HostState

__all__ = ["Batch"]

Entry = InputEvent | Decision | StatusFrame | BalancerRound


class Batch:
    """Folds messages into ``twin``, sharing the work of many hosts (module docstring)."""

    def __init__(self, twin: Twin, tick_ms: int = 1000) -> None:
        self.twin = twin
        self.tick_ms = tick_ms
        self.frames: dict[str, tuple[HostState, int, frames.FrameCheck]] = {}
        self.due: dict[str, int] = {}

    def add(self, message: InputEvent | StatusFrame) -> tuple[list[Entry], list[tuple[int | None, Rejected]],
                                                              list[tuple[str, BalancerRound]]]:
        """Take one message: its log entries but its round (which comes from a later ``flush``), its
        refusals (by index in a frame), and the rounds this message made run first, by host (the
        work waiting when its host had some)."""
        host = message.host
        earlier = self.settle(host)
        if isinstance(message, StatusFrame):
            entries, rejected = self._frame(message)
        else:
            entries, rejected = self.twin.ingest(message, self.tick_ms, run_round=False)
        if entries and self.twin.due(host, message.at_ms, self.tick_ms):
            self.due[host] = message.at_ms
        return entries, rejected, earlier

    def settle(self, host: str) -> list[tuple[str, BalancerRound]]:
        """If ``host`` has work waiting, do all the waiting work now (``flush``), so that the host
        reads as it would one message at a time: before anything reads its clock or its VMs."""
        return self.flush() if host in self.frames or host in self.due else []

    def flush(self) -> list[tuple[str, BalancerRound]]:
        """Fold the waiting frames, then run the due rounds; the rounds, by host."""
        frames.fold_many(list(self.frames.values()))
        self.frames.clear()
        if not self.due:
            return []
        due = list(self.due.items())
        self.due.clear()
        return [(host, entry) for (host, _), entry in zip(due, self.twin.rounds(due))]

    def _frame(self, frame: StatusFrame) -> tuple[list[Entry], list[tuple[int | None, Rejected]]]:
        try:
            refuse_marked(frame)
            state = self.twin.host(frame.host)
        except Rejected as error:
            return [], [(None, error)]
        checked = frames.check(state, frame)
        if checked is None:  # a VM twice: report by report, now
            refused = apply_frame(state, frame)
        else:
            refused = checked.rejected
            self.frames[frame.host] = (state, frame.at_ms, checked)
        kept = kept_reports(frame, refused)
        return ([kept] if kept is not None else []), list(refused)
