"""The bridge's records and wiring: its errors, drift events, VMs, join events and metrics."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from twin import virtio
from twin.events import HostJoined, MemorySettings, VmStarted

from ..kafka.topics import Topics
from .guest import VirtioMemory

__all__ = ["BridgeError", "DriftEvent", "BridgeVm", "BridgeMetrics", "drift_topic", "joins", "ensure_topic",
           "now_ms"]


def drift_topic(topics: Topics) -> str:
    """Out: ``lab.drift`` events, when the twin's belief and QEMU's part or meet again."""
    return topics.prefix + "lab.drift"


@dataclass(frozen=True)
class BridgeError:
    """Something the bridge refused or could not do; it goes on with the next command."""

    field: str
    value: Any
    reason: str
    at_ms: int
    vm: str | None = None
    seq: int | None = None

    def describe(self) -> str:
        where = f"{self.vm} #{self.seq}: " if self.vm and self.seq else (f"{self.vm}: " if self.vm else "")
        return f"{where}{self.field}={self.value!r}: {self.reason}"

    def as_dict(self) -> dict[str, Any]:
        value = self.value if isinstance(self.value, (int, float, str, bool, type(None))) else repr(self.value)
        return {"at_ms": self.at_ms, "vm": self.vm, "seq": self.seq, "field": self.field, "value": value,
                "reason": self.reason}


@dataclass(frozen=True)
class DriftEvent:
    type: str
    at_ms: int
    host: str
    vm: str
    state: str
    """``parted`` or ``met``."""
    twin_assigned_mib: int
    qemu_assigned_mib: int
    drift_mib: int

    def to_json(self) -> bytes:
        return json.dumps(self.__dict__, sort_keys=True).encode()


@dataclass
class BridgeVm:
    """One VM of the bridge's host: its QMP devices, and the settings it joins the twin with."""

    name: str
    memory: VirtioMemory
    settings: MemorySettings | None = None
    busy: bool = False
    settled_at: float = 0.0
    parted: bool = False
    apart: int = 0
    queue: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)


def joins(host: str, total_mib: int, reserve_mib: int, policy: str, vms: list[BridgeVm],
          at_ms: int) -> list[HostJoined | VmStarted]:
    """The host and its VMs joining the twin, Linux virtio guests all."""
    events: list[HostJoined | VmStarted] = [HostJoined(at_ms=at_ms, host=host, total_mib=total_mib,
                                                       reserve_mib=reserve_mib, policy=policy)]  # type: ignore[arg-type]
    for vm in vms:
        if vm.settings is None:
            continue
        events.append(VmStarted(at_ms=at_ms, host=host, vm=vm.name, settings=vm.settings,
                                capabilities=virtio.capabilities(hot_add=vm.memory.vmem_path is not None)))
    return events


async def ensure_topic(bootstrap: str, name: str, partitions: int, client: dict[str, Any]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **client)
    await admin.start()
    try:
        if name not in set(await admin.list_topics()):
            try:
                await admin.create_topics([NewTopic(name, partitions, 1)])
            except TopicAlreadyExistsError:
                pass
    finally:
        await admin.close()


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class BridgeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.drift = Gauge("dmtwin_lab_drift_mib", "The twin's assigned memory minus QEMU's (balloon actual "
                           "+ virtio-mem size), MiB", ["host", "vm"], registry=r)
        self.assigned = Gauge("dmtwin_lab_assigned_bytes", "Memory QEMU gives the VM (balloon actual + "
                              "virtio-mem size)", ["host", "vm"], registry=r)
        self.commands = Counter("dmtwin_lab_commands", "Commands by kind and outcome (applied, duplicate, "
                                "partial, failed)", ["kind", "outcome"], registry=r)
        self.errors = Counter("dmtwin_lab_errors", "Commands or device calls the bridge refused or that "
                              "failed, by field", ["field"], registry=r)
        self.apply_seconds = Histogram("dmtwin_lab_apply_seconds", "From a command's arrival to its answer",
                                       ["kind"], registry=r, buckets=(0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32))
