"""The load of bench_pipeline.py: simulated fleets as Kafka messages, fast producers, the bare
aiokafka consumer, and readers of what the worker produced (all on Kafka record timestamps).

A *shape* is how a fleet's status reports travel: one ``guest.status`` message per guest per
second, or one ``guest.status_frame`` per host per second (of 12 or 50 VMs).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streams.kafka.topics import Topics
from tests.integration.pipeline import read_records
from twin.events import INPUT_MESSAGE_ADAPTER, FrameReport, StatusFrame
from twin.log import encode
from twin.scenario import Fleet, Scenario

Message = tuple[str, bytes]
"""(host, value): every message is keyed by its host."""


@dataclass(frozen=True)
class Shape:
    name: str
    vms: int
    frames: bool


SHAPES = (Shape("per-guest", 12, False), Shape("frames-12", 12, True), Shape("frames-50", 50, True))


@dataclass
class Load:
    """The messages of one run: lifecycle (host-events) and telemetry, and the reports in them."""

    shape: Shape
    hosts: int
    seconds: int
    lifecycle: list[Message]
    telemetry: list[Message]
    reports: int

    @property
    def messages(self) -> int:
        return len(self.lifecycle) + len(self.telemetry)


WORKLOADS = [{"kind": "diurnal", "base_mib": 1500, "amplitude_mib": 1200, "period_s": 120},
             {"kind": "bursty", "base_mib": 900, "burst_mib": 1800, "bursts_per_hour": 60},
             {"kind": "steady", "mib": 2200}, {"kind": "idle"}]


def fleet(hosts: int, seconds: int, vms: int = 12) -> Fleet:
    """Hosts of ``vms`` VMs with a mix of workloads; a host has room for all its VMs' Startup.
    (bench_core.py takes this fleet, through bench_pipeline, as ``fleet(hosts, seconds, vms)``.)"""
    total = max(65536, 2048 * vms + 8192)
    return Fleet(Scenario.model_validate({"seed": 1, "duration_s": seconds, "hosts": [
        {"name": f"hv-{h:04d}", "total_mib": total, "reserve_mib": 2048, "vms": [
            {"name": f"vm-{v:02d}", "startup_mib": 2048, "minimum_mib": 512, "maximum_mib": 8192,
             "workload": WORKLOADS[v % len(WORKLOADS)]} for v in range(vms)]}
        for h in range(hosts)]}))


def load(shape: Shape, hosts: int, messages: int) -> Load:
    """About ``messages`` telemetry messages of ``shape`` from ``hosts`` hosts (reports start a
    second after the VMs, as the feeder sends them)."""
    per_second = hosts * (1 if shape.frames else shape.vms)
    seconds = 1 + max(1, math.ceil(messages / per_second))
    sim = fleet(hosts, seconds, shape.vms)
    lifecycle = [(j.host, encode(j).encode()) for j in sim.joins()]
    telemetry: list[Message] = []
    reports = 0
    for second in range(seconds):
        sim.second = second
        for host in sim.scenario.hosts:
            lifecycle += [(host.name, encode(e).encode()) for e in sim.lifecycle(host)]
            batch = sim.reports(host) if second > 0 else []
            reports += len(batch)
            if shape.frames and batch:
                frame = StatusFrame(at_ms=sim.now_ms(), host=host.name, reports=[
                    FrameReport(vm=r.vm, committed_mib=r.committed_mib, available_mib=r.available_mib)
                    for r in batch])
                telemetry.append((host.name, frame.model_dump_json().encode()))
            else:
                telemetry += [(r.host, encode(r).encode()) for r in batch]
    return Load(shape, hosts, seconds, lifecycle, telemetry, reports)


async def _produce(bootstrap: str, topic: str, batch: list[Message]) -> float:
    """Send as fast as the broker takes it (acks=all, idempotent, like dmtwin's producers);
    return messages/s."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=10, max_batch_size=1 << 20,
                                acks="all", enable_idempotence=True)
    await producer.start()
    started = time.perf_counter()
    try:
        futures = [await producer.send(topic, key=host.encode(), value=value) for host, value in batch]
        await producer.flush()
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return len(batch) / max(1e-9, time.perf_counter() - started)


def produce(bootstrap: str, topic: str, batch: list[Message]) -> float:
    return asyncio.run(_produce(bootstrap, topic, batch))


async def _bare(bootstrap: str, topics: Topics, expected: int) -> tuple[float, int]:
    consumer = AIOKafkaConsumer(*topics.inputs, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None, max_poll_records=2000)
    await consumer.start()
    try:
        seen = reports = 0
        first = last = 0.0
        while seen < expected:
            batches = await consumer.getmany(timeout_ms=1000, max_records=2000)
            for tp, records in batches.items():
                for record in records:
                    message = INPUT_MESSAGE_ADAPTER.validate_json(record.value)
                    if tp.topic == topics.telemetry:
                        first = first or time.perf_counter()
                        reports += len(message.reports) if isinstance(message, StatusFrame) else 1
                        seen += 1
            if batches and first:
                last = time.perf_counter()
        return last - first, reports
    finally:
        await consumer.stop()


def bare_consumer(bootstrap: str, topics: Topics, run: Load, timeout_s: float = 600) -> float:
    """Seconds from the first telemetry message to the last, for a plain aiokafka consumer that
    reads both input topics and decodes every message with the twin's INPUT_MESSAGE_ADAPTER."""
    seconds, reports = asyncio.run(asyncio.wait_for(_bare(bootstrap, topics, len(run.telemetry)), timeout_s))
    assert reports == run.reports, (reports, run.reports)
    return seconds


TELEMETRY_TYPES = ("guest.status", "guest.status_frame")


def telemetry_window(log: list[Any], since_ms: int = 0) -> tuple[float, int]:
    """(seconds, entries) between the first and the last telemetry entry of the event log (of
    those stamped at ``since_ms`` or later), on the records' timestamps (the worker's transactions
    stamp them as they are sent)."""
    first, last, entries = telemetry_stamps(log, since_ms)
    return (last - first) / 1000 if entries >= 2 else float("nan"), entries


def telemetry_stamps(log: list[Any], since_ms: int = 0) -> tuple[int, int, int]:
    """(first, last, entries): the timestamps, in ms, of the first and the last telemetry entry of
    the event log stamped at ``since_ms`` or later, and how many there are."""
    stamps = [r.timestamp for r in log if r.timestamp >= since_ms and json.loads(r.value).get("type") in TELEMETRY_TYPES]
    return (min(stamps), max(stamps), len(stamps)) if stamps else (0, 0, 0)


@dataclass
class Outputs:
    """Every record the worker produced in a run, by topic (read back with read_committed)."""

    log: list[Any]
    commands: int
    dead_letters: int
    snapshots: int
    checkpoints: int
    reasons: Counter[str]
    """Dead letters by the start of their reason."""

    @property
    def total(self) -> int:
        return len(self.log) + self.commands + self.dead_letters + self.snapshots + self.checkpoints


def outputs(bootstrap: str, topics: Topics, app_id: str) -> Outputs:
    def count(topic: str) -> int:
        return len(read_records(bootstrap, topic, timeout_s=120))

    dead = read_records(bootstrap, topics.dead_letters, timeout_s=120)
    return Outputs(read_records(bootstrap, topics.event_log, timeout_s=300),
                   count(topics.balloon_commands) + count(topics.addition_commands),
                   len(dead), count(f"{app_id}-snapshots"), count(topics.checkpoints),
                   Counter(_reason(record) for record in dead))


def _reason(record: Any) -> str:
    try:
        reason = str(json.loads(record.value)["reason"])
    except (ValueError, KeyError, TypeError):
        reason = "raw original (reason in the header)"
    return reason[:70]
