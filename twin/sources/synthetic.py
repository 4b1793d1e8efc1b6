"""Synthetic fleets: N hosts × M VMs from one line, and the guests' reports of any scenario.

``fleet(hosts=3, vms=12, mix="steady:2,diurnal:3,bursty:3,idle:2,leak:1,batch:1", seed=7)`` gives a
``twin.scenario.Scenario`` whose every host runs M VMs of the mix (counts when they add up to M,
else weights), each with seeded, varied settings and a workload sized to its Maximum RAM.
``parse_fleet("3x12 mix=steady:2,diurnal:3 seed=7 host_mib=65536")`` reads the same as a string.

``reports(scenario)`` is what such a fleet's guests would send a twin that balances nothing: host
and VM lifecycle and a status report per VM per second, each guest keeping its Startup RAM
(open loop). ``twin.scenario.simulate`` runs the same scenario closed loop, with the twin's
decisions and the simulated guests' answers.
"""

from __future__ import annotations

import re
from typing import Any, Iterator

import numpy as np

from ..events import (
    HostJoined,
    HostMemoryChanged,
    InputEvent,
    VmRestarted,
    VmSettingsChanged,
    VmStarted,
    VmStopped,
)
from ..guest import SimulatedGuest
from ..scenario import GuestSpec, HostSpec, Scenario, VmSpec
from ..workload import WORKLOAD_ADAPTER, Workload, series

__all__ = ["KINDS", "parse_mix", "fleet", "parse_fleet", "reports"]

KINDS = ("steady", "idle", "diurnal", "bursty", "leak", "boot_storm", "batch")
"""Workload kinds a mix may name (``twin.workload``; ``trace`` needs data, see ``bitbrains``)."""
MAXIMA_MIB = (2048, 4096, 6144, 8192, 12288, 16384)
_FLEET = re.compile(r"^\s*(?P<hosts>\d+)\s*x\s*(?P<vms>\d+)\b(?P<rest>.*)$")


def parse_mix(mix: str) -> dict[str, int]:
    """``"steady:2,diurnal:3"`` → {"steady": 2, "diurnal": 3}; a kind without ``:n`` counts 1."""
    out: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in mix.split(","))):
        kind, _, count = part.partition(":")
        kind = kind.strip()
        if kind not in KINDS:
            raise ValueError(f"mix: unknown workload kind {kind!r} (known: {', '.join(KINDS)})")
        if count and not count.strip().isdigit():
            raise ValueError(f"mix: {part!r} needs a whole count after ':'")
        out[kind] = out.get(kind, 0) + (int(count) if count else 1)
    if not out or sum(out.values()) == 0:
        raise ValueError(f"mix {mix!r} names no VM")
    return out


def _counts(mix: dict[str, int], vms: int) -> list[str]:
    """The kind of each of ``vms`` VMs: the mix's counts if they add up, else largest remainders."""
    total = sum(mix.values())
    if total == vms:
        return [kind for kind, n in mix.items() for _ in range(n)]
    quotas = {kind: n * vms / total for kind, n in mix.items()}
    counts = {kind: int(q) for kind, q in quotas.items()}
    for kind in sorted(quotas, key=lambda k: counts[k] - quotas[k])[: vms - sum(counts.values())]:
        counts[kind] += 1
    return [kind for kind, n in counts.items() for _ in range(n)]


def _workload(kind: str, maximum: int, duration_s: int, rng: np.random.Generator) -> Workload:
    """A workload of ``kind`` sized to the VM's Maximum RAM and the run's length."""
    def part(low: float, high: float) -> int:
        return int(maximum * rng.uniform(low, high))

    spec: dict[str, Any] = {"kind": kind}
    if kind == "steady":
        spec.update(mib=part(0.3, 0.7))
    elif kind == "idle":
        spec.update(mib=int(rng.integers(250, 600)))
    elif kind == "diurnal":
        spec.update(base_mib=part(0.35, 0.5), amplitude_mib=part(0.15, 0.3),
                    period_s=max(60, int(duration_s / rng.uniform(1, 3))), phase_s=int(rng.integers(0, duration_s)))
    elif kind == "bursty":
        spec.update(base_mib=part(0.2, 0.4), burst_mib=part(0.3, 0.5), bursts_per_hour=float(rng.uniform(4, 20)),
                    burst_s=int(rng.integers(30, 180)))
    elif kind == "leak":
        spec.update(start_mib=part(0.2, 0.3), mib_per_hour=maximum * rng.uniform(0.5, 1.0) * 3600 / duration_s)
    elif kind == "boot_storm":
        spec.update(peak_mib=part(0.6, 0.9), steady_mib=part(0.2, 0.4), decay_s=float(rng.uniform(60, 300)))
    elif kind == "batch":
        every = max(60, int(duration_s * rng.uniform(0.25, 0.5)))
        spec.update(idle_mib=part(0.1, 0.2), job_mib=part(0.6, 0.9), every_s=every, job_s=max(1, every // 3),
                    first_at_s=int(rng.integers(0, every)))
    return WORKLOAD_ADAPTER.validate_python(spec)


def fleet(hosts: int = 1, vms: int = 8, mix: str = "steady:2,diurnal:2,bursty:2,idle:1,batch:1", seed: int = 0,
          host_mib: int = 65536, reserve_mib: int = 2048, duration_s: int = 900, policy: str = "hyperv",
          linux_percent: int = 30) -> Scenario:
    """A scenario of ``hosts`` hosts with ``vms`` VMs each (kinds from ``mix``), seeded.

    Per VM, drawn from the seed: Maximum RAM (2–16 GiB), Startup RAM (0.5–2 GiB, ≤ Maximum/2),
    Minimum (256 or 512 MiB), buffer (10–50 %), weight (2000/5000/8000), guest OS (``linux_percent``
    % Linux), a start in the first tenth of the run (≤ 2 min) and the workload's own parameters.
    Startup RAM is scaled down if a host could not start all its VMs.
    """
    if hosts < 1 or vms < 1:
        raise ValueError(f"a fleet needs at least 1 host and 1 VM per host, not {hosts}x{vms}")
    capacity = host_mib - reserve_mib
    if capacity <= 0:
        raise ValueError(f"host_mib={host_mib} leaves nothing beyond reserve_mib={reserve_mib}")
    rng = np.random.default_rng(seed)
    kinds, specs = _counts(parse_mix(mix), vms), []
    for h in range(1, hosts + 1):
        vm_specs: list[dict[str, Any]] = []
        for n, kind in enumerate(kinds, start=1):
            maximum = int(rng.choice(MAXIMA_MIB))
            startup = min(int(rng.choice((512, 1024, 2048))), maximum // 2)
            vm_specs.append(dict(
                name=f"{kind.replace('_', '-')}-{n:02d}", startup_mib=startup,
                minimum_mib=min(int(rng.choice((256, 512))), startup), maximum_mib=maximum,
                buffer_percent=int(rng.choice((10, 20, 20, 25, 50))), weight=int(rng.choice((2000, 5000, 5000, 8000))),
                guest=GuestSpec(os="linux" if rng.uniform(0, 100) < linux_percent else "windows"),
                workload=_workload(kind, maximum, duration_s, rng),
                start_at_s=int(rng.integers(0, min(120, duration_s // 10) + 1))))
        total_startup = sum(v["startup_mib"] for v in vm_specs)
        if total_startup > capacity:
            for v in vm_specs:
                v["startup_mib"] = max(v["minimum_mib"], v["startup_mib"] * capacity // total_startup // 2 * 2)
            if sum(v["startup_mib"] for v in vm_specs) > capacity:
                raise ValueError(f"host_mib={host_mib} is too small to start {vms} VMs at their Minimum RAM")
        specs.append(HostSpec(name=f"hv-{h:02d}", total_mib=host_mib, reserve_mib=reserve_mib, policy=policy,
                              vms=[VmSpec(**v) for v in vm_specs]))
    return Scenario(seed=seed, duration_s=duration_s, hosts=specs)


def parse_fleet(text: str, **overrides: Any) -> Scenario:
    """``"3x12 mix=steady:2,diurnal:3 seed=7 host_mib=65536 duration_s=600 policy=hyperv"`` → ``fleet``.

    Keys: mix, seed, host_mib, reserve_mib, duration_s, policy, linux_percent; ``overrides`` win.
    """
    match = _FLEET.match(text)
    if match is None:
        raise ValueError(f"fleet {text!r}: start with HOSTSxVMS, e.g. '3x12 mix=steady:2,bursty:1 seed=7'")
    args: dict[str, Any] = {"hosts": int(match["hosts"]), "vms": int(match["vms"])}
    for token in match["rest"].split():
        key, sep, value = token.partition("=")
        if not sep or key not in ("mix", "seed", "host_mib", "reserve_mib", "duration_s", "policy", "linux_percent"):
            raise ValueError(f"fleet {text!r}: unknown setting {token!r}")
        args[key] = value if key in ("mix", "policy") else int(value)
    args.update(overrides)
    return fleet(**args)


def reports(scenario: Scenario) -> Iterator[InputEvent]:
    """The scenario open loop: lifecycle and each guest's status every second, nothing balanced.

    Same seeds as ``simulate``, so the demand curves are the same; each guest sees its Startup RAM
    for the whole run (its reports carry the Linux balloon floor like the simulated guest's).
    """
    curves = {(h.name, vm.name): series(vm.workload, scenario.duration_s, seed=scenario.seed * 1_000_003 + k)
              for h in scenario.hosts for k, vm in enumerate(h.vms)}
    for host in scenario.hosts:
        yield HostJoined(at_ms=scenario.start_ms, host=host.name, total_mib=host.total_mib,
                         reserve_mib=host.reserve_mib, policy=host.policy)
    guests: dict[tuple[str, str], tuple[SimulatedGuest, int]] = {}
    for second in range(scenario.duration_s):
        now = scenario.start_ms + 1000 * second
        for host in scenario.hosts:
            for change in host.memory_changes:
                if change.at_s == second:
                    yield HostMemoryChanged(at_ms=now, host=host.name, total_mib=change.total_mib,
                                            reserve_mib=change.reserve_mib)
            for vm in host.vms:
                key = (host.name, vm.name)
                if vm.start_at_s == second:
                    guests[key] = (SimulatedGuest(host.name, vm.name, vm.guest.os, vm.startup_mib), second)
                    yield VmStarted(at_ms=now, host=host.name, vm=vm.name, settings=vm.settings(),
                                    capabilities=vm.capabilities())
                if key not in guests:
                    continue
                if second in vm.restart_at_s:
                    guests[key] = (guests[key][0], second)
                    yield VmRestarted(at_ms=now, host=host.name, vm=vm.name)
                for setting in vm.settings_changes:
                    if setting.at_s == second:
                        yield VmSettingsChanged(at_ms=now, host=host.name, vm=vm.name,
                                                **setting.model_dump(exclude={"at_s"}, exclude_none=True))
                if vm.stop_at_s == second:
                    del guests[key]
                    yield VmStopped(at_ms=now, host=host.name, vm=vm.name)
                    continue
                guest, boot_s = guests[key]
                curve = curves[key]
                yield guest.status(now, int(curve[min(second - boot_s, len(curve) - 1)]))
