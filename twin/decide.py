"""From a round's wants to its requests: the amounts of every VM at once, then the decisions.

``balancer.plan`` (one host) and ``rounds.plan_many`` (many hosts) share this last step. Growth
is paid from each host's free memory in growth order, so an amount depends on what the VMs
before it took; but while a host has enough left for a VM's whole request, the amount does not
depend on how much is left. So the amounts are computed for all VMs at once with a running sum,
and only from a host's first VM that could not get its whole request on does a plain loop count
the rest out, as one would one VM at a time: the same amounts, bit for bit.

The requests are rows of plain values (``twin.decisions``): an event object per decision, even
one built without validation, cost most of a busy round.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .decisions import BALLOON, HOT_ADD, UNBALLOON, Row
from .state import HostState

__all__ = ["growth_requests", "balloon_requests"]


def growth_requests(states: Sequence[HostState], free: list[int], max_add: int, of: np.ndarray, i: np.ndarray,
                    wanted: np.ndarray, held: np.ndarray, needs: np.ndarray, pressure: np.ndarray,
                    ballooned: np.ndarray, align: np.ndarray, room: np.ndarray, names: Sequence[str],
                    at_once: int = 16) -> list[tuple[int, Row]]:
    """The growth requests, as (host, row) in the order given (sorted by host, then growth
    order). Arrays are over the VMs that want to grow: ``of`` their host (an index into ``states``
    and ``free``), ``i`` their row in ``names``. Counts each host's ``free`` down (in place).

    A VM gets ``min(wanted, free, max_add)``: first back from its balloon, else hot-added in
    multiples of its alignment, at most ``room``; a VM whose hot-add rounds to nothing gets
    nothing, and a host with nothing left stops granting. Fewer than ``at_once`` VMs are counted
    one at a time throughout (the same amounts)."""
    n = len(of)
    if n < at_once:  # a few requests: numpy's per-call cost is more than the loop's
        made = (_one_growth(states[h], free, h, j, max_add, i, wanted, held, needs, pressure,
                            ballooned, align, room, names) for j, h in enumerate(of.tolist()))
        return [(h, d) for h, d in zip(of.tolist(), made) if d is not None]
    cap = np.minimum(wanted, max_add)
    added = -(-cap // align) * align
    added = np.where(added > room, room // align * align, added)
    unballoon = ballooned > 0
    amount = np.maximum(np.where(unballoon, np.minimum(cap, ballooned), added), 0)
    taken = np.cumsum(amount)
    first = np.searchsorted(of, of, side="left")  # each VM's host's first VM in the order
    left = np.asarray(free, dtype=np.int64)[of] - (taken - amount - (taken[first] - amount[first]))
    short = (left < np.maximum(cap, amount)) | (left <= 0)  # the amount would depend on what is left
    stop = np.full(len(free), n)
    np.minimum.at(stop, of[short], np.flatnonzero(short))
    exact = np.arange(n) < stop[of]

    out: list[tuple[int, Row]] = []
    granted = exact & (amount > 0)
    columns = (of, i, amount, wanted, held, needs, pressure, unballoon)
    for h, row, got, want, had, need, press, back in zip(*(c[granted].tolist() for c in columns)):
        out.append((h, _growth(states[h], names[row], back, got, want, had, need, press)))
    free[:] = (np.asarray(free, dtype=np.int64) - np.bincount(of[exact], weights=amount[exact],
                                                               minlength=len(free)).astype(np.int64)).tolist()
    ends = np.searchsorted(of, np.arange(len(free)), side="right").tolist()
    for h in np.flatnonzero(stop < n).tolist():  # the hosts that ran short: the rest one VM at a time
        for j in range(int(stop[h]), ends[h]):
            decision = _one_growth(states[h], free, h, j, max_add, i, wanted, held, needs, pressure,
                                   ballooned, align, room, names)
            if decision is not None:
                out.append((h, decision))
    return out


def _one_growth(state: HostState, free: list[int], h: int, j: int, max_add: int, i: np.ndarray,
                wanted: np.ndarray, held: np.ndarray, needs: np.ndarray, pressure: np.ndarray,
                ballooned: np.ndarray, align: np.ndarray, room: np.ndarray, names: Sequence[str]) -> Row | None:
    """VM ``j``'s growth counted against what its host has left, one VM at a time."""
    left = free[h]
    if left <= 0:
        return None
    want, step = int(wanted[j]), int(align[j])
    grant = min(want, left, max_add)
    back = int(ballooned[j]) > 0
    if back:
        amount = min(grant, int(ballooned[j]))
    else:
        amount = -(-grant // step) * step
        space = int(room[j])
        if amount > min(space, left):
            amount = min(space, left) // step * step
        if amount <= 0:
            return None
    free[h] = left - amount
    return _growth(state, names[int(i[j])], back, amount, want, int(held[j]), int(needs[j]),
                   int(pressure[j]))


def _growth(state: HostState, vm: str, back: bool, amount: int, want: int, held: int, needs: int,
            press: int) -> Row:
    why = "short of memory" if needs > held else "below ideal"
    kind = UNBALLOON if back else HOT_ADD  # ballooned pages go back first (§1.5)
    return (kind, vm, state.last_seq.get(vm, 0) + 1, amount, held + amount, needs, held, press, held + want, why)


def balloon_requests(states: Sequence[HostState], why: Sequence[str], of: np.ndarray, i: np.ndarray,
                     amount: np.ndarray, held: np.ndarray, needs: np.ndarray, pressure: np.ndarray,
                     target: np.ndarray, paged: np.ndarray, names: Sequence[str]) -> list[tuple[int, Row]]:
    """The balloon requests, as (host, row), over the VMs that shrink (``why``: per host)."""
    physical = np.maximum(0, amount - paged)  # Smart-Paged pages go first
    columns = (of, i, amount, held, needs, pressure, target, held - physical)
    out = []
    for h, row, got, had, need, press, aim, after in zip(*(c.tolist() for c in columns)):
        vm = names[row]
        out.append((h, (BALLOON, vm, states[h].last_seq.get(vm, 0) + 1, got, after, need, had, press, aim, why[h])))
    return out
