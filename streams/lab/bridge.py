"""The QMP bridge: the twin's commands applied to real VMs, and their real memory reported back.

It consumes the balloon-target and memory-addition command topics (``read_committed``, in a
consumer group of its own per host, offsets committed once a command is answered) and, for each
command of its host:

- skips it if its ``(host, vm, seq)`` was already applied (the last applied ``seq`` of each VM is
  kept in a state file, written once the answer is delivered: a redelivered command is not applied
  twice, even across a restart of the bridge);
- applies it over QMP (``streams.lab.guest.VirtioMemory``): ``balloon`` to inflate or deflate the
  balloon, ``qom-set requested-size`` to plug virtio-mem memory;
- watches what the guest really does (balloon ``actual``, virtio-mem ``size``) until it reaches the
  target or stops moving, pins the device at what was reached, and sends the guest's real answer
  (``twin.virtio``): a partial balloon answer, a short or failed memory addition.

Each second it sends every VM's status report (the guest's own ``guest-stats``) as one frame of
the host on the telemetry topic. With ``twin_url`` (a worker's web address) it compares what the
twin believes each VM is assigned with what QEMU gives it: the ``dmtwin_lab_drift_mib`` gauge, and a
``lab.drift`` event on ``<prefix>lab.drift`` when they part (and when they meet again).

Bad input never stops the bridge: a command naming an unknown VM, a malformed one, or a QMP error
is an :class:`BridgeError` naming the field and the value, logged, kept in ``errors`` (and in
``errors.jsonl`` beside the state file), and counted in ``dmtwin_lab_errors_total``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from twin import virtio
from twin.errors import Rejected
from twin.events import (
    BalloonTargetSet,
    FrameReport,
    HostJoined,
    MemoryAdditionRequested,
    MemorySettings,
    StatusFrame,
    UnballoonRequested,
    UnballoonResponded,
    VmRestarted,
    VmStarted,
)
from twin.log import decode, encode

from ..kafka.feed import DELIVERY_TIMEOUT_MS, delivery, ensure_topics
from ..kafka.topics import Topics
from .guest import MIB, VirtioMemory
from .qmp import QmpError

__all__ = ["Bridge", "BridgeError", "BridgeVm", "DriftEvent", "drift_topic", "joins"]

log = logging.getLogger("dmtwin.bridge")


PARTIAL_BACKOFF_MIB = 8
"""A balloon that stopped short gives this much back before the answer: room for the guest."""


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


async def _ensure_topic(bootstrap: str, name: str, partitions: int, client: dict[str, Any]) -> None:
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


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class _Metrics:
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


class Bridge:
    """Applies one host's commands to its VMs and reports their real memory, until ``stop`` is set."""

    def __init__(self, bootstrap: str, topics: Topics, host: str, vms: list[BridgeVm], state_dir: Path,
                 *, total_mib: int | None = None, reserve_mib: int = 0, policy: str = "hyperv",
                 join: bool = True, twin_url: str | None = None, report_interval_s: float = 1.0,
                 drift_tolerance_mib: int = 8, drift_after: int = 3, partitions: int = 4,
                 metrics_port: int | None = None, metrics_host: str = "127.0.0.1",
                 settle_s: float = 1.5, apply_timeout_s: float = 20.0,
                 on_answer: Callable[[Any], None] | None = None, client: dict[str, Any] | None = None) -> None:
        self.bootstrap = bootstrap
        self.client = client or {}
        """Connection options of every Kafka client (``KafkaSecurity.client()``: TLS, SASL)."""
        self.topics = topics
        self.host = host
        self.vms = {vm.name: vm for vm in vms}
        self.state_dir = Path(state_dir)
        self.total_mib = total_mib
        self.reserve_mib = reserve_mib
        self.policy = policy
        self.join = join
        self.twin_url = twin_url.rstrip("/") if twin_url else None
        self.report_interval_s = report_interval_s
        self.drift_tolerance_mib = drift_tolerance_mib
        self.drift_after = drift_after
        self.partitions = partitions
        self.settle_s = settle_s
        self.apply_timeout_s = apply_timeout_s
        self.on_answer = on_answer
        self.metrics = _Metrics()
        self.metrics_port = metrics_port
        self.metrics_host = metrics_host
        self.errors: list[BridgeError] = []
        self.drifts: list[DriftEvent] = []
        self.answers: list[Any] = []
        self.reports = 0
        self.duplicates = 0
        self.applied: dict[str, int] = self._load_applied()
        self.producer: AIOKafkaProducer | None = None
        self.ready = asyncio.Event()
        self._pending_commits: dict[TopicPartition, int] = {}

    # --- state -----------------------------------------------------------------------------------

    @property
    def state_path(self) -> Path:
        return self.state_dir / "applied.json"

    def _load_applied(self) -> dict[str, int]:
        try:
            data = json.loads(self.state_path.read_text())
        except FileNotFoundError:
            return {}
        return {str(vm): int(seq) for vm, seq in data.get(self.host, {}).items()}

    def _save_applied(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        try:
            data = json.loads(self.state_path.read_text())
        except (FileNotFoundError, ValueError):
            data = {}
        data[self.host] = self.applied
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, sort_keys=True))
        os.replace(tmp, self.state_path)

    def error(self, field_name: str, value: Any, reason: str, vm: str | None = None,
              seq: int | None = None) -> BridgeError:
        problem = BridgeError(field_name, value, reason, _now_ms(), vm, seq)
        self.errors.append(problem)
        self.metrics.errors.labels(field_name).inc()
        log.error("dmtwin bridge %s: %s", self.host, problem.describe())
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            with open(self.state_dir / "errors.jsonl", "a") as out:
                out.write(json.dumps(problem.as_dict(), sort_keys=True) + "\n")
        except OSError:
            pass
        return problem

    # --- running ---------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        await ensure_topics(self.bootstrap, self.topics, self.partitions, **self.client)
        await _ensure_topic(self.bootstrap, drift_topic(self.topics), self.partitions, self.client)
        if self.metrics_port is not None:
            start_http_server(self.metrics_port, addr=self.metrics_host, registry=self.metrics.registry)
        self.producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=5, acks="all",
                                         enable_idempotence=True, request_timeout_ms=DELIVERY_TIMEOUT_MS,
                                         **self.client)
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=f"dmtwin-bridge-{self.host}",
                                    enable_auto_commit=False, auto_offset_reset="latest",
                                    isolation_level="read_committed", **self.client)
        await self.producer.start()
        await consumer.start()
        tasks: list[asyncio.Task[None]] = []
        try:
            consumer.subscribe([self.topics.balloon_commands, self.topics.addition_commands])
            while not consumer.assignment():  # join the group: commands from here on are ours
                await consumer.getmany(timeout_ms=200)
            if self.join:
                await self._join()
                await asyncio.sleep(1.0)  # a VM's first report comes after its start (docs/topics.md)
            tasks = [asyncio.create_task(self._applier(vm)) for vm in self.vms.values()]
            tasks.append(asyncio.create_task(self._reporter(stop)))
            if self.twin_url:
                tasks.append(asyncio.create_task(self._drift_watch(stop)))
            self.ready.set()
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=200)
                for tp, records in batches.items():
                    for record in records:
                        self._take(record.key, record.value)
                    if records:
                        self._pending_commits[tp] = records[-1].offset + 1
                await self._commit(consumer)
                for task in tasks:
                    if task.done() and task.exception() is not None:
                        raise task.exception()  # type: ignore[misc]
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await consumer.stop()
            await self.producer.stop()

    async def _join(self) -> None:
        """Join the host and its VMs to the twin. If the twin (``twin_url``) already has the host,
        its VMs are restarted instead (their guests booted afresh: Startup RAM, no balloon); else
        the host is new to the twin, and so are its sequence numbers: the applied ones are reset."""
        if self.total_mib is None:
            raise ValueError("total_mib: needed to join the host to the twin")
        known: dict[str, Any] | None = None
        if self.twin_url:
            try:
                hosts = await asyncio.to_thread(self._twin_hosts)
                known = next((h for h in hosts if h["host"] == self.host), None)
            except (OSError, ValueError, KeyError):
                known = None
        at_ms = _now_ms()
        if known is None:
            events: list[Any] = joins(self.host, self.total_mib, self.reserve_mib, self.policy,
                                      list(self.vms.values()), at_ms)
            self.applied = {}
            self._save_applied()
        else:
            running = {vm["name"] for vm in known["vms"]}
            events = []
            for vm in self.vms.values():
                if vm.name in running:
                    events.append(VmRestarted(at_ms=at_ms, host=self.host, vm=vm.name))
                else:  # new to the twin: started, as in joins()
                    events += joins(self.host, self.total_mib, self.reserve_mib, self.policy, [vm], at_ms)[1:]
            log.info("dmtwin bridge %s: the twin knows this host: %s restarted", self.host,
                     ", ".join(sorted(running & set(self.vms))) or "no VM")
        await self._send([(self.topics.host_events, encode(e).encode()) for e in events])

    async def _commit(self, consumer: AIOKafkaConsumer) -> None:
        """Commit what has been taken once no VM is still applying a command."""
        if self._pending_commits and not any(vm.busy or not vm.queue.empty() for vm in self.vms.values()):
            offsets, self._pending_commits = dict(self._pending_commits), {}
            await consumer.commit(offsets)

    def _take(self, key: bytes | None, value: bytes) -> None:
        """Check one command record and queue it for its VM."""
        try:
            command = decode(value)
        except Rejected as rejected:
            self.error(rejected.field, rejected.value, f"command refused: {rejected.reason}")
            return
        if command.host != self.host:
            return  # another host's: another bridge applies it
        vm_name = getattr(command, "vm", None)
        seq = getattr(command, "seq", None)
        if not isinstance(command, (BalloonTargetSet, UnballoonRequested, MemoryAdditionRequested)):
            self.error("type", command.type, "not a command this bridge applies", vm_name, seq)
            return
        vm = self.vms.get(command.vm)
        if vm is None:
            self.error("vm", command.vm, f"no such VM on host {self.host!r} here (known: "
                       f"{', '.join(sorted(self.vms))})", command.vm, command.seq)
            return
        if command.seq <= self.applied.get(vm.name, 0):
            self.duplicates += 1
            self.metrics.commands.labels(command.type, "duplicate").inc()
            log.info("dmtwin bridge %s: %s #%d already applied, skipped", self.host, vm.name, command.seq)
            return
        vm.busy = True
        vm.queue.put_nowait((command, time.monotonic()))

    async def _send(self, messages: list[tuple[str, bytes]]) -> None:
        assert self.producer is not None
        futures = [await self.producer.send(topic, key=self.host.encode(), value=value)
                   for topic, value in messages]
        await delivery(futures)

    async def _applier(self, vm: BridgeVm) -> None:
        while True:
            command, arrived = await vm.queue.get()
            vm.busy = True
            try:
                if command.seq <= self.applied.get(vm.name, 0):  # queued twice before it was applied
                    self.duplicates += 1
                    continue
                answer = await self._apply(vm, command)
                await self._send([(self.topics.host_events, encode(answer).encode())])
                self.applied[vm.name] = command.seq
                self._save_applied()
                self.answers.append(answer)
                self.metrics.apply_seconds.labels(command.type).observe(time.monotonic() - arrived)
                if self.on_answer is not None:
                    self.on_answer(answer)
            finally:
                vm.settled_at = time.time()
                vm.busy = not vm.queue.empty()

    async def _settle(self, probe: Callable[[], Any], reached: Callable[[int], bool]) -> int:
        """Poll ``probe`` until ``reached`` or it stopped moving for ``settle_s``; return its value."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        value = await probe()
        moved = start
        while not reached(value) and loop.time() - moved < self.settle_s and loop.time() - start < self.apply_timeout_s:
            await asyncio.sleep(0.1)
            now_value = await probe()
            if now_value != value:
                value, moved = now_value, loop.time()
        return int(value)

    async def _apply(self, vm: BridgeVm, command: Any) -> Any:
        memory = vm.memory
        if isinstance(command, BalloonTargetSet):
            try:
                before = await memory.actual()
                goal = max(0, before - command.remove_mib * MIB)
                await memory.set_balloon(goal)
                after = await self._settle(memory.actual, lambda value: value <= goal)
                answer = virtio.balloon_answer(_now_ms(), self.host, vm.name, command.seq, command.remove_mib,
                                               before, after)
                if answer.released_mib < command.remove_mib:
                    # Stopped short: the guest is at its edge. Give it back a little room, or its next
                    # allocation deflates the balloon behind the twin's back (deflate-on-oom).
                    answer = answer.model_copy(update={"released_mib": max(0, answer.released_mib
                                                                           - PARTIAL_BACKOFF_MIB)})
                held = before - answer.released_mib * MIB
                if after != held:  # hold what was answered: no more, no less
                    await memory.set_balloon(held)
                    await self._settle(memory.actual, lambda value: value == held)
            except QmpError as error:
                self.error("qmp", error.command, f"{error.message} (balloon answered as 0 MiB released)",
                           vm.name, command.seq)
                answer = virtio.balloon_answer(_now_ms(), self.host, vm.name, command.seq, command.remove_mib, 0, 0)
            outcome = "applied" if answer.released_mib == command.remove_mib else "partial"
        elif isinstance(command, UnballoonRequested):
            try:
                before = await memory.actual()
                goal = min(memory.base, before + command.return_mib * MIB)
                await memory.set_balloon(goal)
                after = await self._settle(memory.actual, lambda value: value >= goal)
                outcome = "applied" if after >= goal else "partial"
            except QmpError as error:
                self.error("qmp", error.command, f"{error.message} (unballoon answered)", vm.name, command.seq)
                outcome = "failed"
            answer = UnballoonResponded(at_ms=_now_ms(), host=self.host, vm=vm.name, seq=command.seq)
        else:
            if memory.vmem_path is None:
                self.error("vm", vm.name, "has no virtio-mem device: memory addition refused", vm.name, command.seq)
                answer = virtio.hot_add_answer(_now_ms(), self.host, vm.name, command.seq, command.add_mib, 0, 0)
                answer = answer.model_copy(update={"result": "permanent_failure"})
            else:
                try:
                    before = await memory.plugged()
                    goal = min(memory.region, before + command.add_mib * MIB)
                    await memory.set_requested(goal)
                    after = await self._settle(memory.plugged, lambda value: value >= goal)
                    answer = virtio.hot_add_answer(_now_ms(), self.host, vm.name, command.seq, command.add_mib,
                                                   before, after)
                    if after < goal:  # the guest could not online more: stop asking it
                        await memory.set_requested(before + answer.added_mib * MIB)
                except QmpError as error:
                    self.error("qmp", error.command, f"{error.message} (memory addition answered as 0 MiB)",
                               vm.name, command.seq)
                    answer = virtio.hot_add_answer(_now_ms(), self.host, vm.name, command.seq, command.add_mib, 0, 0)
            outcome = "applied" if answer.added_mib == command.add_mib else (
                "partial" if answer.added_mib else "failed")
        self.metrics.commands.labels(command.type, outcome).inc()
        log.info("dmtwin bridge %s: %s #%d %s -> %s", self.host, vm.name, command.seq, command.type,
                 answer.model_dump_json(exclude={"host", "vm", "v"}))
        return answer

    async def _reporter(self, stop: asyncio.Event) -> None:
        """Every VM's status each ``report_interval_s``, as one frame of the host."""
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while not stop.is_set():
            reports: list[FrameReport] = []
            at_ms = _now_ms()
            for vm in self.vms.values():
                if vm.busy:
                    continue  # mid-command: its figures are moving; the answer comes first
                try:
                    view = await vm.memory.view()
                except QmpError as error:
                    self.error("qmp", error.command, error.message, vm.name)
                    continue
                self.metrics.assigned.labels(self.host, vm.name).set(view.assigned)
                total = view.stats.get("stat-total-memory")
                available = view.stats.get("stat-available-memory")
                if total is None or available is None or view.stats_at < vm.settled_at - 1:
                    continue  # no fresh figures from the guest yet
                total = min(total, view.base + view.plugged)
                report = virtio.status(at_ms, self.host, vm.name, total, available)
                reports.append(FrameReport(vm=vm.name, committed_mib=report.committed_mib,
                                           available_mib=report.available_mib))
            if reports:
                frame = StatusFrame(at_ms=at_ms, host=self.host, reports=reports)
                await self._send([(self.topics.telemetry, frame.model_dump_json().encode())])
                self.reports += len(reports)
            next_at += self.report_interval_s
            await asyncio.sleep(max(0.0, next_at - loop.time()))

    def _twin_hosts(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"{self.twin_url}/hosts/", timeout=5) as page:
            return json.load(page)["hosts"]  # type: ignore[no-any-return]

    def twin_view(self) -> dict[str, dict[str, Any]]:
        """The twin's VMs of this host, from the worker's /hosts/ page."""
        for host in self._twin_hosts():
            if host["host"] == self.host:
                return {vm["name"]: vm for vm in host["vms"]}
        return {}

    async def _drift_watch(self, stop: asyncio.Event) -> None:
        assert self.producer is not None
        while not stop.is_set():
            await asyncio.sleep(1.0)
            try:
                believed = await asyncio.to_thread(self.twin_view)
            except (OSError, ValueError, KeyError):
                continue  # the worker is away: nothing to compare with
            for vm in self.vms.values():
                twin = believed.get(vm.name)
                if twin is None or vm.busy or twin.get("pending") not in ("none", None):
                    continue
                try:
                    actual, plugged = await vm.memory.actual(), await vm.memory.plugged()
                except QmpError:
                    continue
                drift = virtio.drift_mib(int(twin["assigned_mib"]), actual, plugged)
                self.metrics.drift.labels(self.host, vm.name).set(drift)
                apart = abs(drift) > self.drift_tolerance_mib
                vm.apart = vm.apart + 1 if apart else 0
                changed = (not vm.parted and vm.apart >= self.drift_after) or (vm.parted and not apart)
                if changed:
                    vm.parted = not vm.parted
                    event = DriftEvent("lab.drift", _now_ms(), self.host, vm.name, "parted" if vm.parted else "met",
                                       int(twin["assigned_mib"]), virtio.assigned_mib(actual, plugged), drift)
                    self.drifts.append(event)
                    log.warning("dmtwin bridge %s: %s drift %s: twin %d MiB, QEMU %d MiB", self.host, vm.name,
                                event.state, event.twin_assigned_mib, event.qemu_assigned_mib)
                    await self._send([(drift_topic(self.topics), event.to_json())])
