"""The lab: N real Linux guests under QEMU as the VMs of one dmtwin host.

The host and its VMs come from a scenario file (``examples/lab.toml``, the format of
``examples/dozen.toml``): each VM boots with Startup RAM as boot memory, a balloon, and a
virtio-mem device of Maximum − Startup; its workload, followed second by second when asked, is the
memory held in the guest's tmpfs (``/load``), in MiB. Each guest has its own run directory with
its sockets (``qmp.sock`` for the bridge, ``monitor.sock`` for anyone else, ``control.sock``: the
guest's shell) and its console log; ``lab.json`` lists them for ``dmtwin lab load|status|down``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twin.scenario import HostSpec, Scenario
from twin.workload import series

from ..kafka.topics import Topics
from .assets import Assets, ensure_assets
from .bridge import Bridge, BridgeVm
from .guest import Control, GuestError, LabGuest, VirtioMemory

__all__ = ["Lab", "default_run_dir", "read_lab", "LabGuestInfo"]


def default_run_dir() -> Path:
    return Path(os.environ.get("DMTWIN_DATA_DIR") or ".dmtwin") / "lab"


@dataclass(frozen=True)
class LabGuestInfo:
    name: str
    pid: int
    run_dir: Path

    @property
    def monitor(self) -> Path:
        return self.run_dir / "monitor.sock"

    @property
    def control(self) -> Path:
        return self.run_dir / "control.sock"


def read_lab(run_dir: Path) -> tuple[str, list[LabGuestInfo]]:
    """The host and guests of a running lab, from its ``lab.json``."""
    path = Path(run_dir) / "lab.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"run_dir={str(run_dir)!r}: no lab running here (no lab.json)") from None
    return data["host"], [LabGuestInfo(g["name"], int(g["pid"]), Path(g["run_dir"])) for g in data["guests"]]


class Lab:
    def __init__(self, scenario: Scenario, run_dir: Path | None = None, host: str | None = None,
                 assets: Assets | None = None, accel: str | None = None) -> None:
        self.scenario = scenario
        chosen = [h for h in scenario.hosts if host is None or h.name == host]
        if not chosen:
            raise ValueError(f"host={host!r}: not in the scenario (hosts: "
                             f"{', '.join(h.name for h in scenario.hosts)})")
        self.host: HostSpec = chosen[0]
        self.run_dir = Path(run_dir or default_run_dir())
        self.assets = assets
        self.accel = accel
        self.guests: dict[str, LabGuest] = {}
        self.memory: dict[str, VirtioMemory] = {}
        self.monitors: dict[str, VirtioMemory] = {}
        self.loads: dict[str, int] = {}
        self.boot_s: float | None = None

    async def start(self, say=lambda text: None) -> Lab:  # type: ignore[no-untyped-def]
        """Boot every guest (in parallel) and open their QMP sockets."""
        self.assets = self.assets or await asyncio.to_thread(ensure_assets, None, say)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        began = time.monotonic()
        for vm in self.host.vms:
            guest = LabGuest(vm.name, self.run_dir / vm.name, self.assets, vm.startup_mib, vm.maximum_mib,
                             accel=self.accel)
            self.guests[vm.name] = guest.start()
        self._write_lab_json()
        try:
            await asyncio.gather(*(guest.booted() for guest in self.guests.values()))
            for name, guest in self.guests.items():
                self.memory[name] = await VirtioMemory.open(guest.qmp_socket)
                self.loads[name] = 0
        except BaseException:
            await self.stop()
            raise
        self.boot_s = time.monotonic() - began
        say(f"{len(self.guests)} guests booted in {self.boot_s:.1f} s "
            f"({next(iter(self.guests.values())).accel.upper()})")
        return self

    async def open_monitors(self) -> dict[str, VirtioMemory]:
        """Connect to each guest's second QMP monitor (then ``dmtwin lab status`` must wait: a QMP
        socket takes one client at a time)."""
        for name, guest in self.guests.items():
            if name not in self.monitors:
                self.monitors[name] = await VirtioMemory.open(guest.monitor_socket)
        return self.monitors

    def _write_lab_json(self) -> None:
        data = {"host": self.host.name, "guests": [
            {"name": name, "pid": guest.process.pid if guest.process else 0, "run_dir": str(guest.run_dir)}
            for name, guest in self.guests.items()]}
        (self.run_dir / "lab.json").write_text(json.dumps(data, indent=2))

    def bridge(self, bootstrap: str, topics: Topics, **options: Any) -> Bridge:
        vms = [BridgeVm(vm.name, self.memory[vm.name], vm.settings()) for vm in self.host.vms]
        return Bridge(bootstrap, topics, self.host.name, vms, self.run_dir / "bridge",
                      total_mib=self.host.total_mib, reserve_mib=self.host.reserve_mib,
                      policy=self.host.policy, **options)

    async def control(self, vm: str) -> Control:
        if vm not in self.guests:
            raise ValueError(f"vm={vm!r}: not a guest of this lab ({', '.join(self.guests)})")
        return await Control(self.guests[vm].control_socket).connect()

    async def set_load(self, vm: str, mib: int, control: Control | None = None) -> None:
        own = control is None
        channel = control or await self.control(vm)
        try:
            await channel.set_load(mib, previous=self.loads.get(vm))
            self.loads[vm] = mib
        finally:
            if own:
                await channel.close()

    async def meminfo(self, vm: str) -> dict[str, int]:
        channel = await self.control(vm)
        try:
            return await channel.meminfo()
        finally:
            await channel.close()

    async def follow_workloads(self, stop: asyncio.Event, speed: float = 1.0, step_mib: int = 16) -> None:
        """Hold each guest's tmpfs load at its workload's demand, second by second (changes of less
        than ``step_mib`` are left for later: filling tmpfs costs the guest CPU)."""
        demands = {vm.name: series(vm.workload, self.scenario.duration_s, seed=self.scenario.seed * 1_000_003 + k)
                   for k, vm in enumerate(self.host.vms)}
        channels = {name: await self.control(name) for name in demands}
        try:
            began = time.monotonic()
            second = 0
            while not stop.is_set():
                for name, curve in demands.items():
                    want = int(curve[second % len(curve)])
                    if abs(want - self.loads.get(name, 0)) >= step_mib:
                        try:
                            await self.set_load(name, want, channels[name])
                        except (GuestError, TimeoutError) as error:
                            print(f"dmtwin lab: {name}: load_mib={want}: {error}")
                second += 1
                await asyncio.sleep(max(0.0, began + second / speed - time.monotonic()))
        finally:
            for channel in channels.values():
                await channel.close()

    async def stop(self) -> None:
        for memory in (*self.memory.values(), *self.monitors.values()):
            await memory.close()
        for guest in self.guests.values():
            await asyncio.to_thread(guest.stop)
        (self.run_dir / "lab.json").unlink(missing_ok=True)


def stop_lab(run_dir: Path) -> list[str]:
    """SIGTERM the QEMU processes of the lab in ``run_dir`` (for ``dmtwin lab down``)."""
    _, guests = read_lab(run_dir)
    stopped = []
    for guest in guests:
        try:
            os.kill(guest.pid, signal.SIGTERM)
            stopped.append(guest.name)
        except ProcessLookupError:
            pass
    (Path(run_dir) / "lab.json").unlink(missing_ok=True)
    return stopped
