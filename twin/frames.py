"""A frame of status reports folded at once: the same arithmetic as one report at a time
(``twin.host``), as a few array operations over the frame's VMs.

``check`` finds which reports the host refuses (a VM not running, a report before its VM's
start, more available memory than the guest can see) and which are superseded (older than the
VM's last event: they change nothing); ``fold`` applies the rest. Integer arithmetic only, so
the result is bit for bit the result of folding the reports one by one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .errors import Rejected
from .events import StatusFrame
from .state import NO_DATA, PRESSURE_WINDOW, Col, HostState

__all__ = ["FrameCheck", "check", "fold", "fold_many", "measure", "SURPLUS_SLACK_PERCENT"]

SURPLUS_SLACK_PERCENT = 10
"""A VM counts as holding surplus once assigned exceeds ideal by this much (see balancer)."""


@dataclass
class FrameCheck:
    """The outcome of checking a frame against its host: rows to fold, and refusals by index."""

    rows: np.ndarray
    """Row of each report to fold (unique VMs, in frame order)."""
    reports: np.ndarray
    """Index in the frame of each of those rows."""
    rejected: list[tuple[int, Rejected]]
    superseded: int = 0
    sub: np.ndarray | None = None
    """The rows of those VMs (a copy, as read)."""
    committed: np.ndarray | None = None
    available: np.ndarray | None = None


def check(state: HostState, frame: StatusFrame) -> FrameCheck | None:
    """Which reports fold and which are refused; None if a VM reports twice (fold it report by
    report then: the second report sees the first)."""
    index, at_ms = state.vms.index, frame.at_ms
    rows: list[int] = []
    positions: list[int] = []
    values: list[int] = []  # committed, available of each report found, in turn
    rejected: list[tuple[int, Rejected]] = []
    for k, report in enumerate(frame.reports):
        i = index.get(report.vm)
        if i is None:
            rejected.append((k, Rejected("vm", report.vm, f"no such VM running on host {state.name!r}")))
            continue
        rows.append(i)
        positions.append(k)
        values += (report.committed_mib, report.available_mib)
    if len(set(rows)) != len(rows):
        return None
    idx = np.array(rows, dtype=np.intp)
    at = np.array(positions, dtype=np.intp)
    reports = frame.reports
    pairs = np.array(values, dtype=np.int64).reshape(-1, 2)
    available = pairs[:, 1]
    sub = state.vms.data[idx]
    started = sub[:, Col.STARTED_AT]
    late = at_ms < sub[:, Col.LAST_AT]
    before = at_ms < started
    over = ~late & ~before & (available > sub[:, Col.VISIBLE])
    refused = before | over
    if refused.any():
        for j in np.flatnonzero(refused).tolist():
            k, name = positions[j], reports[positions[j]].vm
            if before[j]:
                error = Rejected("at_ms", at_ms, f"time goes backwards for VM {name!r}: before its start at "
                                                 f"{int(started[j])}")
            else:
                error = Rejected("available_mib", int(available[j]),
                                 f"more than the {int(sub[j, Col.VISIBLE])} MiB the guest can see")
            rejected.append((k, error))
        rejected.sort(key=lambda item: item[0])
    keep = ~(late | refused)
    if keep.all():
        return FrameCheck(idx, at, rejected, 0, sub, pairs[:, 0], available)
    return FrameCheck(idx[keep], at[keep], rejected, int(late.sum()), sub[keep], pairs[keep, 0], available[keep])


def measure(rows: np.ndarray, committed: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each report's demand, pressure and whether its VM holds surplus, from the report's committed
    memory and its VM's ``rows`` (one row per report)."""
    assigned = rows[:, Col.ASSIGNED]
    ballooned = rows[:, Col.VISIBLE] - assigned - rows[:, Col.PAGING]
    demand = np.maximum(0, committed - ballooned)
    pressure = (200 * demand + assigned) // (2 * np.maximum(assigned, 1))
    pressure[assigned <= 0] = 0
    wanted = -(-demand * (100 + rows[:, Col.BUFFER_PERCENT]) // 100)
    ideal = np.minimum(np.maximum(wanted, rows[:, Col.MINIMUM]), rows[:, Col.MAXIMUM])
    return demand, pressure, 100 * assigned > (100 + SURPLUS_SLACK_PERCENT) * ideal


def fold(state: HostState, frame: StatusFrame, checked: FrameCheck) -> None:
    """Fold the reports ``check`` kept (see ``twin.host._status_reported`` for each step's meaning)."""
    fold_many([(state, frame.at_ms, checked)])


def fold_many(folds: Sequence[tuple[HostState, int, FrameCheck]]) -> None:
    """``fold`` the checked frames of several hosts (at most one each) in one pass over all their VMs."""
    folds = [f for f in folds if len(f[2].rows)]
    if not folds:
        return
    parts = [(c.sub, c.committed, c.available) for _, _, c in folds]
    if len(folds) == 1:
        (sub, committed, available), = parts
        at: np.ndarray | int = folds[0][1]
    else:
        sub = np.concatenate([p[0] for p in parts])  # type: ignore[misc]
        committed = np.concatenate([p[1] for p in parts])  # type: ignore[misc]
        available = np.concatenate([p[2] for p in parts])  # type: ignore[misc]
        at = np.repeat(np.array([at_ms for _, at_ms, _ in folds], dtype=np.int64), [len(c.rows) for _, _, c in folds])
    assert sub is not None and committed is not None and available is not None
    bounds = np.cumsum([0] + [len(c.rows) for _, _, c in folds]).tolist()
    count = sub[:, Col.PRESSURE_COUNT]
    slot = count % PRESSURE_WINDOW
    old = np.concatenate([state.vms.history[c.rows, slot[a:b]] for (state, _, c), a, b in
                          zip(folds, bounds, bounds[1:])]) if len(folds) > 1 else \
        folds[0][0].vms.history[folds[0][2].rows, slot]
    dropped = np.where(count >= PRESSURE_WINDOW, old, 0)
    demand, pressure, surplus = measure(sub, committed)
    since = sub[:, Col.SURPLUS_SINCE]
    sub[:, Col.SURPLUS_SINCE] = np.where(surplus, np.where(since == NO_DATA, at, since), NO_DATA)
    sub[:, Col.COMMITTED] = committed
    sub[:, Col.AVAILABLE] = available
    sub[:, Col.DEMAND] = demand
    sub[:, Col.PRESSURE_SUM] += pressure - dropped
    sub[:, Col.PRESSURE_COUNT] = count + 1
    sub[:, Col.LAST_AT] = at
    for (state, _, c), a, b in zip(folds, bounds, bounds[1:]):
        state.vms.history[c.rows, slot[a:b]] = pressure[a:b]
        state.vms.data[c.rows] = sub[a:b]
