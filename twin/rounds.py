"""The balancing rounds of many hosts at once: ``balancer.plan`` for each, computed together.

A round of a small host is a few dozen array operations on a dozen VMs, so it costs numpy's
per-call overhead, not arithmetic. ``plan_many`` stacks the VMs of every host due (grouped by
policy), runs the mechanism of ``twin.balancer`` once over all of them, with each host's scalars
(free memory, budget, "host short") as per-host sums, and calls a policy per host only where it
cannot be done for all at once (``hyperv`` when a host's ideal memory does not fit). The decisions
are those of ``plan`` on each host, bit for bit, in the same order (``tests/twin/test_rounds.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .balancer import PARAMS, _next_seq
from .decide import balloon_requests, growth_requests
from .decisions import Decisions
from .events import SmartPagingEnded
from .policies import POLICIES, Snapshot
from .state import NO_DATA, Col, HostState, Pending

__all__ = ["plan_many"]

_IDLE, _UNBALLOON, _HOT_ADD = int(Pending.NONE), int(Pending.UNBALLOON), int(Pending.HOT_ADD)


def plan_many(rounds: Sequence[tuple[HostState, int]]) -> list[Decisions]:
    """The decisions of a round of each ``(state, at_ms)``, as ``balancer.plan`` makes them."""
    out = [Decisions(state.name, at_ms, state.policy) for state, at_ms in rounds]
    by_policy: dict[str, list[int]] = {}
    for j, (state, _) in enumerate(rounds):
        if len(state.vms):
            by_policy.setdefault(state.policy, []).append(j)
    for policy, members in by_policy.items():
        _plan_group(policy, [rounds[j] for j in members], [out[j] for j in members])
    return out


def _sums(values: np.ndarray, group: np.ndarray, groups: int) -> np.ndarray:
    """Per-group sums of int64 ``values`` (exact: MiB sums stay far below 2^53)."""
    return np.bincount(group, weights=values, minlength=groups).astype(np.int64)


def _plan_group(policy: str, rounds: list[tuple[HostState, int]], out: list[Decisions]) -> None:
    params = PARAMS[policy]
    states = [state for state, _ in rounds]
    hosts = len(states)
    counts = [len(state.vms) for state in states]
    rows = np.concatenate([state.vms.rows for state in states])
    host = np.repeat(np.arange(hosts), counts)
    at = np.repeat(np.array([at_ms for _, at_ms in rounds], dtype=np.int64), counts)
    names = [name for state in states for name in state.vms.names]

    pending = rows[:, Col.PENDING]
    promised = np.where((pending == _UNBALLOON) | (pending == _HOT_ADD), rows[:, Col.PENDING_MIB], 0)
    capacity = [state.capacity_mib for state in states]
    free = [c - int(s) for c, s in zip(capacity, _sums(rows[:, Col.ASSIGNED] + promised, host, hosts).tolist())]

    idle = pending == _IDLE
    paging = rows[:, Col.PAGING]
    eligible = idle & (rows[:, Col.DM_ENABLED] == 1) & (rows[:, Col.DEMAND] != NO_DATA)
    for i in np.flatnonzero(idle & (rows[:, Col.SMART_PAGING] == 1)).tolist():
        h, backed = int(host[i]), int(paging[i])
        if backed <= free[h]:
            free[h] -= backed
            state = states[h]
            out[h].head.append(SmartPagingEnded(at_ms=rounds[h][1], host=state.name, vm=names[i],
                                           seq=_next_seq(state, names[i]), backed_mib=backed))
            eligible[i] = False
    idx = np.flatnonzero(eligible)
    if len(idx) == 0:
        return

    sub = rows[idx]
    of = host[idx]
    when = at[idx]
    assigned = sub[:, Col.ASSIGNED]
    demand = sub[:, Col.DEMAND]
    visible = sub[:, Col.VISIBLE]
    paged = sub[:, Col.PAGING]
    can_balloon = sub[:, Col.CAN_BALLOON] == 1
    can_add = (sub[:, Col.CAN_HOT_ADD] == 1) & (sub[:, Col.HOT_ADD_BLOCKED] == 0) & (sub[:, Col.RETRY_AT] <= when)
    floor = np.where(sub[:, Col.FLOOR_UNTIL] > when, sub[:, Col.FLOOR], 0)
    lower = np.minimum(np.where(can_balloon, np.maximum(sub[:, Col.MINIMUM], floor), assigned), assigned)
    upper = np.maximum(np.where(can_add, sub[:, Col.MAXIMUM] - paged, visible - paged), assigned)
    free_of = np.array(free, dtype=np.int64)
    budget = free_of + _sums(assigned, of, hosts)
    target = _targets(policy, sub, of, hosts, assigned, demand, lower, upper, budget, free, capacity)
    delta = target - assigned

    grow_band = np.maximum(params.grow_deadband_mib, assigned * params.grow_deadband_percent // 100)
    short = demand > assigned
    grow = delta >= np.where(short, params.grow_deadband_mib, grow_band)
    want = np.where(grow, delta, 0)
    host_short = _sums(want, of, hosts) > free_of
    shrink_band = np.maximum(params.shrink_deadband_mib, assigned * params.shrink_deadband_percent // 100)
    since = sub[:, Col.SURPLUS_SINCE]
    lasted = (since != NO_DATA) & (when - since >= params.reclaim_after_ms)
    shrink = (-delta >= shrink_band) & (host_short[of] | lasted | (params.reclaim_after_ms == 0))
    pressure = (200 * demand + assigned) // (2 * np.maximum(assigned, 1))
    order = np.lexsort((np.arange(len(idx)), -pressure, -sub[:, Col.WEIGHT], of))

    growing = order[want[order] > 0]
    room = np.minimum(sub[:, Col.MAXIMUM] - assigned - paged, params.max_add_mib)
    for h, row in growth_requests(states, free, params.max_add_mib, of[growing], idx[growing], want[growing],
                                  assigned[growing], demand[growing], pressure[growing],
                                  (visible - assigned - paged)[growing], sub[growing, Col.ALIGNMENT], room[growing],
                                  names):
        out[h].rows.append(row)

    unit = params.balloon_unit_mib
    remove = np.minimum(assigned - target, params.max_balloon_mib) // unit * unit
    s = np.flatnonzero(shrink & (remove > 0))
    why = ["host short" if short_of else "surplus" for short_of in host_short.tolist()]
    for h, row in balloon_requests(states, why, of[s], idx[s], remove[s], assigned[s], demand[s], pressure[s],
                                   target[s], paged[s], names):
        out[h].rows.append(row)


def _hyperv_crowded(target: np.ndarray, of: np.ndarray, hosts: int, demand: np.ndarray, lower: np.ndarray,
                    upper: np.ndarray, budget: np.ndarray, weight: np.ndarray, crowded: list[int]) -> None:
    """``policies.hyperv`` on the hosts whose ideal memory does not fit, all at once (in place)."""
    on = np.zeros(hosts, dtype=bool)
    on[crowded] = True
    rows = np.flatnonzero(on[of])
    h = of[rows]
    ideal, low = target[rows], lower[rows]
    need = np.clip(demand[rows], low, upper[rows])  # demand without buffer
    fits = (_sums(need, h, hosts) <= budget)[h]
    base = np.where(fits, need, low)
    gap = np.where(fits, ideal - need, need - low)
    amount = budget - _sums(base, h, hosts)
    target[rows] = base + _weighted_fill(gap, amount, weight[rows] + 1, h, hosts)


def _weighted_fill(gap: np.ndarray, amount: np.ndarray, weight: np.ndarray, group: np.ndarray,
                   groups: int) -> np.ndarray:
    """``policies.weighted_fill`` in each group (sorted by group) with its own ``amount``, at once.

    The same float operations on the same values as one group at a time: the cumulative sums are
    of whole numbers (exact), so a group's sums are the global ones less the group's start."""
    gap = np.maximum(gap, 0)
    out = np.zeros_like(gap)
    total = _sums(gap, group, groups)
    share = amount[group]
    full = share >= total[group]
    out[full] = gap[full]
    active = ~full & (share > 0)
    if not active.any():
        return out
    at = np.flatnonzero(active)
    g, gp, w = group[at], gap[at], weight[at].astype(np.float64)
    ratio = gp / w
    order = np.lexsort((np.arange(len(at)), ratio, g))  # by group, then ratio (stable)
    g, gp, w, ratio = g[order], gp[order], w[order], ratio[order]
    start = np.searchsorted(g, g, side="left")
    end = np.searchsorted(g, g, side="right")
    filled_through = np.cumsum(gp, dtype=np.float64)
    filled = filled_through - gp - np.concatenate(([0.0], filled_through))[start]  # before this VM, in its group
    weight_through = np.cumsum(w)
    rest = np.concatenate(([0.0], weight_through))[end] - np.concatenate(([0.0], weight_through))[np.arange(len(g))]
    used = filled + ratio * rest
    want = amount[g]
    k = start + np.bincount(g, weights=used <= want, minlength=groups).astype(np.intp)[g]  # first used > amount
    lam = (want - filled[k]) / rest[k]
    result = np.minimum(gp, np.floor(lam * w).astype(np.int64))
    placed = np.empty_like(result)
    placed[order] = result
    out[at] = placed
    return out


def _targets(policy: str, sub: np.ndarray, of: np.ndarray, hosts: int, assigned: np.ndarray, demand: np.ndarray,
             lower: np.ndarray, upper: np.ndarray, budget: np.ndarray, free: list[int],
             capacity: list[int]) -> np.ndarray:
    """Each VM's target, within its bounds: ``hyperv``'s ideal memory for all hosts where it fits,
    else the policy of each host on its own VMs."""
    if policy == "hyperv":
        wanted = -(-demand * (100 + sub[:, Col.BUFFER_PERCENT]) // 100)
        target = np.clip(wanted, lower, upper)
        crowded = np.flatnonzero(_sums(target, of, hosts) > budget).tolist()
        if crowded:
            _hyperv_crowded(target, of, hosts, demand, lower, upper, budget, sub[:, Col.WEIGHT], crowded)
        return target
    target = np.empty_like(assigned)
    crowded = np.unique(of).tolist()
    if not crowded:
        return target
    starts = np.searchsorted(of, np.arange(hosts), side="left").tolist()
    ends = np.searchsorted(of, np.arange(hosts), side="right").tolist()
    for h in crowded:
        s = slice(starts[h], ends[h])
        snapshot = Snapshot(
            assigned=assigned[s], demand=demand[s], available=sub[s, Col.AVAILABLE], minimum=sub[s, Col.MINIMUM],
            maximum=sub[s, Col.MAXIMUM], buffer_percent=sub[s, Col.BUFFER_PERCENT], weight=sub[s, Col.WEIGHT],
            lower=lower[s], upper=upper[s], budget_mib=int(budget[h]), free_mib=free[h], capacity_mib=capacity[h])
        target[s] = np.clip(POLICIES[policy](snapshot), lower[s], upper[s])
    return target
