"""Capacity studies at the trace's own time: every policy on the same VMs, measured against the truth.

A study lays each VM's trace on a common week, as ``bitbrains-rnd-2013-07/REFERENCE.md`` does: the
VM's sample k comes at ``start + k·step`` of *event time* (5-minute samples stay 5 minutes apart).
What the guest uses during step k is the sample of step k; the guest reports it at the end of the
step, so the balancer, which runs each second of event time, always reacts one sample late (the
reference's "one-sample reaction lag"; at step 0 the twin has seen nothing yet).

The run goes through the real twin: ``Twin.apply`` folds every input (each step's reports as one
frame, each round's decisions together, as the worker folds them), and
``twin.balancer.plan`` — the shared mechanism, one transaction per VM, every bound — makes every
decision; simulated guests (``twin.guest.SimulatedGuest``, Windows) answer after ``response_ms``.

**Quiet rounds are skipped, exactly.** A round that follows a round without decisions, with no
input in between, sees the same state at a later time; it can only decide differently once one of
the state's timers runs out (Hyper-V's late reclaim, a balloon floor's hold, a hot-add retry), so
the driver runs it then and not before. Every skipped round would have decided nothing: the
decisions are those of a round every ``interval_ms``, and the week of 500 VMs costs what its
samples cost. Each policy's rounds come at its own published interval (``POLICY_INTERVAL_MS``).

The meter integrates the state exactly between events, against the *true* demand of the moment:
Warning (assigned < demand), Low (demand ≤ assigned < demand·(1 + 0.8·buffer)), short MiB·s, mean
and peak assigned, and the step-to-step churn the reference counts (assigned sampled at each step).
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

import numpy as np

from . import balancer
from .engine import Twin
from .events import (
    BalancerTicked,
    BalloonTargetSet,
    Decision,
    FrameReport,
    GuestCapabilities,
    HostJoined,
    MemoryAdditionRequested,
    MemorySettings,
    StatusFrame,
    UnballoonRequested,
    VmStarted,
)
from .errors import Rejected
from .guest import SimulatedGuest
from .host import fold_round
from .policies import POLICY_INTERVAL_MS
from .sources.bitbrains import Grid
from .state import NO_DATA, Col, HostState

__all__ = ["StudyVm", "Study", "PolicyResult", "study_of_grid", "run_policy", "run_study",
           "POLICY_INTERVAL_MS", "Packing", "merge", "host_result", "p95_sum_mib",
           "reference_rows", "format_table", "STUDY_COLUMNS",
           "OWN_POLICIES", "STUDY_POLICIES", "own_policy"]

Packing = Literal["round-robin", "first-fit"]
START_MS = 1_372_629_600_000
"""2013-07-01T00:00:00Z minus a little: the trace's first sample is at 1,372,629,804 s."""


@dataclass(frozen=True)
class StudyVm:
    name: str
    host: int
    startup_mib: int
    minimum_mib: int
    maximum_mib: int
    buffer_percent: int
    demand_mib: np.ndarray
    """True demand of each step (MiB)."""
    weight: int = 5000


@dataclass(frozen=True)
class Study:
    """VMs on hosts of ``capacity_mib`` each (total − reserve, the reserve is 0), steps of ``step_s``."""

    vms: list[StudyVm]
    hosts: int
    capacity_mib: int
    step_s: int = 300
    response_ms: int = 200
    start_ms: int = START_MS

    @property
    def steps(self) -> int:
        return int(len(self.vms[0].demand_mib)) if self.vms else 0

    def host_vms(self, host: int) -> list[StudyVm]:
        return [vm for vm in self.vms if vm.host == host]


def p95_sum_mib(grid: Grid) -> float:
    """Σ over VMs of 1.2 × p95(demand): the reference's unit of capacity."""
    return float((1.2 * np.percentile(grid.demand_mib, 95, axis=1)).sum())


def study_of_grid(grid: Grid, hosts: int = 10, capacity: float = 1.0, capacity_mib: int | None = None,
                  packing: Packing = "round-robin", minimum_mib: int = 512, startup_mib: int = 1024,
                  buffer_percent: int = 20, response_ms: int = 200) -> Study:
    """The reference's study of ``grid``: Maximum = largest provisioned, Minimum = min(512, Max),
    Startup = min(1024, Max), buffer 20 %, equal weights; ``hosts`` hosts of ``capacity`` ×
    Σ 1.2·p95 ÷ hosts each (or ``capacity_mib``); VM v on host v % hosts (round-robin), or first
    fit by decreasing p95 onto the hosts' capacity (first-fit, Σ 1.2·p95 per host)."""
    if capacity_mib is None:
        capacity_mib = int(capacity * p95_sum_mib(grid) / hosts)
    specs = []
    need = 1.2 * np.percentile(grid.demand_mib, 95, axis=1)
    placed = np.zeros(hosts)
    place: dict[int, int] = {}
    if packing == "first-fit":
        for i in sorted(range(len(grid.vms)), key=lambda i: (-need[i], int(grid.vms[i]))):
            fits = np.flatnonzero(placed + need[i] <= capacity_mib)
            h = int(fits[0]) if len(fits) else int(np.argmin(placed))
            placed[h] += need[i]
            place[i] = h
    for i, number in enumerate(grid.vms.tolist()):
        maximum = max(32, int(grid.maximum_mib[i]))
        minimum = max(32, min(minimum_mib, maximum))
        startup = max(minimum, min(startup_mib, maximum))
        host = place[i] if packing == "first-fit" else number % hosts
        specs.append(StudyVm(f"vm-{number:04d}", host, startup, minimum, maximum, buffer_percent,
                             grid.demand_mib[i]))
    return Study(specs, hosts, capacity_mib, grid.step_s, response_ms)


@dataclass
class PolicyResult:
    """One policy over a study. Times in seconds, memory in MiB (·s for integrals)."""

    policy: str
    hosts: int
    capacity_mib: int
    duration_s: float = 0.0
    warning_s: float = 0.0
    low_s: float = 0.0
    short_mib_s: float = 0.0
    assigned_mib_s: float = 0.0
    static_mib: int = 0
    step_total_mib: np.ndarray = field(default_factory=lambda: np.zeros(0))
    host_peak_mib: list[int] = field(default_factory=list)
    moved_mib: int = 0
    changes: int = 0
    operations: int = 0
    decisions: int = 0
    rounds: int = 0
    events: int = 0
    refused: list[str] = field(default_factory=list)
    """VMs the hosts could not start (Startup RAM above what was free)."""
    hosts_run: int = 0
    interval_ms: int = 1000
    wall_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        hours = 3600.0
        mean = self.assigned_mib_s / self.duration_s if self.duration_s else 0.0
        peak = float(self.step_total_mib.max()) if len(self.step_total_mib) else 0.0
        return {
            "policy": self.policy, "hosts": self.hosts, "capacity_gib": self.capacity_mib / 1024,
            "warning_vm_h": self.warning_s / hours, "low_vm_h": self.low_s / hours,
            "short_gib_h": self.short_mib_s / 1024 / hours, "mean_gib": mean / 1024, "peak_gib": peak / 1024,
            "max_host_over_c": max(self.host_peak_mib, default=0) / self.capacity_mib,
            "saved_percent": 100 * (1 - mean / self.static_mib) if self.static_mib else 0.0,
            "moved_tib": self.moved_mib / 1024 / 1024, "changes": self.changes, "operations": self.operations,
            "decisions": self.decisions, "rounds": self.rounds,
            "rounds_skipped": max(0, int(self.hosts_run * self.duration_s * 1000 // self.interval_ms) - self.rounds),
            "events": self.events, "wall_s": self.wall_s, "refused": len(self.refused),
            "events_per_s": self.events / self.wall_s if self.wall_s else 0.0}


def _timer(state: HostState, at_ms: int, reclaim_after_ms: int) -> float:
    """The earliest time after ``at_ms`` at which a round could decide differently on an unchanged
    state: a surplus becomes old enough to reclaim, a balloon floor's hold or a hot-add retry ends."""
    rows = state.vms.rows
    wake = math.inf
    if reclaim_after_ms:
        since = rows[:, Col.SURPLUS_SINCE]
        due = since[since != NO_DATA] + reclaim_after_ms
        due = due[due > at_ms]
        if len(due):
            wake = float(due.min())
    for col in (Col.FLOOR_UNTIL, Col.RETRY_AT):
        until = rows[:, col]
        until = until[until > at_ms]
        if len(until):
            wake = min(wake, float(until.min()))
    return wake


PlanFn = Callable[[HostState, int, str], list[Decision]]


def _foresight(options: str = "") -> Any:
    from .foresight import Foresight, ForesightParams

    return Foresight(ForesightParams.parse(options))


OWN_POLICIES: dict[str, Callable[..., Any]] = {"foresight": _foresight}
"""Policies of dmtwin's own that learn from history: each host's run gets a fresh one (an object
with ``plan`` and ``observe``). Not in the log format's policy names: what-if only. A name may
carry parameters: ``foresight:price_mib=4096,hold=1`` (``twin.foresight.ForesightParams``)."""
STUDY_POLICIES = ("hyperv", "squeezed", "mom", "esx", *OWN_POLICIES)


def own_policy(spec: str) -> Any | None:
    """A fresh object of the policy of dmtwin's own that ``spec`` names, with its parameters
    (``foresight:price_mib=5600,hold=1``, ``+giveup`` aside), or None for a peer's policy; a
    ValueError names a parameter that is not one."""
    base, _, options = spec.removesuffix("+giveup").partition(":")
    return OWN_POLICIES[base](options) if base in OWN_POLICIES else None


def run_host(study: Study, host: int, policy: str, result: PolicyResult,
             plan: PlanFn | None = None, guest_factory: Callable[[StudyVm, str], SimulatedGuest] | None = None,
             on_event: Callable[[object], None] | None = None, skip_quiet: bool = True,
             observe: Callable[[HostState, int], None] | None = None) -> None:
    """Run one host of ``study`` under ``policy``, adding its measures to ``result``. With
    ``skip_quiet=False`` every round runs (the same decisions, slower: tests compare the two)."""
    label = policy
    give_up = None
    if policy.endswith("+giveup"):
        policy = policy[: -len("+giveup")]
    own = own_policy(policy) if plan is None else None
    if own is not None:
        plan, observe = own.plan, own.observe
        policy = policy.partition(":")[0]
    plan = plan or (lambda state, at_ms, name: balancer.plan(state, at_ms, name))
    if label.endswith("+giveup"):
        from .giveup import GiveUp

        give_up = GiveUp(plan)
        plan = give_up.plan
        inner_event = on_event
        def on_event(event: object) -> None:  # noqa: E306
            give_up.watch(event)
            if inner_event is not None:
                inner_event(event)
    vms = study.host_vms(host)
    name = f"h{host:02d}"
    interval = POLICY_INTERVAL_MS.get(policy, 1000)
    reclaim_after = balancer.PARAMS[policy].reclaim_after_ms if policy in balancer.PARAMS else 0
    if policy not in balancer.PARAMS:
        raise ValueError(f"no policy {policy!r} in the mechanism's parameters")
    twin = Twin()
    start, step_ms, steps = study.start_ms, study.step_s * 1000, study.steps
    end = start + steps * step_ms
    count = 0

    def fold(event: Any) -> None:
        nonlocal count
        twin.apply(event)
        count += 1
        if on_event is not None:
            on_event(event)

    fold(HostJoined(at_ms=start, host=name, total_mib=study.capacity_mib, reserve_mib=0, policy="hyperv"))
    guests: dict[str, SimulatedGuest] = {}
    started = []
    for vm in vms:
        try:
            fold(VmStarted(at_ms=start, host=name, vm=vm.name,
                           settings=MemorySettings(startup_mib=vm.startup_mib, minimum_mib=vm.minimum_mib,
                                                   maximum_mib=vm.maximum_mib, buffer_percent=vm.buffer_percent,
                                                   weight=vm.weight),
                           capabilities=GuestCapabilities(hot_add_alignment_mib=2)))
        except Rejected as refused:  # the host cannot give its Startup RAM: the VM stays off
            result.refused.append(f"{name}/{vm.name}: {refused.reason}")
            continue
        started.append(vm)
        guests[vm.name] = (guest_factory(vm, name) if guest_factory
                           else SimulatedGuest(name, vm.name, "windows", vm.startup_mib))
    state = twin.hosts[name]
    vms = started
    order = [state.vms.index[vm.name] for vm in vms]
    demand = np.stack([vm.demand_mib for vm in vms]) if vms else np.zeros((0, steps), dtype=np.int64)
    # row-ordered truth: rows of the table, in the table's order
    truth_rows = np.zeros((len(state.vms.names), steps), dtype=np.int64)
    truth_rows[order] = demand
    low_factor = np.zeros(len(state.vms.names))
    low_factor[order] = [1 + 0.8 * vm.buffer_percent / 100 for vm in vms]
    by_row = [state.vms.names[i] for i in range(len(state.vms.names))]

    owed: list[tuple[int, int, Decision]] = []
    serial = 0
    totals = np.zeros(steps, dtype=np.int64)
    previous = None
    last_ms = start
    last_round = -math.inf
    need_from = math.inf  # a round is needed at the first grid time ≥ this
    wake = math.inf
    k = 0  # next report step

    def integrate(until: int) -> None:
        nonlocal last_ms
        if until <= last_ms:
            return
        step = min((last_ms - start) // step_ms, steps - 1)
        dt = (until - last_ms) / 1000
        assigned = state.vms.rows[:, Col.ASSIGNED]
        truth = truth_rows[:, step]
        result.assigned_mib_s += float(assigned.sum()) * dt
        short = truth > assigned
        result.warning_s += int(short.sum()) * dt
        result.short_mib_s += float((truth - assigned)[short].sum()) * dt
        result.low_s += int(((~short) & (assigned < truth * low_factor)).sum()) * dt
        last_ms = until

    def grid_ceil(t: float) -> float:
        if t == math.inf:
            return t
        return start + math.ceil((t - start) / interval) * interval

    while True:
        t_report = start + k * step_ms if k < steps else math.inf
        t_answer = owed[0][0] if owed else math.inf
        t_round = max(grid_ceil(min(need_from, wake)), last_round + interval) if skip_quiet else (
            start if last_round == -math.inf else last_round + interval)
        now = min(t_report, t_answer, t_round, end)
        if now >= end:
            integrate(end)
            break
        now = int(now)
        integrate(now)
        while owed and owed[0][0] <= now:
            due, _, decision = heapq.heappop(owed)
            step = min((due - start) // step_ms, steps - 1)
            vm = decision.vm
            answer = guests[vm].answer(decision, due, int(truth_rows[state.vms.index[vm], step]))
            if answer is not None:
                fold(answer)
                need_from = min(need_from, due)
        if now == t_report:
            assigned = state.vms.rows[:, Col.ASSIGNED].copy()
            totals[k] = int(assigned.sum())
            if previous is not None:
                delta = np.abs(assigned - previous)
                result.moved_mib += int(delta.sum())
                result.changes += int((delta > 0).sum())
            previous = assigned
            reports = [guests[vm].status(now, int(truth_rows[i, k - 1]) if k else 0) for i, vm in enumerate(by_row)]
            _, refused = twin.frame(StatusFrame(at_ms=now, host=name, reports=[  # folded at once, as a frame
                FrameReport(vm=r.vm, committed_mib=r.committed_mib, available_mib=r.available_mib) for r in reports]))
            if refused:
                raise refused[0][1]
            count += len(reports)
            if on_event is not None:
                for report in reports:
                    on_event(report)
            if observe is not None:
                observe(state, now)
            need_from = min(need_from, now)
            k += 1
        if (max(grid_ceil(min(need_from, wake)), last_round + interval) <= now if skip_quiet
                else now == t_round):
            fold(BalancerTicked(at_ms=now, host=name))
            decisions = plan(state, now, policy)
            result.rounds += 1
            last_round = now
            if decisions:  # folded at once, as ``Twin.round`` folds a round
                fold_round(state, now, decisions)
                count += len(decisions)
            for decision in decisions:
                if on_event is not None:
                    on_event(decision)
                if isinstance(decision, (BalloonTargetSet, UnballoonRequested, MemoryAdditionRequested)):
                    serial += 1
                    heapq.heappush(owed, (now + study.response_ms, serial, decision))
            result.decisions += len(decisions)
            need_from = now + 1 if decisions else math.inf
            wake = _timer(state, now, reclaim_after)
            if give_up is not None:
                wake = min(wake, give_up.wake(now))
    rows = state.vms.rows
    result.operations += int(rows[:, Col.ADD_OPS].sum() + rows[:, Col.REMOVE_OPS].sum())
    result.static_mib += int(rows[:, Col.MAXIMUM].sum())
    result.duration_s = (end - start) / 1000
    result.host_peak_mib.append(int(totals.max()) if steps else 0)
    result.step_total_mib = totals if not len(result.step_total_mib) else result.step_total_mib + totals
    result.events += count
    result.hosts_run += 1
    result.policy = label
    result.interval_ms = interval


def merge(results: list[PolicyResult]) -> PolicyResult:
    """One result of the hosts' results (each host run separately, e.g. in other processes)."""
    first = results[0]
    out = PolicyResult(first.policy, first.hosts, first.capacity_mib)
    out.duration_s = first.duration_s
    for r in results:
        out.interval_ms = r.interval_ms
        for name in ("warning_s", "low_s", "short_mib_s", "assigned_mib_s", "static_mib", "moved_mib", "changes",
                     "operations", "decisions", "rounds", "events", "wall_s", "hosts_run"):
            setattr(out, name, getattr(out, name) + getattr(r, name))
        out.host_peak_mib += r.host_peak_mib
        out.refused += r.refused
        out.step_total_mib = r.step_total_mib if not len(out.step_total_mib) else out.step_total_mib + r.step_total_mib
    return out


def host_result(study: Study, host: int, policy: str) -> PolicyResult:
    """One host under ``policy`` (the caller times it: ``wall_s``; the twin reads no clock)."""
    result = PolicyResult(policy, study.hosts, study.capacity_mib)
    run_host(study, host, policy, result)
    return result


def run_policy(study: Study, policy: str, plan: PlanFn | None = None) -> PolicyResult:
    """Every host of ``study`` under ``policy``; hosts are independent, so they run one after another."""
    result = PolicyResult(policy, study.hosts, study.capacity_mib)
    for host in range(study.hosts):
        run_host(study, host, policy, result, plan)
    return result


def run_study(study: Study, policies: list[str]) -> list[PolicyResult]:
    return [run_policy(study, policy) for policy in policies]


STUDY_COLUMNS = ("warning_vm_h", "low_vm_h", "short_gib_h", "mean_gib", "peak_gib", "max_host_over_c",
                 "saved_percent", "moved_tib", "changes")
STUDY_HEAD = ("Warning VM-h", "Low VM-h", "short GiB-h", "mean GiB", "peak GiB", "max host/C", "saved %",
              "moved TiB", "changes")
PEERS = ("hyperv", "squeezed", "mom", "esx")


def reference_rows(text: str, hosts: int) -> dict[tuple[str, float], dict[str, float]]:
    """(policy, capacity) → figures, from the table of a ``REFERENCE.md`` (rows of ``hosts`` hosts)."""
    out = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 13 or not cells[1].isdigit() or int(cells[1]) != hosts:
            continue
        try:
            values = [float(c.replace(",", "")) for c in cells[4:]]
            out[(cells[0], float(cells[2].rstrip("x")))] = dict(zip(STUDY_COLUMNS, values))
        except ValueError:
            continue
    return out


def format_table(rows: list[dict[str, Any]], reference: dict[tuple[str, float], dict[str, float]] | None = None,
                 goal: bool = False) -> str:
    """Rows of ``PolicyResult.as_dict()`` (+ ``capacity``), by capacity; each followed by the
    reference's row for the same policy and capacity if there is one; then how the policies of
    dmtwin's own compare with the best peer (the fewest Warning hours), and with ``goal`` the
    July study's goal beside it (≤ 0.7× its Warning at ≤ its memory)."""
    reference = reference or {}
    out = []
    w = max([10] + [len(r["policy"]) + 2 for r in rows])
    for capacity in dict.fromkeys(r["capacity"] for r in rows):
        out += ["", f"capacity {capacity}x", f"{'policy':<{w}}{'':<10}" + "".join(f"{h:>13}" for h in STUDY_HEAD)
                + f"{'wall s':>9}{'events/s':>10}"]
        ours = [r for r in rows if r["capacity"] == capacity]
        for r in ours:
            cells = "".join(f"{r[c]:>13,.2f}" if c in ("max_host_over_c", "moved_tib") else
                            f"{r[c]:>13,}" if c == "changes" else f"{r[c]:>13,.1f}" for c in STUDY_COLUMNS)
            out.append(f"{r['policy']:<{w}}{'dmtwin':<10}{cells}{r['wall_s']:>9.1f}{r['events_per_s']:>10,.0f}")
            theirs = reference.get((r["policy"], capacity))
            if theirs:
                cells = "".join(f"{theirs[c]:>13,.2f}" if c in ("max_host_over_c", "moved_tib") else
                                f"{theirs[c]:>13,.1f}" for c in STUDY_COLUMNS)
                out.append(f"{'':<{w}}{'reference':<10}{cells}")
        peers = [r for r in ours if r["policy"] in PEERS]
        if peers:
            best = min(peers, key=lambda r: r["warning_vm_h"])
            for r in ours:
                if r["policy"] not in PEERS and best["warning_vm_h"] and best["mean_gib"]:
                    out.append(f"  {r['policy']} against the best peer ({best['policy']}): Warning "
                               f"{r['warning_vm_h'] / best['warning_vm_h']:.2f}x{' (goal ≤ 0.70x)' if goal else ''}, "
                               f"mean memory {r['mean_gib'] / best['mean_gib']:.3f}x"
                               f"{' (goal ≤ 1.000x)' if goal else ''}")
    return "\n".join(out) + "\n"
