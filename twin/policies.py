"""Balancer policies: where each VM's memory should be, as a pure function of a host snapshot.

A policy only chooses targets. The mechanism that turns targets into balloon, unballoon and
hot-add requests (one transaction per VM, bounds, host capacity, granularity, hysteresis) is shared
and lives in ``twin.balancer``, so the policies compare like for like:

- ``hyperv``: documented Hyper-V behaviour (DOMAIN.md §1.4): aim at ideal memory; when the host is
  short drop buffers first, then let weight decide who gets memory.
- ``squeezed``: Xen squeezed's proportional policy (§3.2): one fraction γ of (max − min) for all.
- ``mom``: oVirt MOM's default balloon policy (§3.3): shrink everyone by ≤ 5 % a round when host
  free memory is under 20 %, else grow by ≤ 5 %.
- ``esx``: VMware ESX shares with the idle memory tax (§3.1): equalise shares per adjusted page.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

__all__ = ["Snapshot", "Policy", "POLICIES", "weighted_fill", "hyperv", "squeezed", "mom", "esx"]


@dataclass(frozen=True)
class Snapshot:
    """The VMs a balancing round may act on, as int64 columns (MiB), and the host's budget.

    ``lower``/``upper`` already hold every hard bound (Minimum, the guest's balloon floor, Maximum,
    no growth past the visible memory for guests without hot-add), and ``lower ≤ assigned ≤ upper``.
    ``budget_mib`` is what these VMs may hold together: total − reserve − memory held by the others.
    """

    assigned: np.ndarray
    demand: np.ndarray
    available: np.ndarray
    minimum: np.ndarray
    maximum: np.ndarray
    buffer_percent: np.ndarray
    weight: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    budget_mib: int
    free_mib: int
    capacity_mib: int

    def ideal(self) -> np.ndarray:
        """demand × (1 + buffer), rounded up, within the hard bounds."""
        wanted = -(-self.demand * (100 + self.buffer_percent) // 100)
        return np.clip(wanted, self.lower, self.upper)


Policy = Callable[[Snapshot], np.ndarray]


def weighted_fill(gap: np.ndarray, amount: int, weight: np.ndarray) -> np.ndarray:
    """Share ``amount`` MiB over VMs that each want ``gap``: x = min(gap, λ·weight), Σx = amount.

    Water-filling: VMs whose gap is small for their weight are filled first, the rest get memory in
    proportion to weight. Returns whole MiB, never more than ``gap``. O(n log n).
    """
    gap = np.maximum(gap, 0)
    if amount <= 0 or len(gap) == 0:
        return np.zeros_like(gap)
    if amount >= gap.sum():
        return gap.copy()
    w = weight.astype(np.float64)
    order = np.argsort(gap / w, kind="stable")
    ratio = (gap / w)[order]
    filled = np.concatenate(([0.0], np.cumsum(gap[order], dtype=np.float64)))
    rest_weight = np.concatenate((np.cumsum(w[order][::-1])[::-1], [0.0]))
    # Memory used if λ = ratio[k]: the k VMs before k are full, the others get λ·w.
    used = filled[:-1] + ratio * rest_weight[:-1]
    k = int(np.searchsorted(used, amount, side="right"))
    lam = (amount - filled[k]) / rest_weight[k]
    return np.minimum(gap, np.floor(lam * w).astype(np.int64))


def _priority_weight(weight: np.ndarray) -> np.ndarray:
    """Hyper-V weight 0‥10000 as a share factor; +1 keeps weight-0 VMs from starving outright."""
    return weight + 1


def hyperv(s: Snapshot) -> np.ndarray:
    """Ideal memory for all when it fits; else buffers go first; then weight decides (§1.4).

    The exact contention formula is undocumented (DOMAIN.md §1.4 [U]); weighted water-filling is the
    twin's reading of "weight decides who gets memory", and it gives a high-weight VM more than a
    low-weight one, which is what Microsoft's own test checks (LISAv2, S30).
    """
    ideal = s.ideal()
    if ideal.sum() <= s.budget_mib:
        return ideal
    need = np.clip(s.demand, s.lower, s.upper)  # demand without buffer
    share = _priority_weight(s.weight)
    if need.sum() <= s.budget_mib:
        return need + weighted_fill(ideal - need, s.budget_mib - int(need.sum()), share)
    return s.lower + weighted_fill(need - s.lower, s.budget_mib - int(s.lower.sum()), share)


SQUEEZED_SLUSH_MIB = 9
"""squeezed keeps 1 MiB low-memory emergency pool + 8 MiB free on the host (§3.2)."""


def squeezed(s: Snapshot) -> np.ndarray:
    """Xen squeezed's Proportional policy: target = min + γ·(max − min), the same γ for every VM,
    γ = clamp(surplus ÷ Σ(max − min), 0, 1). It does not look at demand (§3.2)."""
    span = s.upper - s.lower
    surplus = s.budget_mib - SQUEEZED_SLUSH_MIB - int(s.lower.sum())
    total_span = int(span.sum())
    gamma = min(max(surplus / total_span, 0.0), 1.0) if total_span else 0.0
    target = s.lower + np.floor(gamma * span).astype(np.int64)
    # Two phases (§3.2): while any domain must free memory, only the freeing targets are issued;
    # allocations wait until nobody needs to free. "Must free" is a shrink the mechanism would
    # make (past its dead band, ``BalancerParams``: 10 %, at least 64 MiB).
    must_free = s.assigned - target >= np.maximum(64, s.assigned // 10)
    if must_free.any():
        return np.minimum(target, s.assigned)
    return target


MOM_PRESSURE_THRESHOLD = 0.20
MOM_PRESSURE_CRITICAL = 0.05
MOM_MIN_GUEST_FREE = 0.20
MOM_MAX_CHANGE = 0.05
MOM_MIN_CHANGE = 0.0025


def mom(s: Snapshot) -> np.ndarray:
    """oVirt MOM's default balloon policy (vdsm 02-balloon.policy, §3.3), on each VM's current size."""
    current = s.assigned.astype(np.float64)
    used = s.demand.astype(np.float64)
    host_free = s.free_mib / s.capacity_mib if s.capacity_mib else 0.0
    if host_free < MOM_PRESSURE_THRESHOLD:
        if host_free < MOM_PRESSURE_CRITICAL:
            guest_free = host_free - MOM_PRESSURE_CRITICAL
        else:
            guest_free = MOM_MIN_GUEST_FREE * host_free / MOM_PRESSURE_THRESHOLD
        floor = np.maximum(s.lower, used + guest_free * current)
        wanted = np.maximum(floor, (1 - MOM_MAX_CHANGE) * current)
        wanted = np.minimum(wanted, current)  # shrink only
    else:  # grow: at least +5 %, and at once to what leaves the guest 20 % free (§3.3)
        wanted = np.maximum((1 + MOM_MAX_CHANGE) * current, used + MOM_MIN_GUEST_FREE * current)
    target = np.clip(np.floor(wanted).astype(np.int64), s.lower, s.upper)
    small = np.abs(target - s.assigned) <= MOM_MIN_CHANGE * current
    return np.where(small, s.assigned, target)


ESX_IDLE_TAX = 0.75
"""ESX's default Mem.IdleTax (§3.1)."""
ESX_SHARES_PER_MIB = 10
"""ESX "normal" shares: 10 per MB of configured memory; Hyper-V weight scales them (5000 = 1×)."""


def esx(s: Snapshot) -> np.ndarray:
    """ESX shares with the idle memory tax (Waldspurger, OSDI '02, §3.1).

    A VM's claim is ρ = S / (P·(f + k·(1−f))), k = 1/(1−τ), f = active ÷ P. Reclaiming from the
    lowest ρ until all ρ are equal gives P = active + (S/ρ − active)/k. Without contention each VM
    keeps what it actively uses plus its buffer (ESX never gives memory a VM does not touch).
    """
    upper = s.ideal()
    if upper.sum() <= s.budget_mib:
        return upper
    shares = ESX_SHARES_PER_MIB * s.maximum * (s.weight + 1) / 5001.0
    active = np.clip(s.demand, 0, upper).astype(np.float64)
    k = 1.0 / (1.0 - ESX_IDLE_TAX)

    def size(inverse_rho: float) -> np.ndarray:
        return np.clip(active + (shares * inverse_rho - active) / k, s.lower, upper)

    low, high = 0.0, 1.0
    while size(high).sum() < s.budget_mib and high < 1e12:
        high *= 2
    for _ in range(60):
        mid = (low + high) / 2
        if size(mid).sum() <= s.budget_mib:
            low = mid
        else:
            high = mid
    return np.floor(size(low)).astype(np.int64)


POLICIES: dict[str, Policy] = {"hyperv": hyperv, "squeezed": squeezed, "mom": mom, "esx": esx}

POLICY_INTERVAL_MS: dict[str, int] = {"hyperv": 1000, "squeezed": 1000, "mom": 10_000, "esx": 15_000}
"""How often each policy runs, in event time, as each peer publishes it: Hyper-V about once a second
(§1.4); squeezed sets targets, waits 1 s and iterates (§3.2); MOM's policy engine every 10 s
(``policy-engine-interval``, §3.3); ESX reallocates every 15 s (§3.1). A driver that runs rounds
(``twin.study``, ``twin.whatif``) ticks each host at its policy's interval."""
