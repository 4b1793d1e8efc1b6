"""``foresight``: a policy of dmtwin's own, for "what if" (``hyperv`` stays the default: the twin
mirrors Hyper-V). It learns each VM's demand from its history and acts before the next sample
shows the need:

- **headroom sized per VM**: the x that minimises price × P(next rise > x) + x over the VM's own
  step-to-step rises of the last ``window`` samples (a day);
- **its situation**: a VM below its recent median tends to rise back, one above it to fall: the
  rises the headroom learns from are those that followed the same situation (below, at or above
  the median of its last ``context`` samples), when there are ``context_min`` of them;
- **daily rhythm** (off by default): if the VM rose a day ago at this time, that rise is expected
  again;
- **fast grow, slow shrink**: the target never falls below the highest demand of the last
  ``hold`` samples, so a VM that just fell keeps its memory for a while; a rise is met at once;
- **under contention**, one price for all, the highest at which the targets fit: each VM gets
  what it uses now and the headroom worth that price, so a MiB goes where it most likely saves
  Warning time. A VM that has less than it uses now may instead be left as it is (short) when
  growing it costs more than its being short is worth at that price (``sacrifice``): a VM short
  by 1 MiB is as much in Warning as one short by 1 GiB, so one large VM left short can keep many
  small ones ready for their next rise. What is left then makes the cheapest of those whole.
  With ``sacrifice=0`` every VM first keeps what it uses now, and when not even that fits, the
  VMs that need the least are made whole (by weight, then need), with no headroom.

The mechanism is the shared one (``twin.balancer``): Minimum, Maximum, capacity, one transaction
per VM, balloon and hot-add units. A policy sees only a snapshot, so the history is kept by a
``Foresight`` object that folds each frame of status reports (``observe``) and gives the balancer
its plan (``plan``); it is deterministic, a function of the reports it saw.

The name is not in the log format's policy names (``twin.events.PolicyName``), so a host cannot be
*recorded* under it: ``twin.study`` runs it on traces and ``twin.whatif`` on recorded logs.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from . import balancer
from .balancer import BalancerParams
from .decisions import Decisions
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
    rhythm: int = 0
    """Samples in a day (288): a rise seen this long ago is expected again, if it is worth its MiB
    at the price (0: no rhythm; on July it cost more memory than it saved Warning time)."""
    context: int = 24
    """The VM's situation is the sign of its demand against the median of its last ``context``
    samples; the headroom learns from the rises that followed the same situation (0: from all)."""
    context_min: int = 10
    """Fewer rises than this in the same situation: learn from all of them."""
    sacrifice: int = 1
    """1: under contention the price also decides which VMs that need to grow are left as they are
    (each costs the price, in proportion to its weight), so the others keep their headroom; 0: all
    are first grown to what they use now, and the VMs that need the least are made whole."""
    margin_percent: int = 0
    """Always this much above the forecast (rounding, noise)."""
    shrink_deadband_percent: int = 5
    """The mechanism's shrink dead band for this policy (``BalancerParams``), at least 32 MiB."""
    sample_ms: int = 300_000
    """One sample of history at most this often (the trace's 5 minutes): a recorded log reports
    every second, and its day is still 288 samples."""


    @classmethod
    def parse(cls, text: str) -> ForesightParams:
        """``price_mib=5600,hold=1`` (what follows ``foresight:``); ValueError naming a knob or a
        value that is not one."""
        names = [f.name for f in fields(cls)]
        values: dict[str, int] = {}
        for item in filter(None, (part.strip() for part in text.split(","))):
            key, _, raw = item.partition("=")
            key = key.strip()
            if key not in names:
                raise ValueError(f"foresight parameter {key!r}: expected one of {', '.join(names)}")
            try:
                values[key] = int(raw)
            except ValueError:
                raise ValueError(f"foresight parameter {key}={raw.strip()!r}: expected a whole number") from None
        return cls(**values)


class Foresight:
    """The history of each host's VMs and the ``foresight`` policy over it."""

    def __init__(self, params: ForesightParams | None = None) -> None:
        self.params = params or ForesightParams()
        self.history: dict[str, np.ndarray] = {}
        """host → rows × samples of reported demand (ring, newest at ``count − 1``; rows as in
        ``names``)."""
        self.situation: dict[str, np.ndarray] = {}
        """host → rows × samples: each sample's sign against the median of the last ``context``
        samples, itself included (the same ring)."""
        self.count: dict[str, int] = {}
        self.names: dict[str, list[str]] = {}
        """host → its VMs, in the history's row order (the table's, when last seen)."""
        self.unseen: dict[str, np.ndarray] = {}
        """host → per row: no report seen yet."""
        self._sampled: dict[str, int] = {}
        self._cache: dict[str, tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]] = {}
        self._forecast: np.ndarray | None = None
        self._need: np.ndarray | None = None
        self._menu: tuple[np.ndarray, np.ndarray] | None = None
        self._rows: np.ndarray | None = None
        POLICIES[NAME] = self._policy
        balancer.PARAMS[NAME] = BalancerParams(
            reclaim_after_ms=0, grow_deadband_percent=0, grow_deadband_mib=8,
            shrink_deadband_percent=self.params.shrink_deadband_percent, shrink_deadband_mib=32)
        POLICY_INTERVAL_MS.setdefault(NAME, 1000)

    def observe(self, state: HostState, at_ms: int) -> None:
        """Status reports were folded: remember each VM's demand, once a sample. The history is
        kept by VM name: a VM that starts keeps the others' history, and a VM's past before its
        first report is that report (no rise from nothing)."""
        p = self.params
        host, names = state.name, state.vms.names
        last = self._sampled.get(host)
        if last is not None and at_ms - last < p.sample_ms and self.names[host] == names:
            return
        self._sampled[host] = at_ms
        if self.names.get(host) != names:
            self._rename(host, list(names))
        ring, n = self.history[host], self.count[host]
        size = ring.shape[1]
        demand = state.vms.rows[:, Col.DEMAND]
        known = demand != NO_DATA
        value = np.maximum(np.where(known, demand, ring[:, (n - 1) % size]), 0)
        ring[:, n % size] = value
        first = self.unseen[host] & known
        if first.any():  # its first report: that is its past too
            ring[first] = value[first, None]
            self.unseen[host] &= ~known
        if p.context:
            recent = ring[:, [(n - j) % size for j in range(min(n + 1, p.context))]]
            self.situation[host][:, n % size] = np.sign(ring[:, n % size] - np.median(recent, axis=1))
        self.count[host] = n + 1
        self._cache[host] = self.forecast(host)

    def _rename(self, host: str, names: list[str]) -> None:
        """The host's VMs changed: the same history for the VMs that stay, by name."""
        p = self.params
        size = max(p.window, p.rhythm) + 2
        ring = np.zeros((len(names), size), dtype=np.int64)
        situation = np.zeros((len(names), size), dtype=np.int8)
        unseen = np.ones(len(names), dtype=bool)
        before = {name: i for i, name in enumerate(self.names.get(host, []))}
        for i, name in enumerate(names):
            j = before.get(name)
            if j is not None:
                ring[i], situation[i], unseen[i] = (self.history[host][j], self.situation[host][j],
                                                    self.unseen[host][j])
        self.history[host], self.situation[host], self.unseen[host] = ring, situation, unseen
        self.names[host] = names
        self.count.setdefault(host, 0)

    def forecast(self, host: str) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]:
        """Per row: what the VM uses now, the forecast of its next sample, and the ``_menu`` of its
        rises (what the headroom may be, with the chance of a rise above each)."""
        p = self.params
        ring, n = self.history[host], self.count[host]
        size = ring.shape[1]
        last = ring[:, (n - 1) % size]
        span = min(n, p.window + 1)
        order = [(n - 1 - j) % size for j in range(span)][::-1]
        rises = (np.maximum(np.diff(ring[:, order], axis=1), 0) if span > 1
                 else np.zeros((len(last), 1), dtype=np.int64))
        if p.context and span > 1:  # only the rises that followed the situation the VM is in now
            situation = self.situation[host]
            same = situation[:, order[:-1]] == situation[:, (n - 1) % size][:, None]
            enough = same.sum(axis=1) >= p.context_min
            rises = np.where(same | ~enough[:, None], rises, _LEFT_OUT)
        menu = _menu(np.sort(rises, axis=1))
        headroom = _choose(menu, p.price_mib)[0]
        if p.rhythm and n > p.rhythm:  # a rise seen a day ago at this time, if it is worth its MiB
            ago = ring[:, (n - 1 - p.rhythm) % size]
            after = ring[:, (n - p.rhythm) % size]
            rhythm = after - ago
            headroom = np.where(rhythm <= p.price_mib, np.maximum(headroom, rhythm), headroom)
        held = ring[:, [(n - 1 - j) % size for j in range(min(n, p.hold))]].max(axis=1)
        wanted = np.maximum(last + headroom, held)
        return last, -(-wanted * (100 + p.margin_percent) // 100), menu

    def plan(self, state: HostState, at_ms: int, policy: str = NAME) -> Decisions:
        """The balancer's round with this policy's targets (``twin.study`` calls it as its plan)."""
        if not self.count.get(state.name):  # nothing seen yet
            return balancer.plan(state, at_ms, "hyperv")
        if self.names[state.name] != state.vms.names:  # a VM started or stopped since the last sample
            self._rename(state.name, list(state.vms.names))
            self._cache[state.name] = self.forecast(state.name)
        rows = state.vms.rows
        self._need, self._forecast, self._menu = self._cache[state.name]
        self._rows = np.flatnonzero((rows[:, Col.PENDING] == Pending.NONE) & (rows[:, Col.DM_ENABLED] == 1)
                                    & (rows[:, Col.DEMAND] != NO_DATA))
        self._assigned = rows[:, Col.ASSIGNED]
        try:
            return balancer.plan(state, at_ms, NAME)
        finally:
            self._forecast = self._need = self._menu = self._rows = None

    def _policy(self, s: Snapshot) -> np.ndarray:
        rows = self._rows
        if rows is None or len(rows) != len(s.assigned) or not np.array_equal(self._assigned[rows], s.assigned):
            return hyperv(s)  # not called through ``plan``: behave as Hyper-V
        now = np.clip(np.maximum(self._need[rows], s.demand), s.lower, s.upper)
        wanted = np.clip(np.maximum(self._forecast[rows], now), s.lower, s.upper)
        if wanted.sum() <= s.budget_mib:
            return wanted.astype(np.int64)
        menu = self._menu[0][rows], self._menu[1][rows]
        if not self.params.sacrifice and now.sum() >= s.budget_mib:
            return _fewest_short(s, now)
        return _priced(s, now, wanted, menu, float(self.params.price_mib), bool(self.params.sacrifice))


_LEFT_OUT = -1
"""A rise that does not count for this row (it followed another situation); sorts first."""


def _menu(ordered: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ascending rises (``_LEFT_OUT`` first, not counted): each headroom x one may
    choose (0 and the rises; inf where left out) and the empirical P(rise > x) of the row."""
    width = ordered.shape[1]
    counted = ordered != _LEFT_OUT
    m = np.maximum(counted.sum(axis=1), 1)[:, None]
    zero = np.zeros((ordered.shape[0], 1))
    candidates = np.concatenate((zero, np.where(counted, ordered, np.inf)), axis=1)
    above = np.concatenate(((ordered > 0).sum(axis=1)[:, None] / m,
                            (width - 1 - np.arange(width))[None, :] / m), axis=1)
    return candidates, above


def _choose(menu: tuple[np.ndarray, np.ndarray], price: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the x of the menu that minimises price × P(rise > x) + x (the price one for all or
    one per row), as int64, and that P."""
    candidates, above = menu
    best = np.argmin(np.asarray(price, dtype=float).reshape(-1, 1) * above + candidates, axis=1)
    rows = np.arange(len(candidates))
    return candidates[rows, best].astype(np.int64), above[rows, best]


def _priced(s: Snapshot, now: np.ndarray, wanted: np.ndarray, menu: tuple[np.ndarray, np.ndarray],
            top: float, may_leave_short: bool) -> np.ndarray:
    """The highest price (per VM, in proportion to its weight) at which the targets fit: each VM
    gets now + the headroom worth that price or, ``may_leave_short``, if it has less than it uses
    now and growing it costs more than its being short, keeps what it has (a guest does not give up
    what it uses). What is left makes the cheapest of those whole, then goes to what the others
    still want, in proportion."""
    scale = s.weight / 5000.0
    has = np.clip(s.assigned, s.lower, s.upper)
    may_stay_short = (now > has) & may_leave_short

    def at(price: float) -> tuple[np.ndarray, np.ndarray]:
        each = price * scale
        headroom, risk = _choose(menu, each)
        keep = np.clip(np.minimum(now + headroom, wanted), s.lower, s.upper)
        short = may_stay_short & (each + has < each * risk + keep)
        return np.where(short, has, keep), short

    lo, hi = 0.0, top
    best, short = at(0.0)
    for _ in range(20):
        price = (lo + hi) / 2
        target, left = at(price)
        if target.sum() <= s.budget_mib:
            lo, best, short = price, target, left
        else:
            hi = price
    best = best.astype(np.int64)
    spare = _make_whole(best, np.where(short, now - has, 0), s.budget_mib - int(best.sum()), s.weight)
    gap = np.maximum(wanted - best, 0)
    if spare > 0 and gap.sum() > 0:
        best += np.minimum(gap, np.floor(gap * spare / gap.sum()).astype(np.int64))
    return best


def _fewest_short(s: Snapshot, now: np.ndarray) -> np.ndarray:
    """Everyone at its lower bound, then whole VMs in order of weight (highest first) and of what
    they lack (least first), then a part for the next: as few VMs short as the budget allows."""
    target = s.lower.copy()
    _make_whole(target, np.maximum(now - s.lower, 0), s.budget_mib - int(target.sum()), s.weight)
    return target


def _make_whole(target: np.ndarray, lack: np.ndarray, left: int, weight: np.ndarray) -> int:
    """Give each VM what it ``lack``s, in order of weight (highest first) and of lack (least
    first), while ``left`` lasts, the last one a part (``target`` in place); what is left."""
    for i in np.lexsort((np.arange(len(lack)), lack, -weight)).tolist():
        if left <= 0:
            break
        give = min(int(lack[i]), left)
        target[i] += give
        left -= give
    return left
