"""The QMP bridge: the twin's commands applied to real VMs, and their real memory reported back.

It consumes the balloon-target and memory-addition command topics (``read_committed``, in a
consumer group of its own per host, offsets committed once a command is answered) and, for each
command of its host:

- skips it if its ``(host, vm, seq)`` was already applied (the last applied ``seq`` of each VM is
  kept in a state file, written once the answer is delivered: a redelivered command is not applied
  twice, even across a restart of the bridge);
- applies it over QMP (``streams.lab.actuate`` on ``streams.lab.guest.VirtioMemory``): ``balloon`` to inflate or deflate the
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
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client import start_http_server

from twin import virtio
from twin.errors import Rejected
from twin.events import (
    BalloonTargetSet,
    FrameReport,
    MemoryAdditionRequested,
    StatusFrame,
    UnballoonRequested,
    VmRestarted,
)
from twin.log import decode, encode

from ..kafka.feed import DELIVERY_TIMEOUT_MS, delivery, ensure_topics
from ..kafka.topics import Topics
from .actuate import Actuator
from .qmp import QmpError
from .records import BridgeError, BridgeMetrics, BridgeVm, DriftEvent, drift_topic, ensure_topic, joins, now_ms

__all__ = ["Bridge", "BridgeError", "BridgeVm", "DriftEvent", "drift_topic", "joins"]

log = logging.getLogger("dmtwin.bridge")


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
        self.actuator = Actuator(host, self.error, settle_s, apply_timeout_s)
        self.on_answer = on_answer
        self.metrics = BridgeMetrics()
        self.metrics_port = metrics_port
        self.metrics_host = metrics_host
        self.errors: list[BridgeError] = []
        self.drifts: list[DriftEvent] = []
        self.answers: list[Any] = []
        self.reports = 0
        self.duplicates = 0
        self.applied: dict[str, int] = self._load_applied()
        self.started: dict[str, dict[str, int]] = self._read(self.started_path).get(host, {})
        self.producer: AIOKafkaProducer | None = None
        self.ready = asyncio.Event()
        self._pending_commits: dict[TopicPartition, int] = {}

    # --- state -----------------------------------------------------------------------------------

    @property
    def state_path(self) -> Path:
        return self.state_dir / "applied.json"

    def _load_applied(self) -> dict[str, int]:
        return {str(vm): int(seq) for vm, seq in self._read(self.state_path).get(self.host, {}).items()}

    @staticmethod
    def _read(path: Path) -> dict[str, Any]:
        try:
            return json.loads(path.read_text())  # type: ignore[no-any-return]
        except (FileNotFoundError, ValueError):
            return {}

    def _write(self, path: Path, mine: dict[str, Any]) -> None:
        """Replace this host's part of a state file shared with bridges of other hosts, atomically."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        data = self._read(path)
        data[self.host] = mine
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, sort_keys=True))
        os.replace(tmp, path)

    def _save_applied(self) -> None:
        self._write(self.state_path, self.applied)

    @property
    def started_path(self) -> Path:
        """The command each VM is in the middle of, with its device's value before it."""
        return self.state_dir / "started.json"

    def _save_started(self, vm: str, mark: dict[str, int] | None) -> None:
        if mark is None:
            self.started.pop(vm, None)
        else:
            self.started[vm] = mark
        self._write(self.started_path, self.started)

    def error(self, field_name: str, value: Any, reason: str, vm: str | None = None,
              seq: int | None = None) -> BridgeError:
        problem = BridgeError(field_name, value, reason, now_ms(), vm, seq)
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
        await ensure_topic(self.bootstrap, drift_topic(self.topics), self.partitions, self.client)
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
        at_ms = now_ms()
        if known is None:
            events: list[Any] = joins(self.host, self.total_mib, self.reserve_mib, self.policy,
                                      list(self.vms.values()), at_ms)
            self.applied, self.started = {}, {}
            self._save_applied()
            self._write(self.started_path, self.started)
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
                mark = self.started.get(vm.name, {})
                answer, outcome = await self.actuator.apply(
                    vm, command, started=mark.get("before") if mark.get("seq") == command.seq else None,
                    record=lambda before: self._save_started(vm.name, {"seq": command.seq, "before": before}))
                self.metrics.commands.labels(command.type, outcome).inc()
                log.info("dmtwin bridge %s: %s #%d %s -> %s", self.host, vm.name, command.seq, command.type,
                         answer.model_dump_json(exclude={"host", "vm", "v"}))
                await self._send([(self.topics.host_events, encode(answer).encode())])
                self.applied[vm.name] = command.seq
                self._save_applied()
                self._save_started(vm.name, None)
                self.answers.append(answer)
                self.metrics.apply_seconds.labels(command.type).observe(time.monotonic() - arrived)
                if self.on_answer is not None:
                    self.on_answer(answer)
            finally:
                vm.settled_at = time.time()
                vm.busy = not vm.queue.empty()

    async def _reporter(self, stop: asyncio.Event) -> None:
        """Every VM's status each ``report_interval_s``, as one frame of the host."""
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while not stop.is_set():
            reports: list[FrameReport] = []
            at_ms = now_ms()
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
                    event = DriftEvent("lab.drift", now_ms(), self.host, vm.name, "parted" if vm.parted else "met",
                                       int(twin["assigned_mib"]), virtio.assigned_mib(actual, plugged), drift)
                    self.drifts.append(event)
                    log.warning("dmtwin bridge %s: %s drift %s: twin %d MiB, QEMU %d MiB", self.host, vm.name,
                                event.state, event.twin_assigned_mib, event.qemu_assigned_mib)
                    await self._send([(drift_topic(self.topics), event.to_json())])
