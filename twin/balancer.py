"""One balancing round: from a host's state to decisions, vectorised over the host's VMs.

``plan`` is a pure function. The policy (``twin.policies``) chooses targets; the mechanism here
enforces what every policy must respect (DOMAIN.md §1.4, §1.5, §2.4):

1. One transaction in flight per VM: a VM waiting for its guest's answer is left alone.
2. Never below Minimum nor, for a minute, below where the guest last refused to balloon; never above
   Maximum; guests without hot-add (or whose hot-add failed for good) only get ballooned memory
   back, so never more than they have seen.
3. Never more assigned than total − reserve: growth is paid from free memory only, in order of
   weight, then pressure; reclaimed memory is free only once the guest has answered.
4. Memory comes back by unballooning first, and only then by hot-add, in multiples of the guest's
   hot-add alignment (§1.5). Balloon requests are in 2 MiB units and at most 585,728 pages.
5. Hysteresis: growth needs a gap of 5 % (32 MiB if the guest is short of memory, at least); removal
   needs 10 % (≥ 64 MiB), and under ``hyperv`` only when the host is short or the surplus has
   lasted a minute (Hyper-V reclaims late, §1.4).
6. Smart Paging ends as soon as free memory can back the paged pages, or once they were ballooned.

The last step, from wants to requests, is ``twin.decide``'s, shared with ``twin.rounds``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .decide import balloon_requests, growth_requests
from .decisions import Decisions
from .events import (
    BalloonTargetSet,
    MemoryAdditionRequested,
    SmartPagingEnded,
    UnballoonRequested,
)
from .policies import POLICIES, Snapshot
from .state import NO_DATA, Col, HostState, Pending

__all__ = ["BalancerParams", "PARAMS", "Assessment", "assess", "plan", "Decision"]

Decision = BalloonTargetSet | UnballoonRequested | MemoryAdditionRequested | SmartPagingEnded
_IDLE = int(Pending.NONE)  # an enum member is slow to look up: the round reads it every time


@dataclass(frozen=True)
class BalancerParams:
    """The mechanism's knobs, units in their names."""

    grow_deadband_percent: int = 5
    grow_deadband_mib: int = 32
    shrink_deadband_percent: int = 10
    shrink_deadband_mib: int = 64
    reclaim_after_ms: int = 60_000
    """Idle surplus is reclaimed only after it lasted this long (unless the host is short)."""
    balloon_unit_mib: int = 2
    """The host balloons in 2 MB units (hv_balloon.c, DOMAIN.md §1.5)."""
    max_balloon_mib: int = 2288
    """585,728 pages: the most Windows returns in one answer (QEMU hv-balloon.c, §1.5)."""
    max_add_mib: int = 2048
    """Hot-add and unballoon in pieces of at most 2 GiB (QEMU hv-balloon.c, §1.5)."""


PARAMS: dict[str, BalancerParams] = {
    "hyperv": BalancerParams(),
    "squeezed": BalancerParams(reclaim_after_ms=0),
    "mom": BalancerParams(reclaim_after_ms=0, grow_deadband_percent=0, grow_deadband_mib=1,
                          shrink_deadband_percent=0, shrink_deadband_mib=1),
    "esx": BalancerParams(reclaim_after_ms=0),
}


@dataclass(frozen=True)
class Assessment:
    """What one round sees and wants, before it turns wants into requests (``plan``).

    Arrays are over the VMs the round may act on (``idx``: their rows): idle, Dynamic Memory on,
    a status report received. ``twin.audit`` reads it to explain a decision in words.
    """

    policy: str
    params: BalancerParams
    free_mib: int
    """Free memory once the Smart Paging files that could be backed were (``ending``)."""
    ending: list[SmartPagingEnded]
    idx: np.ndarray
    snapshot: Snapshot | None
    """The policy's input; None when no VM is eligible."""
    target: np.ndarray
    """The policy's target, within the hard bounds (``snapshot.lower``/``upper``)."""
    grow_band: np.ndarray
    grow: np.ndarray
    want: np.ndarray
    host_short: bool
    """The VMs' wanted growth exceeds the free memory."""
    shrink_band: np.ndarray
    lasted: np.ndarray
    """The VM's surplus has lasted ``reclaim_after_ms``."""
    shrink: np.ndarray
    pressure: np.ndarray
    order: np.ndarray
    """Growth order: weight, then pressure, then row."""


def assess(state: HostState, at_ms: int, policy: str | None = None) -> Assessment:
    """The round's view of ``state`` at ``at_ms``: bounds, targets, dead bands, who grows first."""
    name = policy or state.policy
    params = PARAMS[name]
    rows = state.vms.rows
    names = state.vms.names
    free = state.free_mib()
    ending: list[SmartPagingEnded] = []
    empty = np.zeros(0, dtype=np.int64)
    if len(rows) == 0:
        return Assessment(name, params, free, ending, empty, None, empty, empty, empty.astype(bool), empty,
                          False, empty, empty.astype(bool), empty.astype(bool), empty, empty)

    idle = rows[:, Col.PENDING] == _IDLE
    paging = rows[:, Col.PAGING]
    for i in np.flatnonzero(idle & (rows[:, Col.SMART_PAGING] == 1)):
        backed = int(paging[i])
        if backed <= free:
            free -= backed
            ending.append(SmartPagingEnded(at_ms=at_ms, host=state.name, vm=names[i],
                                           seq=_next_seq(state, names[i]), backed_mib=backed))
    eligible = idle & (rows[:, Col.DM_ENABLED] == 1) & (rows[:, Col.DEMAND] != NO_DATA)
    if ending:
        eligible[[state.vms.index[d.vm] for d in ending]] = False
    idx = np.flatnonzero(eligible)
    if len(idx) == 0:
        return Assessment(name, params, free, ending, idx, None, empty, empty, empty.astype(bool), empty,
                          False, empty, empty.astype(bool), empty.astype(bool), empty, empty)

    sub = rows[idx]
    assigned = sub[:, Col.ASSIGNED]
    demand = sub[:, Col.DEMAND]
    visible = sub[:, Col.VISIBLE]
    paged = sub[:, Col.PAGING]
    can_balloon = sub[:, Col.CAN_BALLOON] == 1
    can_add = (sub[:, Col.CAN_HOT_ADD] == 1) & (sub[:, Col.HOT_ADD_BLOCKED] == 0) & (sub[:, Col.RETRY_AT] <= at_ms)
    floor = np.where(sub[:, Col.FLOOR_UNTIL] > at_ms, sub[:, Col.FLOOR], 0)
    lower = np.where(can_balloon, np.maximum(sub[:, Col.MINIMUM], floor), assigned)
    lower = np.minimum(lower, assigned)
    upper = np.where(can_add, sub[:, Col.MAXIMUM] - paged, visible - paged)
    upper = np.maximum(upper, assigned)
    snapshot = Snapshot(
        assigned=assigned, demand=demand, available=sub[:, Col.AVAILABLE], minimum=sub[:, Col.MINIMUM],
        maximum=sub[:, Col.MAXIMUM], buffer_percent=sub[:, Col.BUFFER_PERCENT], weight=sub[:, Col.WEIGHT],
        lower=lower, upper=upper, budget_mib=free + int(assigned.sum()), free_mib=free,
        capacity_mib=state.capacity_mib)
    target = np.clip(POLICIES[name](snapshot), lower, upper)
    delta = target - assigned

    grow_band = np.maximum(params.grow_deadband_mib, assigned * params.grow_deadband_percent // 100)
    short = demand > assigned  # Warning: a smaller step is worth it, the guest is paging
    grow = delta >= np.where(short, params.grow_deadband_mib, grow_band)
    want = np.where(grow, delta, 0)
    host_short = int(want.sum()) > free
    shrink_band = np.maximum(params.shrink_deadband_mib, assigned * params.shrink_deadband_percent // 100)
    since = sub[:, Col.SURPLUS_SINCE]
    lasted = (since != NO_DATA) & (at_ms - since >= params.reclaim_after_ms)
    shrink = (-delta >= shrink_band) & (host_short | lasted | (params.reclaim_after_ms == 0))

    # Grow in order of weight, then pressure (most pressed first), then row: all deterministic.
    pressure = (200 * demand + assigned) // (2 * np.maximum(assigned, 1))
    order = np.lexsort((np.arange(len(idx)), -pressure, -sub[:, Col.WEIGHT]))
    return Assessment(name, params, free, ending, idx, snapshot, target, grow_band, grow, want, host_short,
                      shrink_band, lasted, shrink, pressure, order)


def plan(state: HostState, at_ms: int, policy: str | None = None) -> Decisions:
    """Decisions of one round on ``state`` at event time ``at_ms`` (sequence numbers assigned), as
    rows that are made into events when asked for (``twin.decisions``)."""
    a = assess(state, at_ms, policy)
    decisions = Decisions(state.name, at_ms, a.policy)
    decisions.head += a.ending
    if a.snapshot is None:
        return decisions
    params, free, idx, s = a.params, a.free_mib, a.idx, a.snapshot
    names = state.vms.names
    sub = state.vms.rows[idx]
    assigned, demand, paged = s.assigned, s.demand, sub[:, Col.PAGING]
    visible = sub[:, Col.VISIBLE]
    want, pressure, target = a.want, a.pressure, a.target

    growing = a.order[want[a.order] > 0]
    room = np.minimum(sub[:, Col.MAXIMUM] - assigned - paged, params.max_add_mib)
    host = np.zeros(len(growing), dtype=np.int64)
    decisions.rows += [row for _, row in growth_requests(
        [state], [free], params.max_add_mib, host, idx[growing], want[growing],
        assigned[growing], demand[growing], pressure[growing], (visible - assigned - paged)[growing],
        sub[growing, Col.ALIGNMENT], room[growing], names)]

    unit = params.balloon_unit_mib
    remove = np.minimum(assigned - target, params.max_balloon_mib) // unit * unit
    shrinking = np.flatnonzero(a.shrink & (remove > 0))
    decisions.rows += [row for _, row in balloon_requests(
        [state], ["host short" if a.host_short else "surplus"], np.zeros(len(shrinking), dtype=np.int64),
        idx[shrinking], remove[shrinking], assigned[shrinking], demand[shrinking], pressure[shrinking],
        target[shrinking], paged[shrinking], names)]
    return decisions


def _next_seq(state: HostState, vm: str) -> int:
    """The VM's next decision number (a round makes at most one decision per VM)."""
    return state.last_seq.get(vm, 0) + 1
