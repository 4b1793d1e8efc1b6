"""What if: replay the recorded inputs with another policy, host size or VM settings, and compare.

The recorded inputs are the host's and VMs' lifecycle, the balancer's ticks and the guests' status
reports. The guests' *answers* were recorded only for what actually happened: under other
decisions they would have answered differently. So the what-if run answers with simulated guests
(``twin.guest.SimulatedGuest``, Windows model: the guest releases what it is asked down to a floor
of 5 % of what it sees, and takes all it is given). Their demand is the one the twin saw in the
actual run: the recorded committed memory minus what the balloon held then. ``WhatIf.notes`` says so.

Both runs are measured alike (``Meter``): at each balancer tick, the state since the previous tick
is integrated: time in Warning and in Smart Paging, memory assigned (time-weighted) and saved against
a static allocation at Maximum (Startup for VMs without Dynamic Memory); and the answered add and
remove operations, and Smart Paging episodes, are counted.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Callable, cast

from .audit import is_decision
from .engine import Twin
from .errors import Rejected
from .events import (
    POLICY_NAMES,
    BalancerTicked,
    BalloonResponded,
    BalloonTargetSet,
    Decision,
    GuestCapabilities,
    GuestStatusReported,
    flatten,
    HostJoined,
    HostMemoryChanged,
    HotAddResponded,
    InputEvent,
    MemoryAdditionRequested,
    MemorySettings,
    SmartPagingStarted,
    UnballoonRequested,
    UnballoonResponded,
    VmRestarted,
    VmSettingsChanged,
    VmStarted,
    VmStopped,
)
from .guest import SimulatedGuest
from .log import decode
from .policies import POLICY_INTERVAL_MS
from .state import NO_DATA, Col, HostState, memory_status
from .study import OWN_POLICIES, own_policy

__all__ = [
    "SETTING_FIELDS",
    "STATUS_CODES",
    "Changes",
    "Meter",
    "Series",
    "VmUsage",
    "WhatIf",
    "measure",
    "parse_setting",
    "whatif",
    "Comparison",
    "compare",
    "summary",
]

SETTING_FIELDS = {"startup_mib": "settings", "minimum_mib": "settings", "maximum_mib": "settings",
                  "buffer_percent": "settings", "weight": "settings", "dynamic_memory_enabled": "settings",
                  "balloon": "capabilities", "hot_add": "capabilities", "hot_add_alignment_mib": "capabilities"}
"""Fields ``--set VM.field=value`` may change, and where they live in ``vm.started``."""

STATUS_CODES = {"": 0, "OK": 1, "Low": 2, "Warning": 3, "Paging": 4}
DEFAULT_RESPONSE_MS = 200

AnyEvent = InputEvent | Decision
VmKey = tuple[str, str]


def parse_setting(text: str) -> tuple[str, str, int | bool]:
    """``VM.field=value`` (VM may be ``*`` for all) → (vm, field, value)."""
    target, sep, raw = text.partition("=")
    vm, dot, name = target.rpartition(".")
    if not sep or not dot or not vm or name not in SETTING_FIELDS:
        raise ValueError(f"--set {text!r}: expected VM.field=value with field one of {', '.join(SETTING_FIELDS)}")
    if raw.lower() in ("true", "false"):
        return vm, name, raw.lower() == "true"
    try:
        return vm, name, int(raw)
    except ValueError:
        raise ValueError(f"--set {text!r}: the value must be a whole number or true/false") from None


WHATIF_POLICIES: tuple[str, ...] = (*POLICY_NAMES, *OWN_POLICIES)
"""The log format's policies and dmtwin's own (``twin.study.OWN_POLICIES``, what-if only; with
parameters: ``foresight:price_mib=5600,hold=1``)."""


@dataclass(frozen=True)
class Changes:
    """What the what-if changes; None (or empty) keeps what was recorded."""

    policy: str | None = None
    host_mib: int | None = None
    reserve_mib: int | None = None
    settings: dict[str, dict[str, int | bool]] = field(default_factory=dict)
    """VM name (or ``*``) → field → value."""

    def __post_init__(self) -> None:
        if self.policy is not None and self.policy.partition(":")[0] not in WHATIF_POLICIES:
            raise ValueError(f"policy {self.policy!r}: expected one of {', '.join(WHATIF_POLICIES)}")
        if self.policy is not None:
            own_policy(self.policy)  # refuses a parameter that is not one

    def for_vm(self, vm: str) -> dict[str, int | bool]:
        return {**self.settings.get("*", {}), **self.settings.get(vm, {})}

    def describe(self) -> str:
        parts = []
        if self.policy:
            parts.append(f"policy {self.policy}")
        if self.host_mib is not None:
            parts.append(f"host memory {self.host_mib} MiB")
        if self.reserve_mib is not None:
            parts.append(f"reserve {self.reserve_mib} MiB")
        parts += [f"{vm}.{name}={value}" for vm, values in self.settings.items() for name, value in values.items()]
        return ", ".join(parts) or "nothing changed"


@dataclass
class VmUsage:
    """One VM over one run. Times in seconds, memory in MiB·s (÷ ``running_s`` for the average)."""

    running_s: float = 0.0
    warning_s: float = 0.0
    low_s: float = 0.0
    paging_s: float = 0.0
    short_mib_s: float = 0.0
    """∫ (demand − assigned) while demand exceeds assigned."""
    assigned_mib_s: float = 0.0
    static_mib_s: float = 0.0
    add_ops: int = 0
    remove_ops: int = 0
    added_mib: int = 0
    removed_mib: int = 0
    smart_paging: int = 0
    decisions: Counter[str] = field(default_factory=Counter)

    @property
    def average_mib(self) -> float:
        return self.assigned_mib_s / self.running_s if self.running_s else 0.0

    @property
    def saved_percent(self) -> float:
        """Memory saved against a static allocation at Maximum, in percent of it."""
        return 100.0 * (1 - self.assigned_mib_s / self.static_mib_s) if self.static_mib_s else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"running_s": self.running_s, "warning_s": self.warning_s, "low_s": self.low_s,
                "paging_s": self.paging_s, "short_mib_s": self.short_mib_s, "average_assigned_mib": round(self.average_mib, 1),
                "saved_percent": round(self.saved_percent, 2), "add_ops": self.add_ops,
                "remove_ops": self.remove_ops, "added_mib": self.added_mib, "removed_mib": self.removed_mib,
                "smart_paging": self.smart_paging, "decisions": dict(self.decisions)}


class Series:
    """A time series kept to at most ``2 × points`` samples: past that, every other one is dropped
    and only every ``stride``-th new sample is kept (decimation, so memory stays bounded)."""

    def __init__(self, columns: tuple[str, ...], points: int = 600) -> None:
        self.columns = columns
        self.points = points
        self.t: list[int] = []
        self.values: dict[str, list[int]] = {c: [] for c in columns}
        self.stride = 1
        self._seen = 0

    def add(self, at_ms: int, values: tuple[int, ...]) -> None:
        self._seen += 1
        if (self._seen - 1) % self.stride:
            return
        self.t.append(at_ms)
        for column, value in zip(self.columns, values):
            self.values[column].append(value)
        if len(self.t) >= 2 * self.points:
            self.t = self.t[::2]
            self.values = {c: v[::2] for c, v in self.values.items()}
            self.stride *= 2


VM_SERIES = ("assigned", "demand", "visible", "pressure", "status", "whatif_assigned")
HOST_SERIES = ("assigned", "free", "capacity")


class Meter:
    """Measures a run event by event: call ``before`` ahead of folding each event and ``after``
    once it (and each decision) is folded. With ``record``, keeps series and decisions for charts."""

    def __init__(self, record: bool = False, points: int = 600) -> None:
        self.usage: dict[VmKey, VmUsage] = {}
        self.record = record
        self.points = points
        self.vm_series: dict[VmKey, Series] = {}
        self.host_series: dict[str, Series] = {}
        self.decisions: dict[VmKey, list[Decision]] = {}
        self._last_tick: dict[str, int] = {}
        self._asked: dict[VmKey, int] = {}
        self._host_now: dict[str, int] = {}
        self.peak_mib = 0
        """The largest Σ assigned over all hosts, as of each tick."""

    def _vm(self, key: VmKey) -> VmUsage:
        usage = self.usage.get(key)
        if usage is None:
            usage = self.usage[key] = VmUsage()
        return usage

    def before(self, event: AnyEvent, twin: Twin) -> None:
        if not isinstance(event, BalancerTicked):
            return
        state = twin.hosts.get(event.host)
        if state is None:
            return
        last = self._last_tick.get(event.host)
        self._last_tick[event.host] = event.at_ms
        dt = (event.at_ms - last) / 1000 if last is not None else 0.0
        self._integrate(state, event.at_ms, dt)

    def _integrate(self, state: HostState, at_ms: int, dt: float) -> None:
        rows = state.vms.rows.tolist()
        total = 0
        for name, row in zip(state.vms.names, rows):
            key = (state.name, name)
            usage = self._vm(key)
            assigned, demand, dm = row[Col.ASSIGNED], row[Col.DEMAND], row[Col.DM_ENABLED]
            status = memory_status(bool(dm), bool(row[Col.SMART_PAGING]), demand, assigned, row[Col.BUFFER_PERCENT])
            total += assigned
            if dt:
                usage.running_s += dt
                usage.assigned_mib_s += assigned * dt
                usage.static_mib_s += (row[Col.MAXIMUM] if dm else row[Col.STARTUP]) * dt
                if demand > assigned:
                    usage.short_mib_s += (demand - assigned) * dt
                if status == "Warning":
                    usage.warning_s += dt
                elif status == "Low":
                    usage.low_s += dt
                elif status == "Paging":
                    usage.paging_s += dt
            if self.record:
                series = self.vm_series.get(key)
                if series is None:
                    series = self.vm_series[key] = Series(VM_SERIES[:5], self.points)
                pressure = (200 * demand + assigned) // (2 * assigned) if demand != NO_DATA and assigned else 0
                series.add(at_ms, (assigned, max(demand, 0), row[Col.VISIBLE], pressure, STATUS_CODES[status]))
        self._host_now[state.name] = total
        self.peak_mib = max(self.peak_mib, sum(self._host_now.values()))
        if self.record:
            series = self.host_series.get(state.name)
            if series is None:
                series = self.host_series[state.name] = Series(HOST_SERIES, self.points)
            series.add(at_ms, (total, state.free_mib(), state.capacity_mib))

    def after(self, event: AnyEvent) -> None:
        key = (event.host, getattr(event, "vm", ""))
        if is_decision(event):
            usage = self._vm(key)
            usage.decisions[event.type] += 1
            if isinstance(event, UnballoonRequested):
                self._asked[key] = event.return_mib
            elif isinstance(event, SmartPagingStarted):
                usage.smart_paging += 1
            if self.record:
                self.decisions.setdefault(key, []).append(event)
        elif isinstance(event, BalloonResponded) and event.released_mib:
            usage = self._vm(key)
            usage.remove_ops += 1
            usage.removed_mib += event.released_mib
        elif isinstance(event, UnballoonResponded):
            usage = self._vm(key)
            usage.add_ops += 1
            usage.added_mib += self._asked.pop(key, 0)
        elif isinstance(event, HotAddResponded) and event.added_mib:
            usage = self._vm(key)
            usage.add_ops += 1
            usage.added_mib += event.added_mib


@dataclass
class WhatIf:
    """The actual run and the what-if, measured alike, and what the reader must know."""

    changes: Changes
    actual: Meter
    whatif: Meter | None
    notes: list[str] = field(default_factory=list)
    rejected_actual: int = 0
    rejected_whatif: list[str] = field(default_factory=list)

    def rows(self) -> list[tuple[VmKey, VmUsage, VmUsage | None]]:
        keys = sorted(set(self.actual.usage) | set(self.whatif.usage if self.whatif else {}))
        return [(k, self.actual.usage.get(k, VmUsage()),
                 self.whatif.usage.get(k, VmUsage()) if self.whatif else None) for k in keys]

    def totals(self) -> tuple[VmUsage, VmUsage]:
        """Sums over all VMs: actual and what-if."""
        def total(meter: Meter | None) -> VmUsage:
            out = VmUsage()
            for usage in (meter.usage.values() if meter else ()):
                for name in ("running_s", "warning_s", "low_s", "paging_s", "short_mib_s", "assigned_mib_s",
                             "static_mib_s",
                             "add_ops", "remove_ops", "added_mib", "removed_mib", "smart_paging"):
                    setattr(out, name, getattr(out, name) + getattr(usage, name))
                out.decisions.update(usage.decisions)
            return out
        return total(self.actual), total(self.whatif)

    def to_dict(self) -> dict[str, Any]:
        actual, what = self.totals()
        return {"changes": self.changes.describe(), "notes": self.notes,
                "rejected_actual": self.rejected_actual, "rejected_whatif": self.rejected_whatif,
                "total": {"actual": actual.as_dict(), "whatif": what.as_dict()},
                "vms": [{"host": h, "vm": v, "actual": a.as_dict(), "whatif": w.as_dict() if w else None}
                        for (h, v), a, w in self.rows()]}

    def to_text(self) -> str:
        out = [f"what if: {self.changes.describe()}"]
        out += [f"note: {note}" for note in self.notes]
        header = (f"{'host/VM':<24} {'Warning s':>17} {'Paging s':>15} {'avg MiB':>17} {'saved vs Max %':>17} "
                  f"{'adds':>11} {'removes':>11} {'SmartPg':>9}")
        out += ["", "actual → what-if", header]

        def row(name: str, a: VmUsage, w: VmUsage) -> str:
            return (f"{name:<24} {a.warning_s:>7.0f} → {w.warning_s:<7.0f} {a.paging_s:>6.0f} → {w.paging_s:<6.0f} "
                    f"{a.average_mib:>7.0f} → {w.average_mib:<7.0f} {a.saved_percent:>7.1f} → {w.saved_percent:<7.1f} "
                    f"{a.add_ops:>4} → {w.add_ops:<4} {a.remove_ops:>4} → {w.remove_ops:<4} "
                    f"{a.smart_paging:>3} → {w.smart_paging:<3}")

        for (host, vm), a, w in self.rows():
            out.append(row(f"{host}/{vm}"[:24], a, w or VmUsage()))
        actual, what = self.totals()
        out.append(row("all VMs", actual, what))
        if self.rejected_whatif:
            out += ["", f"{len(self.rejected_whatif)} recorded inputs did not apply in the what-if, e.g.:"]
            out += [f"  {reason}" for reason in self.rejected_whatif[:5]]
        return "\n".join(out) + "\n"


def measure(lines: Iterable[str | bytes], record: bool = False, points: int = 600) -> WhatIf:
    """Only the actual run, measured (``whatif`` with nothing to compare)."""
    return whatif(lines, None, record=record, points=points)


def whatif(lines: Iterable[str | bytes], changes: Changes | None, record: bool = False, points: int = 600,
           response_ms: int | None = None) -> WhatIf:
    """Replay ``lines`` as recorded and, if ``changes`` is given, as a what-if (module docstring)."""
    actual = Twin()
    result = WhatIf(changes or Changes(), Meter(record, points), None)
    run = _WhatIfRun(changes, result, record, points, response_ms) if changes is not None else None
    if run is not None:
        result.whatif = run.meter
        result.notes.append(
            "the guests' answers were recorded only for the actual run: in the what-if, simulated guests "
            "(twin.guest.SimulatedGuest, Windows model) answer the balancer, with the demand the twin saw in "
            "the actual run (recorded committed memory minus the balloon then)")
    for position, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entry = decode(line, position)
        except Rejected:
            result.rejected_actual += 1
            continue
        for event in flatten(entry):  # a frame as its reports, a round as its tick and decisions
            result.actual.before(event, actual)
            try:
                actual.apply(event)
            except Rejected:
                result.rejected_actual += 1
                continue
            result.actual.after(event)
            if run is not None:
                run.feed(event, actual)
    if run is not None:
        run.finish()
    if result.rejected_actual:
        result.notes.append(f"{result.rejected_actual} recorded lines were invalid or did not apply: left out")
    return result


class _WhatIfRun:
    """The what-if twin, its simulated guests and the answers they owe."""

    def __init__(self, changes: Changes, result: WhatIf, record: bool, points: int,
                 response_ms: int | None) -> None:
        self.changes = changes
        self.result = result
        self.twin = Twin()
        self.meter = Meter(record, points)
        self.guests: dict[VmKey, SimulatedGuest] = {}
        self.demand: dict[VmKey, int] = {}
        self.owed: dict[str, list[tuple[int, int, Decision]]] = {}
        self.fixed_response_ms = response_ms
        self.response_ms: dict[str, int] = {}
        self.asked_at: dict[tuple[str, str, int], int] = {}
        self._count = 0
        self._policy: dict[str, str] = {}
        self._last_round: dict[str, int] = {}
        self._own: dict[str, Any] = {}
        """host → its own policy's object (``twin.study.OWN_POLICIES``), which makes its rounds."""

    def feed(self, event: AnyEvent, actual: Twin) -> None:
        """One recorded event, already folded into the actual twin."""
        host = event.host
        if is_decision(event):
            self.asked_at[(host, event.vm, event.seq)] = event.at_ms
            return
        event = cast(InputEvent, event)
        if isinstance(event, (BalloonResponded, UnballoonResponded, HotAddResponded)):
            asked = self.asked_at.pop((host, event.vm, event.seq), None)
            if asked is not None:
                self.response_ms[host] = event.at_ms - asked
            return
        self._settle(host, event.at_ms)  # answers due before this input, with the demand until now
        if isinstance(event, GuestStatusReported):
            state = actual.hosts[host]
            self.demand[(host, event.vm)] = int(state.vms.data[state.vms.index[event.vm], Col.DEMAND])
        replayed = self._transform(event)
        if replayed is not None:
            self._handle(replayed)

    def _transform(self, event: InputEvent) -> InputEvent | None:
        c, key = self.changes, (event.host, getattr(event, "vm", ""))
        if isinstance(event, HostJoined):
            total = c.host_mib if c.host_mib is not None else event.total_mib
            reserve = c.reserve_mib if c.reserve_mib is not None else event.reserve_mib
            policy = c.policy or event.policy
            own = own_policy(policy)
            self._policy[event.host] = policy.partition(":")[0]
            if own is not None:  # the log format cannot name it: the host joins as hyperv
                self._own[event.host] = own
                policy = "hyperv"
            return event.model_copy(update={"policy": policy, "total_mib": total,
                                            "reserve_mib": reserve, "chain": None})
        if isinstance(event, BalancerTicked):
            # each policy rounds at its own published interval (``POLICY_INTERVAL_MS``): a recorded
            # tick sooner than that after the what-if's last round is not a round of this policy
            interval = POLICY_INTERVAL_MS.get(self._policy.get(event.host, ""), 0)
            last = self._last_round.get(event.host)
            if last is not None and event.at_ms - last < interval:
                return None
            self._last_round[event.host] = event.at_ms
            return event.model_copy(update={"chain": None}) if event.chain else event
        if isinstance(event, HostMemoryChanged):
            total = c.host_mib if c.host_mib is not None else event.total_mib
            reserve = c.reserve_mib if c.reserve_mib is not None else event.reserve_mib
            return event.model_copy(update={"total_mib": total, "reserve_mib": reserve, "chain": None})
        if isinstance(event, VmStarted):
            event = self._started(event)
            self.guests[key] = SimulatedGuest(event.host, event.vm, "windows", event.settings.startup_mib)
            return event
        if isinstance(event, VmRestarted):
            state = self.twin.hosts.get(event.host)
            guest = self.guests.get(key)
            if guest is not None and state is not None and event.vm in state.vms:
                guest.boot(int(state.vms.data[state.vms.index[event.vm], Col.STARTUP]))
            return event
        if isinstance(event, VmStopped):
            self.guests.pop(key, None)
            return event
        if isinstance(event, VmSettingsChanged):
            changed = set(c.for_vm(event.vm))
            kept = {k: v for k, v in event.model_dump(exclude={"v", "at_ms", "host", "vm", "type"}).items()
                    if v is not None and k not in changed}
            return VmSettingsChanged(at_ms=event.at_ms, host=event.host, vm=event.vm, **kept) if kept else None
        if isinstance(event, GuestStatusReported):
            guest = self.guests.get(key)
            demand = self.demand.get(key)
            if guest is None or demand is None or demand < 0:
                return None
            return guest.status(event.at_ms, demand)
        return event.model_copy(update={"chain": None}) if event.chain else event

    def _started(self, event: VmStarted) -> VmStarted:
        overrides = self.changes.for_vm(event.vm)
        if not overrides:
            return event
        settings = event.settings.model_dump()
        capabilities = event.capabilities.model_dump()
        for name, value in overrides.items():
            (settings if SETTING_FIELDS[name] == "settings" else capabilities)[name] = value
        try:
            return event.model_copy(update={"settings": MemorySettings.model_validate(settings),
                                            "capabilities": GuestCapabilities.model_validate(capabilities),
                                            "chain": None})
        except ValueError as error:
            raise ValueError(f"--set for VM {event.vm}: {error}") from None

    def _handle(self, event: InputEvent) -> None:
        self.meter.before(event, self.twin)
        try:
            decisions = self._decide(event)
        except Rejected as refused:
            self.result.rejected_whatif.append(f"{event.type} of {event.host}/{getattr(event, 'vm', '-')} "
                                               f"at {event.at_ms}: {refused.reason}")
            if isinstance(event, VmStarted):
                self.guests.pop((event.host, event.vm), None)
            return
        self.meter.after(event)
        delay = self.fixed_response_ms
        if delay is None:
            delay = self.response_ms.get(event.host, DEFAULT_RESPONSE_MS)
        for decision in decisions:
            self.meter.after(decision)
            if isinstance(decision, (BalloonTargetSet, UnballoonRequested, MemoryAdditionRequested)):
                self._count += 1
                heapq.heappush(self.owed.setdefault(event.host, []),
                               (decision.at_ms + delay, self._count, decision))

    def _decide(self, event: InputEvent) -> list[Decision]:
        """``Twin.handle``; a round of a host under an own policy is that policy's, which first
        takes in what the guests reported (``observe``)."""
        own = self._own.get(event.host) if isinstance(event, BalancerTicked) else None
        if own is None:
            return self.twin.handle(event)
        self.twin.apply(event)
        state = self.twin.hosts[event.host]
        own.observe(state, event.at_ms)
        decisions: list[Decision] = list(own.plan(state, event.at_ms))
        for decision in decisions:
            self.twin.apply(decision)
        return decisions

    def _settle(self, host: str, until_ms: int | None) -> None:
        """Deliver the guests' answers due by ``until_ms`` (all of them if None)."""
        owed = self.owed.get(host)
        while owed and (until_ms is None or owed[0][0] <= until_ms):
            due, _, decision = heapq.heappop(owed)
            key = (host, decision.vm)
            guest = self.guests.get(key)
            if guest is None:
                continue
            answer = guest.answer(decision, due, max(self.demand.get(key, 0), 0))
            if answer is not None:
                self._handle(answer)

    def finish(self) -> None:
        for host in list(self.owed):
            self._settle(host, None)


COMPARE_COLUMNS = ("warning_h", "low_h", "short_gib_h", "mean_gib", "peak_gib", "saved_percent", "operations",
                   "moved_gib")


def summary(usage: VmUsage, meter: Meter | None) -> dict[str, float]:
    """One run in the comparison's columns: Warning and Low VM-hours, short GiB-hours, mean (over
    the run) and peak Σ assigned memory, saving against static Maximum, churn (answered add and
    remove operations, and the memory they moved)."""
    duration = max((max(u.running_s for u in meter.usage.values()) if meter and meter.usage else 0.0), 0.0)
    return {"warning_h": usage.warning_s / 3600, "low_h": usage.low_s / 3600,
            "short_gib_h": usage.short_mib_s / 1024 / 3600,
            "mean_gib": usage.assigned_mib_s / duration / 1024 if duration else 0.0,
            "peak_gib": (meter.peak_mib if meter else 0) / 1024, "saved_percent": usage.saved_percent,
            "operations": usage.add_ops + usage.remove_ops,
            "moved_gib": (usage.added_mib + usage.removed_mib) / 1024}


@dataclass
class Comparison:
    """Every policy on the same log: the recorded run, then one what-if per policy."""

    changes: Changes
    rows: list[tuple[str, dict[str, float]]]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"changes": self.changes.describe(), "notes": self.notes,
                "runs": [{"run": name, **values} for name, values in self.rows]}

    def to_text(self, plot: bool = True) -> str:
        out = [f"every policy on the same log ({self.changes.describe()})"]
        out += [f"note: {note}" for note in self.notes]
        head = ("Warning VM-h", "Low VM-h", "short GiB-h", "mean GiB", "peak GiB", "saved %", "ops", "moved GiB")
        out += ["", f"{'run':<16}" + "".join(f"{h:>14}" for h in head)]
        for name, values in self.rows:
            out.append(f"{name:<16}" + "".join(
                f"{values[c]:>14,.0f}" if c == "operations" else f"{values[c]:>14,.2f}" for c in COMPARE_COLUMNS))
        if plot:
            out += ["", *self.plot()]
        return "\n".join(out) + "\n"

    def plot(self, width: int = 60, height: int = 14) -> list[str]:
        """Warning VM-h (up) against mean memory (right), one letter per run, in the terminal."""
        points = [(name, v["mean_gib"], v["warning_h"]) for name, v in self.rows]
        xs, ys = [p[1] for p in points], [p[2] for p in points]
        x0, x1 = min(xs), max(xs)
        y0, y1 = min(ys), max(ys)
        grid = [[" "] * width for _ in range(height)]
        legend = []
        for n, (name, x, y) in enumerate(points):
            mark = chr(ord("A") + n)
            col = round((x - x0) / (x1 - x0) * (width - 1)) if x1 > x0 else width // 2
            row = height - 1 - (round((y - y0) / (y1 - y0) * (height - 1)) if y1 > y0 else height // 2)
            grid[row][col] = mark if grid[row][col] == " " else "*"
            legend.append(f"{mark} {name}")
        lines = ["Warning VM-h"]
        for r, cells in enumerate(grid):
            label = f"{y1:>9.1f} |" if r == 0 else (f"{y0:>9.1f} |" if r == height - 1 else f"{'':>9} |")
            lines.append(label + "".join(cells))
        lines.append(f"{'':>9} +" + "-" * width)
        lines.append(f"{'':>10}{x0:<.1f}{'mean GiB':^{width - 16}}{x1:>.1f}")
        lines.append("  ".join(legend) + "   (* several)")
        return lines


def compare(lines: Callable[[], Iterable[str | bytes]], policies: Iterable[str], changes: Changes | None = None,
            response_ms: int | None = None) -> Comparison:
    """The recorded run and a what-if under each of ``policies``, with ``changes`` (policy aside)
    applied to all of them. ``lines()`` gives the log afresh for each run."""
    base = changes or Changes()
    result = Comparison(base, [])
    recorded = None
    for policy in policies:
        run = whatif(lines(), Changes(policy=policy, host_mib=base.host_mib, reserve_mib=base.reserve_mib,
                                      settings=base.settings), response_ms=response_ms)
        actual, what = run.totals()
        if recorded is None:
            recorded = ("recorded", summary(actual, run.actual))
            result.rows.append(recorded)
            result.notes += run.notes
        result.rows.append((policy, summary(what, run.whatif)))
        if run.rejected_whatif:
            result.notes.append(f"{policy}: {len(run.rejected_whatif)} recorded inputs did not apply")
    return result
