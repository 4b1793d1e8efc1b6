"""``foresight``: a policy of dmtwin's own, for "what if" (``hyperv`` stays the default: the twin
mirrors Hyper-V). It learns each VM's demand from its history and acts before the next sample
shows the need:

- **headroom sized per VM**: the next sample may rise by what this VM's rises have been: the
  ``rise_quantile`` of its step-to-step rises over the last ``window`` samples (a day);
- **daily rhythm**: if the VM rose a day ago at this time, that rise is expected again;
- **fast grow, slow shrink**: the target never falls below the highest demand of the last
  ``hold`` samples, so a VM that just fell keeps its memory for a while; a rise is met at once;
- **under contention**, each VM first keeps what it uses now (or Minimum), then the headroom is
  shared at one price for all (the highest that fits): a MiB goes where it most likely saves
  Warning time. When not even what the VMs use now fits, the VMs that need the least to be whole
  are made whole first (by weight, then need): a VM short by 1 MiB is as much in Warning as one
  short by 1 GiB, so the shortage is put on as few VMs as possible.

The mechanism is the shared one (``twin.balancer``): Minimum, Maximum, capacity, one transaction
per VM, balloon and hot-add units. A policy sees only a snapshot, so the history is kept by a
``Foresight`` object that folds each frame of status reports (``observe``) and gives the balancer
its plan (``plan``); it is deterministic, a function of the reports it saw.

The name is not in the log format's policy names (``twin.events.PolicyName``), so a host cannot be
*recorded* under it yet; ``twin.study`` runs it as a what-if.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import balancer
from .balancer import BalancerParams
from .policies import POLICIES, POLICY_INTERVAL_MS, Snapshot, hyperv
from .state import NO_DATA, Col, HostState, Pending

__all__ = ["ForesightParams", "Foresight", "NAME"]

NAME = "foresight"


@dataclass(frozen=True)
class ForesightParams:
    """The policy's knobs (chosen on July 2013, see docs/whatif-policies.md)."""

    window: int = 288
    """Samples of history the headroom learns from (288 × 5 min = a day)."""
    price_mib: int = 16384
    """What one VM-step of Warning avoided is worth, in MiB of headroom: each VM's headroom x
    minimises price × P(rise > x) + x over its own rises (so a MiB goes where it saves the most
    Warning time). Under contention the price falls until the targets fit."""
    hold: int = 3
    """Slow shrink: the target is at least the highest demand of the last ``hold`` samples."""
    rhythm: int = 288
    """Samples in a day: a rise seen this long ago is expected again (0: no rhythm)."""
    margin_percent: int = 0
    """Always this much above the forecast (rounding, noise)."""
    shrink_deadband_percent: int = 5
    """The mechanism's shrink dead band for this policy (``BalancerParams``), at least 32 MiB."""


class Foresight:
    """The history of each host's VMs and the ``foresight`` policy over it."""

    def __init__(self, params: ForesightParams | None = None) -> None:
        self.params = params or ForesightParams()
        self.history: dict[str, np.ndarray] = {}
        """host → rows × samples of reported demand (ring, newest at ``count − 1``)."""
        self.count: dict[str, int] = {}
        self._cache: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._forecast: np.ndarray | None = None
        self._need: np.ndarray | None = None
        self._rises: np.ndarray | None = None
        self._rows: np.ndarray | None = None
        POLICIES[NAME] = self._policy
        balancer.PARAMS[NAME] = BalancerParams(
            reclaim_after_ms=0, grow_deadband_percent=0, grow_deadband_mib=8,
            shrink_deadband_percent=self.params.shrink_deadband_percent, shrink_deadband_mib=32)
        POLICY_INTERVAL_MS.setdefault(NAME, 1000)

    def observe(self, state: HostState, at_ms: int) -> None:
        """A frame of status reports was folded: remember each VM's demand (row order)."""
        p = self.params
        size = max(p.window, p.rhythm) + 2
        demand = state.vms.rows[:, Col.DEMAND]
        ring = self.history.get(state.name)
        if ring is None or ring.shape[0] != len(demand):
            ring = self.history[state.name] = np.zeros((len(demand), size), dtype=np.int64)
            self.count[state.name] = 0
        n = self.count[state.name]
        ring[:, n % size] = np.maximum(demand, 0)
        self.count[state.name] = n + 1
        self._cache[state.name] = self.forecast(state.name)

    def forecast(self, host: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per row: what the VM uses now, the forecast of its next sample, and its rises (sorted)."""
        p = self.params
        ring, n = self.history[host], self.count[host]
        size = ring.shape[1]
        last = ring[:, (n - 1) % size]
        span = min(n, p.window + 1)
        recent = ring[:, [(n - 1 - j) % size for j in range(span)][::-1]]
        rises = (np.sort(np.maximum(np.diff(recent, axis=1), 0), axis=1) if span > 1
                 else np.zeros((len(last), 1), dtype=np.int64))
        headroom = _headroom(rises, p.price_mib)
        if p.rhythm and n > p.rhythm:  # a rise seen a day ago at this time, if it is worth its MiB
            ago = ring[:, (n - 1 - p.rhythm) % size]
            after = ring[:, (n - p.rhythm) % size]
            rhythm = after - ago
            headroom = np.where(rhythm <= p.price_mib, np.maximum(headroom, rhythm), headroom)
        held = ring[:, [(n - 1 - j) % size for j in range(min(n, p.hold))]].max(axis=1)
        wanted = np.maximum(last + headroom, held)
        return last, -(-wanted * (100 + p.margin_percent) // 100), rises

    def plan(self, state: HostState, at_ms: int, policy: str = NAME) -> list:
        """The balancer's round with this policy's targets (``twin.study`` calls it as its plan)."""
        if state.name not in self.history:
            return balancer.plan(state, at_ms, "hyperv")
        rows = state.vms.rows
        self._need, self._forecast, self._rises = self._cache[state.name]
        self._rows = np.flatnonzero((rows[:, Col.PENDING] == Pending.NONE) & (rows[:, Col.DM_ENABLED] == 1)
                                    & (rows[:, Col.DEMAND] != NO_DATA))
        self._assigned = rows[:, Col.ASSIGNED]
        try:
            return balancer.plan(state, at_ms, NAME)
        finally:
            self._forecast = self._need = self._rises = self._rows = None

    def _policy(self, s: Snapshot) -> np.ndarray:
        rows = self._rows
        if rows is None or len(rows) != len(s.assigned) or not np.array_equal(self._assigned[rows], s.assigned):
            return hyperv(s)  # not called through ``plan``: behave as Hyper-V
        now = np.clip(np.maximum(self._need[rows], s.demand), s.lower, s.upper)
        wanted = np.clip(np.maximum(self._forecast[rows], now), s.lower, s.upper)
        if wanted.sum() <= s.budget_mib:
            return wanted.astype(np.int64)
        if now.sum() >= s.budget_mib:
            return _fewest_short(s, now)
        # one price for all: the highest at which every VM's headroom fits the budget
        rises = self._rises[rows]
        lo, hi = 0.0, float(self.params.price_mib)
        best = now
        for _ in range(16):
            price = (lo + hi) / 2
            target = np.clip(np.minimum(now + _headroom(rises, price), wanted), s.lower, s.upper)
            if target.sum() <= s.budget_mib:
                lo, best = price, target
            else:
                hi = price
        spare = s.budget_mib - int(best.sum())
        if spare > 0:  # what the quantiles leave: in proportion to what each still wants
            gap = np.maximum(wanted - best, 0)
            if gap.sum() > 0:
                best = best + np.minimum(gap, np.floor(gap * spare / gap.sum()).astype(np.int64))
        return best.astype(np.int64)


def _quantile(ordered: np.ndarray, q: float) -> np.ndarray:
    """The q-quantile of each row of an ascending-sorted array (the next sample up), as int64."""
    k = min(ordered.shape[1] - 1, int(np.ceil(q * (ordered.shape[1] - 1))))
    return ordered[:, k].astype(np.int64)


def _headroom(ordered: np.ndarray, price: float) -> np.ndarray:
    """Per row of ascending rises: the x among 0 and the rises that minimises
    price × P(rise > x) + x (the empirical P of the row), as int64."""
    m = ordered.shape[1]
    zero = np.zeros((ordered.shape[0], 1), dtype=ordered.dtype)
    candidates = np.concatenate((zero, ordered), axis=1)
    above = np.concatenate((((ordered > 0).sum(axis=1) / m)[:, None],
                            np.broadcast_to((m - 1 - np.arange(m)) / m, ordered.shape)), axis=1)
    cost = price * above + candidates
    return candidates[np.arange(len(candidates)), np.argmin(cost, axis=1)].astype(np.int64)


def _fewest_short(s: Snapshot, now: np.ndarray) -> np.ndarray:
    """Everyone at its lower bound, then whole VMs in order of weight (highest first) and of what
    they lack (least first), then a part for the next: as few VMs short as the budget allows."""
    target = s.lower.copy()
    lack = np.maximum(now - s.lower, 0)
    left = s.budget_mib - int(target.sum())
    for i in np.lexsort((np.arange(len(lack)), lack, -s.weight)).tolist():
        if left <= 0:
            break
        give = min(int(lack[i]), left)
        target[i] += give
        left -= give
    return target
