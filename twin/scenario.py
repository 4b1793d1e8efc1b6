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
    Decision,
    GuestCapabilities,
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

__all__ = ["Scenario", "HostSpec", "VmSpec", "GuestSpec", "load_scenario", "simulate"]

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
    """Read a scenario from a .toml or .json file."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    return Scenario.model_validate(data)


class _RunningVm:
    def __init__(self, host: HostSpec, spec: VmSpec, demand: np.ndarray) -> None:
        self.spec = spec
        self.demand = demand
        self.guest = SimulatedGuest(host.name, spec.name, spec.guest.os, spec.startup_mib,
                                    refuses_requests=spec.guest.refuses_requests,
                                    max_hot_add_total_mib=spec.guest.max_hot_add_total_mib)
        self.boot_s = spec.start_at_s

    def demand_at(self, second: int) -> int:
        """Demand counts from the last boot: a restarted VM goes through its curve again."""
        return int(self.demand[min(second - self.boot_s, len(self.demand) - 1)])


def simulate(scenario: Scenario, twin: Twin | None = None,
             rejected: list[Rejected] | None = None) -> Iterator[InputEvent | Decision]:
    """Run the scenario and yield every event in log order: each input, then its decisions.

    An input the twin refuses (a VM that cannot start on a full host) is left out of the log and
    appended to ``rejected``; without that list, it is raised.
    """
    twin = twin or Twin()
    vms: dict[tuple[str, str], _RunningVm] = {}
    curves = {
        (h.name, vm.name): series(vm.workload, scenario.duration_s, seed=scenario.seed * 1_000_003 + k)
        for h in scenario.hosts for k, vm in enumerate(h.vms)
    }

    def run(event: InputEvent) -> list[InputEvent | Decision]:
        try:
            return [event, *twin.handle(event)]
        except Rejected as error:
            if rejected is None:
                raise
            rejected.append(error)
            if isinstance(event, VmStarted):
                vms.pop((event.host, event.vm), None)
            return []

    for host in scenario.hosts:
        yield from run(HostJoined(at_ms=scenario.start_ms, host=host.name, total_mib=host.total_mib,
                                  reserve_mib=host.reserve_mib, policy=host.policy))
    for second in range(scenario.duration_s):
        now = scenario.start_ms + 1000 * second
        for host in scenario.hosts:
            yield from _lifecycle(host, second, now, vms, curves, run)
            running = [vms[(host.name, vm.name)] for vm in host.vms if (host.name, vm.name) in vms]
            for vm in running:
                yield from run(vm.guest.status(now, vm.demand_at(second)))
            for event in run(BalancerTicked(at_ms=now + 500, host=host.name)):
                yield event
                running_vm = vms.get((host.name, getattr(event, "vm", "")))
                if running_vm is None or isinstance(event, BalancerTicked):
                    continue
                answer = running_vm.guest.answer(event, now + 500 + scenario.response_ms,
                                                 running_vm.demand_at(second))
                if answer is not None:
                    yield from run(answer)


Run = Callable[[InputEvent], list[InputEvent | Decision]]


def _lifecycle(host: HostSpec, second: int, now: int, vms: dict[tuple[str, str], _RunningVm],
               curves: dict[tuple[str, str], np.ndarray], run: Run) -> Iterator[InputEvent | Decision]:
    for change in host.memory_changes:
        if change.at_s == second:
            yield from run(HostMemoryChanged(at_ms=now, host=host.name, total_mib=change.total_mib,
                                             reserve_mib=change.reserve_mib))
    for spec in host.vms:
        key = (host.name, spec.name)
        if spec.start_at_s == second:
            vms[key] = _RunningVm(host, spec, curves[key])
            yield from run(VmStarted(at_ms=now, host=host.name, vm=spec.name, settings=spec.settings(),
                                     capabilities=spec.capabilities()))
        if key not in vms:
            continue
        if second in spec.restart_at_s:
            vms[key].guest.boot(spec.startup_mib)
            vms[key].boot_s = second
            yield from run(VmRestarted(at_ms=now, host=host.name, vm=spec.name))
        for change in spec.settings_changes:
            if change.at_s == second:
                fields = change.model_dump(exclude={"at_s"}, exclude_none=True)
                yield from run(VmSettingsChanged(at_ms=now, host=host.name, vm=spec.name, **fields))
        if spec.stop_at_s == second:
            del vms[key]
            yield from run(VmStopped(at_ms=now, host=host.name, vm=spec.name))
