"""Stream a simulated fleet into Kafka, with the simulated guests answering the twin's commands.

Each second of event time, per host: lifecycle events go to the host-events topic, the guests'
status reports to the telemetry topic (one frame per host, or one message per guest), then the
commands that arrived are answered on the host-events topic. ``speed`` 1 is real time, 60 a minute
a second, 0 as fast as possible.

A new VM's first report is held back a second after its start (and a stopped VM's last report is
a second before its stop): the two input topics are consumed as one stream, and Kafka orders
messages only within a partition of one topic.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from twin.events import EVENT_ADAPTER, FrameReport, StatusFrame, VmStarted
from twin.log import encode
from twin.scenario import Fleet, Scenario

from .topics import FOREVER, Topics

__all__ = ["FeedStats", "feed", "ensure_topics", "parse_kafka_url", "delivery", "DeliveryError",
           "DELIVERY_TIMEOUT_MS"]

DELIVERY_TIMEOUT_MS = 300_000
"""How long a producer keeps trying to deliver a message (through a broker restart) before the
command gives up with an error."""


class DeliveryError(RuntimeError):
    """The broker did not take a message: nothing more is sent, and the command exits non-zero."""


async def delivery(futures: list[asyncio.Future[object]]) -> None:
    """Wait for the broker's acknowledgement of every future of ``producer.send``."""
    results = await asyncio.gather(*futures, return_exceptions=True)
    failed = [r for r in results if isinstance(r, BaseException)]
    if failed:
        raise DeliveryError(f"{len(failed)} of {len(results)} messages were not delivered: {failed[0]!r}")


def parse_kafka_url(url: str) -> str:
    """``kafka://host:port`` → ``host:port``."""
    if not url.startswith("kafka://") or len(url) <= len("kafka://"):
        raise ValueError(f"--to={url!r}: expected kafka://HOST:PORT")
    return url[len("kafka://"):]


DEAD_LETTER_MAX_BYTES = 8 * 1024 * 1024
"""max.message.bytes of the dead-letter topic: room for any input the broker accepted (1 MiB by
default), kept raw, with its description in the headers."""


async def ensure_topics(bootstrap: str, topics: Topics, partitions: int, snapshots: str | None = None,
                        **client: object) -> None:
    """Create dmtwin's topics if they do not exist yet, and the worker's compacted snapshot topic
    ``snapshots`` if given; the input and snapshot topics must all have ``partitions``."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **client)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        ours = [name for name in (topics.telemetry, topics.host_events, snapshots) if name in existing]
        for meta in (await admin.describe_topics(ours)) if ours else []:
            if len(meta["partitions"]) != partitions:
                raise ValueError(f"topic {meta['topic']!r} has {len(meta['partitions'])} partitions, "
                                 f"the twin is set to {partitions} (DMTWIN_PARTITIONS): they must agree")
        forever = {"retention.ms": str(FOREVER)}
        dead = {**forever, "max.message.bytes": str(DEAD_LETTER_MAX_BYTES)}
        compact = {"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.1", "segment.ms": "600000"}
        wanted = [
            NewTopic(name, partitions, 1, topic_configs=config)
            for name, config in ((topics.telemetry, {}), (topics.host_events, {}),
                                 (topics.balloon_commands, {}), (topics.addition_commands, {}),
                                 (topics.event_log, forever), (topics.dead_letters, dead),
                                 (topics.checkpoints, forever),
                                 *(((snapshots, compact),) if snapshots else ()))
            if name not in existing
        ]
        if wanted:
            try:
                await admin.create_topics(wanted)
            except TopicAlreadyExistsError:
                pass
    finally:
        await admin.close()


@dataclass
class FeedStats:
    seconds: int = 0
    reports: int = 0
    messages: int = 0
    answers: int = 0


async def feed(scenario: Scenario, bootstrap: str, topics: Topics | None = None, speed: float = 1.0,
               per_guest: bool = False, partitions: int = 4, drain_s: float = 3.0,
               loop: bool = False, client: dict[str, object] | None = None) -> FeedStats:
    """Send the scenario to Kafka second by second; answer commands until ``drain_s`` after the end.
    With ``loop`` the run goes on until cancelled, the workloads starting over every ``duration_s``.
    ``client``: connection options of every client (``KafkaSecurity.client()``)."""
    topics = topics or Topics()
    client = client or {}
    await ensure_topics(bootstrap, topics, partitions, **client)
    fleet = Fleet(scenario, cyclic=loop)
    stats = FeedStats()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all", enable_idempotence=True,
                                request_timeout_ms=DELIVERY_TIMEOUT_MS, **client)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                auto_offset_reset="latest", group_id=None, isolation_level="read_committed",
                                **client)
    await producer.start()
    await consumer.start()
    try:
        consumer.subscribe([topics.balloon_commands, topics.addition_commands])
        await consumer.getmany(timeout_ms=500)  # join: only commands from now on matter
        answered: set[tuple[str, str, int]] = set()
        hosts = {h.name for h in scenario.hosts}
        quiet: dict[tuple[str, str], int] = {}  # VMs started this second: no report yet

        sent: list[asyncio.Future[object]] = []

        async def send(topic: str, host: str, value: bytes) -> None:
            sent.append(await producer.send(topic, key=host.encode(), value=value))
            stats.messages += 1

        async def delivered() -> None:
            """Wait until the broker has every message sent so far; raise if one was refused."""
            await producer.flush()
            futures = sent[:]
            sent.clear()
            await delivery(futures)

        async def answer(wait_s: float) -> None:
            batches = await consumer.getmany(timeout_ms=max(0, int(wait_s * 1000)))
            for records in batches.values():
                for record in records:
                    decision = EVENT_ADAPTER.validate_json(record.value)
                    mark = (decision.host, getattr(decision, "vm", ""), getattr(decision, "seq", 0))
                    if decision.host not in hosts or mark in answered:
                        continue
                    answered.add(mark)
                    at_ms = max(decision.at_ms + scenario.response_ms, fleet.now_ms())
                    reply = fleet.answer(decision, at_ms)
                    if reply is not None:
                        await send(topics.host_events, decision.host, encode(reply).encode())
                        stats.answers += 1

        for join in fleet.joins():
            await send(topics.host_events, join.host, encode(join).encode())
        await delivered()
        started = time.monotonic()
        for second in itertools.count() if loop else range(scenario.duration_s):
            fleet.second = second
            for host in scenario.hosts:
                for event in fleet.lifecycle(host):
                    if isinstance(event, VmStarted):
                        quiet[(event.host, event.vm)] = second
                    await send(topics.host_events, host.name, encode(event).encode())
                reports = [r for r in fleet.reports(host) if quiet.get((r.host, r.vm)) != second]
                if per_guest:
                    for report in reports:
                        await send(topics.telemetry, host.name, encode(report).encode())
                elif reports:
                    frame = StatusFrame(at_ms=fleet.now_ms(), host=host.name, reports=[
                        FrameReport(vm=r.vm, committed_mib=r.committed_mib, available_mib=r.available_mib)
                        for r in reports])
                    await send(topics.telemetry, host.name, frame.model_dump_json().encode())
                stats.reports += len(reports)
            await delivered()
            stats.seconds += 1
            due = started + (second + 1) / speed if speed > 0 else time.monotonic()
            await answer(due - time.monotonic())
            if speed > 0:
                await asyncio.sleep(max(0.0, due - time.monotonic()))
        deadline = time.monotonic() + drain_s
        while time.monotonic() < deadline:
            await answer(min(0.5, deadline - time.monotonic()))
        await delivered()
    finally:
        await consumer.stop()
        await producer.stop()
    return stats

