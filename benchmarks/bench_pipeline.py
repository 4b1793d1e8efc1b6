"""Benchmark of the streaming twin (issue #3) on one real broker, with the same messages for both:

1. throughput in guest reports per second of the worker (a real `dmtwin worker` process) against a
   plain aiokafka consumer that only reads and decodes the messages, for per-guest messages and
   for host frames; and the ratio of the two;
2. the delay from a report entering Kafka to the command it causes leaving, p50 / p99, at a
   steady load (frames paced at one per host per second), measured on Kafka's record timestamps.

Run: .venv/bin/python benchmarks/bench_pipeline.py [--hosts 100] [--seconds 30]
Uses $DMTWIN_KAFKA_BOOTSTRAP if set, else starts a local broker (streams.kafka.broker) for the run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # noqa: E402

from streams.kafka.broker import LocalKafka  # noqa: E402
from streams.kafka.feed import ensure_topics  # noqa: E402
from streams.kafka.topics import Topics  # noqa: E402
from tests.integration.conftest import free_ports  # noqa: E402
from tests.integration.pipeline import (  # noqa: E402
    WorkerProcess,
    read_records,
    unique_topics,
    wait_until_quiet,
)
from twin.events import INPUT_MESSAGE_ADAPTER, FrameReport, StatusFrame  # noqa: E402
from twin.log import encode  # noqa: E402
from twin.scenario import Fleet, Scenario  # noqa: E402

VMS_PER_HOST = 12


def fleet(hosts: int, seconds: int) -> Fleet:
    workloads = [{"kind": "diurnal", "base_mib": 1500, "amplitude_mib": 1200, "period_s": 120},
                 {"kind": "bursty", "base_mib": 900, "burst_mib": 1800, "bursts_per_hour": 60},
                 {"kind": "steady", "mib": 2200}, {"kind": "idle"}]
    return Fleet(Scenario.model_validate({"seed": 1, "duration_s": seconds, "hosts": [
        {"name": f"hv-{h:04d}", "total_mib": 65536, "reserve_mib": 2048, "vms": [
            {"name": f"vm-{v:02d}", "startup_mib": 2048, "minimum_mib": 512, "maximum_mib": 8192,
             "workload": workloads[v % len(workloads)]} for v in range(VMS_PER_HOST)]}
        for h in range(hosts)]}))


def messages(fleet: Fleet, frames: bool) -> tuple[list[tuple[str, bytes]], list[tuple[str, bytes]]]:
    """(host-events, telemetry) messages of the whole run; each a (host, value) pair."""
    lifecycle = [(j.host, encode(j).encode()) for j in fleet.joins()]
    telemetry: list[tuple[str, bytes]] = []
    for second in range(fleet.scenario.duration_s):
        fleet.second = second
        for host in fleet.scenario.hosts:
            lifecycle += [(host.name, encode(e).encode()) for e in fleet.lifecycle(host)]
            reports = fleet.reports(host) if second > 0 else []  # first reports a second after start
            if frames and reports:
                frame = StatusFrame(at_ms=fleet.now_ms(), host=host.name, reports=[
                    FrameReport(vm=r.vm, committed_mib=r.committed_mib, available_mib=r.available_mib)
                    for r in reports])
                telemetry.append((host.name, frame.model_dump_json().encode()))
            else:
                telemetry += [(r.host, encode(r).encode()) for r in reports]
    return lifecycle, telemetry


async def produce(bootstrap: str, topic: str, batch: list[tuple[str, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=1 << 20)
    await producer.start()
    try:
        for host, value in batch:
            await producer.send(topic, key=host.encode(), value=value)
        await producer.flush()
    finally:
        await producer.stop()


async def plain_consumer(bootstrap: str, topic: str, expected_messages: int) -> tuple[float, int]:
    """Read and decode every message; return (seconds from first to last message, reports)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None, max_poll_records=5000)
    await consumer.start()
    try:
        seen = reports = 0
        started = 0.0
        while seen < expected_messages:
            batches = await consumer.getmany(timeout_ms=1000, max_records=5000)
            for records in batches.values():
                if not started:
                    started = time.perf_counter()
                for record in records:
                    message = INPUT_MESSAGE_ADAPTER.validate_json(record.value)
                    reports += len(message.reports) if isinstance(message, StatusFrame) else 1
                seen += len(records)
        return time.perf_counter() - started, reports
    finally:
        await consumer.stop()


def pipeline_rate(bootstrap: str, topics: Topics, app_id: str, workdir: Path,
                  lifecycle: list[tuple[str, bytes]], telemetry: list[tuple[str, bytes]], reports: int) -> float:
    """Reports per second of a worker folding the telemetry, sent as fast as Kafka takes it once the
    worker has folded the hosts' and VMs' start (timestamps of its first and last folded report,
    so neither start-up nor the lifecycle counts)."""
    workdir.mkdir(parents=True, exist_ok=True)
    worker = WorkerProcess(bootstrap, workdir / "worker", app_id, topics).start()
    try:
        asyncio.run(produce(bootstrap, topics.host_events, lifecycle))
        settled = wait_until_quiet(bootstrap, topics.event_log, quiet_s=3, timeout_s=300)
        asyncio.run(produce(bootstrap, topics.telemetry, telemetry))
        wait_until_quiet(bootstrap, topics.event_log, quiet_s=5, timeout_s=900, at_least=settled + 1)
    finally:
        worker.stop()
    log = read_topic_timestamps(bootstrap, topics.event_log)
    folded = [stamp for stamp, value in log if b'"guest.status"' in value]
    if len(folded) < reports:
        print(f"  (the worker folded {len(folded)} of {reports} reports; see the dead-letter topic)")
    return len(folded) / ((max(folded) - min(folded)) / 1000)


def read_topic_timestamps(bootstrap: str, topic: str) -> list[tuple[int, bytes]]:
    """(record timestamp in ms, value) of every record of a topic."""
    return [(r.timestamp, r.value) for r in read_records(bootstrap, topic, timeout_s=120)]


def throughput(bootstrap: str, hosts: int, seconds: int, frames: bool, workdir: Path) -> None:
    app_id, topics = unique_topics()
    asyncio.run(ensure_topics(bootstrap, topics, 4))
    lifecycle, telemetry = messages(fleet(hosts, seconds), frames)
    plain_topic = topics.prefix + "plain"
    asyncio.run(produce(bootstrap, plain_topic, telemetry))
    plain_s, reports = asyncio.run(plain_consumer(bootstrap, plain_topic, len(telemetry)))
    plain = reports / plain_s
    worker = pipeline_rate(bootstrap, topics, app_id, workdir / ("frames" if frames else "guests"),
                           lifecycle, telemetry, reports)
    kind = "host frames" if frames else "per-guest messages"
    print(f"  {kind:18}: {len(telemetry):7} messages, {reports} reports; plain consumer "
          f"{plain:10,.0f} reports/s, pipeline {worker:9,.0f} reports/s, ratio {worker / plain:.3f}")


def latency(bootstrap: str, hosts: int, seconds: int, workdir: Path) -> None:
    """Frames paced at one per host per second; delay = command timestamp − frame timestamp."""
    app_id, topics = unique_topics()
    asyncio.run(ensure_topics(bootstrap, topics, 4))
    lifecycle, telemetry = messages(fleet(hosts, seconds), frames=True)
    worker = WorkerProcess(bootstrap, workdir / "latency", app_id, topics).start()
    try:
        asyncio.run(produce(bootstrap, topics.host_events, lifecycle))

        async def paced() -> None:
            producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
            await producer.start()
            try:
                by_second: dict[int, list[tuple[str, bytes]]] = {}
                for host, value in telemetry:
                    by_second.setdefault(json.loads(value)["at_ms"], []).append((host, value))
                start = time.monotonic()
                for i, at_ms in enumerate(sorted(by_second)):
                    await asyncio.sleep(max(0.0, start + i - time.monotonic()))
                    for host, value in by_second[at_ms]:
                        await producer.send(topics.telemetry, key=host.encode(), value=value)
                    await producer.flush()
            finally:
                await producer.stop()

        asyncio.run(paced())
        time.sleep(3)
    finally:
        worker.stop()
    sent = {(json.loads(v)["host"], json.loads(v)["at_ms"]): stamp
            for stamp, v in read_topic_timestamps(bootstrap, topics.telemetry)}
    delays = []
    for topic in (topics.balloon_commands, topics.addition_commands):
        for stamp, value in read_topic_timestamps(bootstrap, topic):
            command = json.loads(value)
            cause = sent.get((command["host"], command["at_ms"]))
            if cause is not None:
                delays.append(stamp - cause)
    delays.sort()
    if not delays:
        print("  no commands were caused: raise --hosts or --seconds")
        return
    p50 = statistics.median(delays)
    p99 = delays[min(len(delays) - 1, int(0.99 * len(delays)))]
    print(f"  {len(delays)} commands from {hosts} hosts × {VMS_PER_HOST} VMs at 1 frame/host/s: "
          f"report → command p50 {p50:.0f} ms, p99 {p99:.0f} ms (one tick = 1000 ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hosts", type=int, default=100)
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--latency-hosts", type=int, default=50)
    args = parser.parse_args()
    import os

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        bootstrap = os.environ.get("DMTWIN_KAFKA_BOOTSTRAP")
        broker = None
        if not bootstrap:
            port, controller = free_ports(2)
            broker = LocalKafka(data_dir=workdir / "kafka", port=port, controller_port=controller)
            broker.up()
            bootstrap = broker.bootstrap
        try:
            print(f"throughput ({args.hosts} hosts × {VMS_PER_HOST} VMs × {args.seconds} s of reports):")
            throughput(bootstrap, args.hosts, args.seconds, frames=False, workdir=workdir)
            throughput(bootstrap, args.hosts, args.seconds, frames=True, workdir=workdir)
            print("delay at a steady load:")
            latency(bootstrap, args.latency_hosts, args.seconds, workdir)
        finally:
            if broker is not None:
                broker.down()


if __name__ == "__main__":
    main()
