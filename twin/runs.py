"""Runs of frames folded at once: many frames of a host in a row, of many hosts, as a few array
operations over all their reports (``fold_runs``), with what the host looked like after each frame.

A run is frames of one host, each reporting every VM of the host once, with nothing else folded
between them (a round that decided nothing changes no VM). Each report folds as ``twin.frames``
folds it (see ``twin.host._status_reported`` for each step's meaning): the pressure of a report
needs only the report and the VM's memory, which the run does not change, so only the pressure
window and "surplus since" carry from one frame to the next, and those are running sums and
running starts over each VM's reports. ``twin.audit`` uses it to re-derive a log's frames and
rounds many at a time; a run that anything refuses is left for the frame-by-frame path, which
says what is wrong and where.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .frames import measure
from .state import NO_DATA, PRESSURE_WINDOW, Col, HostState

__all__ = ["Run", "fold_runs", "MAX_RUN"]

MAX_RUN = PRESSURE_WINDOW
"""Frames in a run at most: each report of a run then drops a pressure from before the run."""


@dataclass
class Run:
    """Frames of one host in a row, each reporting every VM once: their times, and each report's
    row, committed and available memory, frame after frame."""

    state: HostState
    at: list[int] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)
    committed: list[int] = field(default_factory=list)
    available: list[int] = field(default_factory=list)

    def add(self, at_ms: int, rows: list[int], committed: list[int], available: list[int]) -> None:
        self.at.append(at_ms)
        self.rows += rows
        self.committed += committed
        self.available += available


def fold_runs(runs: list[Run]) -> list[np.ndarray | None]:
    """Fold each run into its host's state; return, for each, the VM rows after each frame as an
    array of shape (VMs, frames, columns), ``after[:, j]`` after frame ``j``; None for a run left
    unfolded because the host refuses or supersedes one of its reports."""
    sizes = [len(run.state.vms) for run in runs]
    frames = [len(run.at) for run in runs]
    width = [n * k for n, k in zip(sizes, frames)]
    vm_base = np.cumsum([0] + sizes)
    # every report, in the order (run, row, frame): each VM's reports together, in time order
    row = np.array([r for run in runs for r in run.rows], dtype=np.int64)
    run_of = np.repeat(np.arange(len(runs)), width)
    frame_of = np.concatenate([np.repeat(np.arange(k), n) for n, k in zip(sizes, frames)])
    vm = vm_base[run_of] + row
    order = np.lexsort((frame_of, vm))
    vm, frame_of, run_of = vm[order], frame_of[order], run_of[order]
    at = np.concatenate([np.repeat(np.array(run.at, dtype=np.int64), n) for run, n in zip(runs, sizes)])[order]
    committed = np.array([c for run in runs for c in run.committed], dtype=np.int64)[order]
    available = np.array([a for run in runs for a in run.available], dtype=np.int64)[order]
    base = np.concatenate([run.state.vms.rows for run in runs])
    history = np.concatenate([run.state.vms.history[:n] for run, n in zip(runs, sizes)])
    rows = base[vm]  # each report's VM as before the run, to be updated
    first = frame_of == 0

    previous = np.where(first, rows[:, Col.LAST_AT], np.concatenate((at[:1], at[:-1])))
    refused = (at < previous) | (at < rows[:, Col.STARTED_AT]) | (available > rows[:, Col.VISIBLE])
    bad = np.bincount(run_of[refused], minlength=len(runs)) > 0 if refused.any() else np.zeros(len(runs), bool)

    demand, pressure, surplus = measure(rows, committed)

    count = rows[:, Col.PRESSURE_COUNT] + frame_of
    slot = count % PRESSURE_WINDOW
    dropped = np.where(count >= PRESSURE_WINDOW, history[vm, slot], 0)
    total = np.cumsum(pressure - dropped)
    start = np.flatnonzero(first)  # each VM's first report of the run
    starts = np.repeat(start, np.diff(np.append(start, len(vm))))
    before = np.concatenate(([0], total))[starts]
    # "surplus since": the time of the first report of the surplus stretch a report is in, or the
    # VM's own if the stretch began before the run
    opens = surplus & (first | ~np.concatenate((surplus[:1], surplus[:-1])))
    began = np.maximum.accumulate(np.where(opens, np.arange(len(vm)), 0))
    carried = rows[:, Col.SURPLUS_SINCE]
    since = np.where(first[began] & (carried[began] != NO_DATA), carried[began], at[began])

    rows[:, Col.SURPLUS_SINCE] = np.where(surplus, since, NO_DATA)
    rows[:, Col.COMMITTED] = committed
    rows[:, Col.AVAILABLE] = available
    rows[:, Col.DEMAND] = demand
    rows[:, Col.PRESSURE_SUM] += total - before
    rows[:, Col.PRESSURE_COUNT] = count + 1
    rows[:, Col.LAST_AT] = at

    out: list[np.ndarray | None] = []
    offset = 0
    for j, (run, n, k) in enumerate(zip(runs, sizes, frames)):
        after = rows[offset:offset + n * k].reshape(n, k, -1)
        if bad[j]:
            out.append(None)
        else:
            vms = run.state.vms
            vms.data[:n] = after[:, -1]
            local = vm[offset:offset + n * k] - vm_base[j]
            vms.history[local, slot[offset:offset + n * k]] = pressure[offset:offset + n * k]
            out.append(after)
        offset += n * k
    return out
