"""Scenarios: hosts, their VMs and each VM's workload, and the event-time simulation that turns a
scenario into an event log.

A scenario file is TOML or JSON (see ``examples/``). Simulation runs on event time only: second
``s`` of the run is ``start_ms + 1000·s``. In each second, per host: lifecycle events, then every
running guest's status report (at +0 ms), then a balancer tick (+500 ms) whose requests the
simulated guests answer (+700 ms).
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Annotated, Callable, Iterator, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from .engine import Twin
from .errors import Rejected
from .events import (
    BalancerTicked,
    Entry,
    FrameReport,
    StatusFrame,
    GuestCapabilities,
    GuestStatusReported,
    HostJoined,
    HostMemoryChanged,
    InputEvent,
    MemorySettings,
    PolicyName,
    VmRestarted,
    VmSettingsChanged,
    VmStarted,
    VmStopped,
)
from .guest import SimulatedGuest
from .workload import Workload, series

__all__ = ["Scenario", "HostSpec", "VmSpec", "GuestSpec", "Fleet", "load_scenario", "simulate"]

DEFAULT_START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GuestSpec(_Spec):
    """The guest OS and what its Dynamic Memory driver supports."""

    os: Literal["linux", "windows"] = "windows"
    balloon: bool = True
    hot_add: bool = True
    hot_add_alignment_mib: int | None = None
    """Defaults to 128 MiB on Linux (hv_balloon.c asks 2^7 MB) and 2 MiB on Windows."""
    refuses_requests: bool = False
    """A hibernation-enabled Linux guest keeps its capability bits but refuses every request."""
    refuses_balloon: bool = False
    """Announces the balloon but frees nothing when asked (answers 0 pages); takes added memory."""
    refuses_hot_add: bool = False
    """Announces hot-add but refuses it (0 pages, permanent failure); balloons normally."""
    hidden_floor_mib: int | None = None
    """The guest never lets its memory fall below this, whatever Minimum says: a balloon request
    past it is answered partially (a floor the host cannot see, above Minimum)."""
    answer_percent: int = 100
    """The share of each balloon request the guest releases (partial answers), before its floors."""
    max_hot_add_total_mib: int | None = None


class SettingsChange(_Spec):
    at_s: Annotated[int, Field(ge=0)]
    minimum_mib: int | None = None
    maximum_mib: int | None = None
    buffer_percent: int | None = None
    weight: int | None = None


class VmSpec(_Spec):
    """One VM: Hyper-V memory settings, guest, workload and lifecycle (seconds from the start)."""

    name: str
    startup_mib: int
    minimum_mib: int
    maximum_mib: int
    buffer_percent: int = 20
    weight: int = 5000
    dynamic_memory: bool = True
    guest: GuestSpec = GuestSpec()
    workload: Workload
    start_at_s: Annotated[int, Field(ge=0)] = 0
    stop_at_s: int | None = None
    restart_at_s: list[int] = []
    settings_changes: list[SettingsChange] = []

    def settings(self) -> MemorySettings:
        return MemorySettings(
            dynamic_memory_enabled=self.dynamic_memory, startup_mib=self.startup_mib,
            minimum_mib=self.minimum_mib, maximum_mib=self.maximum_mib,
            buffer_percent=self.buffer_percent, weight=self.weight)

    def capabilities(self) -> GuestCapabilities:
        alignment = self.guest.hot_add_alignment_mib or (128 if self.guest.os == "linux" else 2)
        return GuestCapabilities(balloon=self.guest.balloon, hot_add=self.guest.hot_add,
                                 hot_add_alignment_mib=alignment)


class MemoryChange(_Spec):
    at_s: Annotated[int, Field(ge=0)]
    total_mib: int
    reserve_mib: int


class HostSpec(_Spec):
    name: str
    total_mib: int
    reserve_mib: int = 2048
    policy: PolicyName = "hyperv"
    memory_changes: list[MemoryChange] = []
    vms: list[VmSpec]

    @model_validator(mode="after")
    def _unique_vms(self) -> HostSpec:
        names = [vm.name for vm in self.vms]
        if len(set(names)) != len(names):
            raise ValueError(f"host {self.name!r} names a VM twice")
        return self


class Scenario(_Spec):
    """A whole run: hosts, how long, from when, and the seed of every random workload."""

    seed: int = 0
    start_ms: Annotated[int, Field(ge=0)] = DEFAULT_START_MS
    duration_s: Annotated[int, Field(gt=0)]
    response_ms: Annotated[int, Field(ge=0, le=400)] = 200
    hosts: list[HostSpec] = Field(min_length=1)


def load_scenario(path: str | Path) -> Scenario:
    """Read a scenario from a .toml or .json file.

    Raises ``ScenarioError`` (a ``ValueError``), one line naming the file, host, VM, field and
    value, for a file that is not TOML/JSON or not a valid scenario, VM settings included."""
    from pydantic import ValidationError

    from .specerrors import ScenarioError, scenario_error

    path = Path(path)
    text = path.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as error:
        raise ScenarioError(path, "", f"not valid {'TOML' if path.suffix == '.toml' else 'JSON'}: {error}") from None
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as error:
        raise scenario_error(path, data, error) from None

    def check(where: tuple[int | str, ...], build: Callable[[], object]) -> None:
        try:
            build()
        except ValidationError as error:
            raise scenario_error(path, data, error, where) from None

    for h, host in enumerate(scenario.hosts):  # the events each host and VM will start with
        check(("hosts", h), lambda: HostJoined(at_ms=scenario.start_ms, host=host.name, total_mib=host.total_mib,
                                               reserve_mib=host.reserve_mib, policy=host.policy))
        for c, change in enumerate(host.memory_changes):
            check(("hosts", h, "memory_changes", c), lambda: HostMemoryChanged(
                at_ms=scenario.start_ms, host=host.name, total_mib=change.total_mib, reserve_mib=change.reserve_mib))
        for v, vm in enumerate(host.vms):
            check(("hosts", h, "vms", v), vm.settings)
            check(("hosts", h, "vms", v, "guest"), vm.capabilities)
    return scenario


class _RunningVm:
    def __init__(self, host: HostSpec, spec: VmSpec, demand: np.ndarray) -> None:
        self.spec = spec
        self.demand = demand
        self.guest = SimulatedGuest(host.name, spec.name, spec.guest.os, spec.startup_mib,
                                    refuses_requests=spec.guest.refuses_requests,
                                    refuses_balloon=spec.guest.refuses_balloon,
                                    refuses_hot_add=spec.guest.refuses_hot_add,
                                    hidden_floor_mib=spec.guest.hidden_floor_mib,
                                    answer_percent=spec.guest.answer_percent,
                                    max_hot_add_total_mib=spec.guest.max_hot_add_total_mib)
        self.boot_s = spec.start_at_s

    def demand_at(self, second: int, cyclic: bool = False) -> int:
        """Demand counts from the last boot: a restarted VM goes through its curve again. Past the
        end of the curve it holds its last value, or starts over when ``cyclic``."""
        age = max(second - self.boot_s, 0)
        return int(self.demand[age % len(self.demand) if cyclic else min(age, len(self.demand) - 1)])


class Fleet:
    """The scenario's guests, second by second: what the hosts and guests send, and how guests
    answer requests. Both drivers use it: ``simulate`` (in-process) and the Kafka feeder."""

    def __init__(self, scenario: Scenario, cyclic: bool = False) -> None:
        self.scenario = scenario
        self.cyclic = cyclic
        """Workloads start over after ``duration_s`` (for runs that go on until stopped)."""
        self.second = 0
        self.vms: dict[tuple[str, str], _RunningVm] = {}
        self.curves = {
            (h.name, vm.name): series(vm.workload, scenario.duration_s, seed=scenario.seed * 1_000_003 + k)
            for h in scenario.hosts for k, vm in enumerate(h.vms)
        }

    def now_ms(self, second: int | None = None) -> int:
        return self.scenario.start_ms + 1000 * (self.second if second is None else second)

    def joins(self) -> list[HostJoined]:
        return [HostJoined(at_ms=self.scenario.start_ms, host=h.name, total_mib=h.total_mib,
                           reserve_mib=h.reserve_mib, policy=h.policy) for h in self.scenario.hosts]

    def lifecycle(self, host: HostSpec) -> list[InputEvent]:
        """Host memory changes and VM starts, restarts, setting changes and stops due this second."""
        second, now = self.second, self.now_ms()
        events: list[InputEvent] = [
            HostMemoryChanged(at_ms=now, host=host.name, total_mib=c.total_mib, reserve_mib=c.reserve_mib)
            for c in host.memory_changes if c.at_s == second]
        for spec in host.vms:
            key = (host.name, spec.name)
            if spec.start_at_s == second:
                self.vms[key] = _RunningVm(host, spec, self.curves[key])
                events.append(VmStarted(at_ms=now, host=host.name, vm=spec.name, settings=spec.settings(),
                                        capabilities=spec.capabilities()))
            if key not in self.vms:
                continue
            if second in spec.restart_at_s:
                self.vms[key].guest.boot(spec.startup_mib)
                self.vms[key].boot_s = second
                events.append(VmRestarted(at_ms=now, host=host.name, vm=spec.name))
            for change in spec.settings_changes:
                if change.at_s == second:
                    fields = change.model_dump(exclude={"at_s"}, exclude_none=True)
                    events.append(VmSettingsChanged(at_ms=now, host=host.name, vm=spec.name, **fields))
            if spec.stop_at_s == second:
                del self.vms[key]
                events.append(VmStopped(at_ms=now, host=host.name, vm=spec.name))
        return events

    def reports(self, host: HostSpec) -> list[GuestStatusReported]:
        """Every running guest's status report of this second."""
        now = self.now_ms()
        return [vm.guest.status(now, vm.demand_at(self.second, self.cyclic))
                for spec in host.vms if (vm := self.vms.get((host.name, spec.name))) is not None]

    def answer(self, decision: object, at_ms: int) -> InputEvent | None:
        """The guest's answer to a request, if its VM still runs and the request needs one."""
        vm = self.vms.get((getattr(decision, "host", ""), getattr(decision, "vm", "")))
        if vm is None:
            return None
        return vm.guest.answer(decision, at_ms, vm.demand_at(self.second, self.cyclic))

    def forget(self, host: str, vm: str) -> None:
        """A VM the twin refused to start sends nothing more."""
        self.vms.pop((host, vm), None)


def simulate(scenario: Scenario, twin: Twin | None = None, rejected: list[Rejected] | None = None,
             refused: list[tuple[InputEvent, Rejected]] | None = None, framed: bool = False) -> Iterator[Entry]:
    """Run the scenario and yield every log entry in order: each input, then its decisions.

    ``framed``: each host's reports of a second as one frame, and each round with its decisions as
    one entry, as the live worker writes them (``dmtwin simulate`` does); else every report, tick
    and decision as an entry of its own.

    An input the twin refuses (a VM that cannot start on a full host, a setting change it may not
    make while the VM runs) is left out of the log and appended to ``rejected``, and with the
    input to ``refused`` (before the next event is yielded, so a writer knows where it was);
    without either list, it is raised.
    """
    twin = twin or Twin()
    fleet = Fleet(scenario)

    def refuse(event: InputEvent, error: Rejected) -> None:
        if rejected is None and refused is None:
            raise error
        if rejected is not None:
            rejected.append(error)
        if refused is not None:
            refused.append((event, error))
        if isinstance(event, VmStarted):
            fleet.forget(event.host, event.vm)

    def run(event: InputEvent) -> list[Entry]:
        try:
            return [event, *twin.handle(event)]
        except Rejected as error:
            refuse(event, error)
            return []

    def run_frame(reports: list[GuestStatusReported]) -> list[Entry]:
        if not framed:
            return [entry for report in reports for entry in run(report)]
        if not reports:
            return []
        first = reports[0]
        frame = StatusFrame(at_ms=first.at_ms, host=first.host, reports=[
            FrameReport(vm=r.vm, committed_mib=r.committed_mib, available_mib=r.available_mib) for r in reports])
        kept, refusals = twin.frame(frame)
        for k, error in refusals:
            refuse(reports[k], error)
        return [] if kept is None else [kept]

    for join in fleet.joins():
        yield from run(join)
    for second in range(scenario.duration_s):
        fleet.second = second
        now = fleet.now_ms()
        for host in scenario.hosts:
            for event in fleet.lifecycle(host):
                yield from run(event)
            yield from run_frame(fleet.reports(host))
            if framed:
                round_ = twin.round(host.name, now + 500)
                yield round_
                decisions: list[Entry] = list(round_.decisions)
            else:
                decisions = run(BalancerTicked(at_ms=now + 500, host=host.name))
                yield from decisions[:1]
                decisions = decisions[1:]
            for decision in decisions:
                if not framed:
                    yield decision
                answer = fleet.answer(decision, now + 500 + scenario.response_ms)
                if answer is not None:
                    yield from run(answer)
