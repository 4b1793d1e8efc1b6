"""The Faust worker: exactly-once folding of each partition's inputs, one transaction per batch.

Faust consumes the two input topics and spreads their partitions over the workers of the consumer
group; its agent only decodes each message and queues it by partition (``streams.worker.ordering``). A
committer task takes what is ready every few milliseconds and, for each partition, in one Kafka
transaction (``streams.worker.transactions``):

1. folds the messages in event-time order into the hosts' records (``streams.worker.processor``),
   skipping any message the partition's mark says was processed before;
2. sends the log entries, commands and dead letters, the changed host records and the new mark to
   the compacted snapshot topic (``streams.worker.snapshots``), a signed checkpoint of each chain it
   extended when the worker has a key (``DMTWIN_KEY``, docs/audit.md), and the input offsets;
3. commits. Only then does the worker's memory take the new state.

So for each input, its log entries, commands, dead letters, state change and offset become visible
together or not at all, across ``kill -9``, broker restarts and rebalances (docs/exactly-once.md).
Faust's own offset commits are off (``acks=False`` on the input topics): the transactions are the
only committer. On assignment the worker starts the partition's producer (fencing the previous
owner) and reads the partition's snapshot back with ``read_committed``.

Balancer ticks come from event time (``Twin.ingest``), never from a timer.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from twin.log import Replay
from twin.report import summary
from twin.state import HostState

from ..ops.pipeline import PipelineMetrics
from ..ops.serving import twin_registry
from .ordering import EventTimeMerge, more_to_come
from .processor import Decoded, HostProcessor, HostRecord, Outputs, Source, dead_letter, decode
from ..kafka.settings import Settings
from .snapshots import MARK_KEY, PartitionSnapshot, load_partition
from .transactions import RECOVERY_STEP_S, Fenced, Out, PartitionProducer

__all__ = ["Settings", "Worker", "create_app", "EXIT_FENCED"]

log = logging.getLogger(__name__)

EXIT_FENCED = 70
"""Exit status when another worker took a partition this one still held (it was presumed dead):
nothing was committed, and a supervisor restarts it (compose's restart policy, systemd)."""


@dataclass
class OwnedPartition:
    """A partition this worker owns in the current generation of the group."""

    number: int
    producer: PartitionProducer
    merge: EventTimeMerge
    snapshot: PartitionSnapshot = field(default_factory=PartitionSnapshot)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    owned: bool = True


RAW_TOPIC: dict[str, Any] = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw",
                              "value_serializer": "raw"}
"""The input topics as Faust sees them: raw bytes (the worker decodes them itself)."""


def app_options(s: Settings) -> dict[str, Any]:
    """The worker's Faust app settings (also those of the benchmark's empty agent, so that it is
    the worker's floor)."""
    return dict(
        broker=f"kafka://{s.broker}", store="memory://", datadir=str(s.data_dir),
        topic_partitions=s.partitions, topic_replication_factor=1, table_standby_replicas=0,
        consumer_auto_offset_reset="earliest", web_port=s.web_port, web_host=s.web_host,
        web_bind=s.web_host, stream_wait_empty=False,
        broker_session_timeout=s.session_timeout_s, broker_heartbeat_interval=max(1.0, s.session_timeout_s / 4),
        broker_max_poll_records=2000, **s.security.faust(),
    )


GC_YOUNG_THRESHOLD = 20_000
"""Allocations between collections of the youngest generation (Python's default: 700)."""


def tune_gc() -> None:
    """Collect garbage the way a long-running server should: decoding a frame allocates a model per
    report, and with Python's default thresholds the cyclic collector kept walking everything the
    worker holds (Faust, the clients, the hosts' states), which cost half the time of a frame of
    50 reports. What start-up made is frozen out of the collector's sight, and the youngest
    generation is collected every 20,000 allocations rather than 700 (our objects rarely form
    cycles: reference counting frees them)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 20)


class Worker:
    """The app, its agent and its committer, built from settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.processor = HostProcessor(settings.tick_ms, settings.lateness_ms)
        self.partitions: dict[int, OwnedPartition] = {}
        self.registry = twin_registry(self.hosts)
        self.metrics = PipelineMetrics(self.registry)
        self.snapshot_topic = f"{settings.app_id}-snapshots"
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._round = asyncio.Lock()
        self._reading = asyncio.Lock()
        self._reader: AIOKafkaConsumer | None = None
        self.signer = None
        if settings.key_path:
            from twin.signing import Signer

            from ..audit.keys import load_private

            self.signer = Signer(load_private(settings.key_path))
        self._loading: asyncio.Task[None] | None = None
        self.app = self._build()

    def hosts(self) -> list[HostState]:
        """The hosts this worker owns, from the moment it owns them (safe from the metrics thread:
        committed records are replaced, never changed)."""
        for _ in range(3):
            try:
                return [record.state for part in list(self.partitions.values()) if part.ready.is_set()
                        for record in list(part.snapshot.hosts.values())]
            except RuntimeError:  # a dict changed size while copied: try again
                continue
        return []

    def queued(self) -> int:
        return sum(len(part.merge) for part in self.partitions.values())

    # --- the agent: decode and queue -------------------------------------------------------------

    async def intake(self, stream: Any) -> None:
        topics = self.settings.topics
        async for event in stream.events():
            message = event.message
            key = event.key if isinstance(event.key, bytes) else None
            source = Source(message.topic, message.partition, message.offset)
            try:
                item = decode(key, event.value, source)
            except Exception as error:  # no input, however crafted, stops the agent
                item = Decoded(source, key, event.value or b"", rejected=Outputs(
                    dead_letters=[dead_letter(event.value, source, f"cannot be decoded: {error!r}")],
                    reasons=["json"]))
            part = self.partitions.get(message.partition)
            if part is None or message.topic not in topics.inputs:
                continue  # revoked while in flight: the next owner reads it again
            part.merge.push(item)
            self._wake.set()
            while self.queued() >= self.settings.max_queued:
                self._room.clear()
                await self._room.wait()

    # --- the committer: one transaction per partition and batch -----------------------------------

    async def commit_forever(self) -> None:
        linger = self.settings.linger_ms / 1000
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=0.2)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            await asyncio.sleep(linger)
            async with self._round:
                ready = [p for p in self.partitions.values() if p.ready.is_set() and p.owned and len(p.merge)]
                if ready:
                    await asyncio.gather(*(self._commit(part) for part in ready))
            self._room.set()

    def _has_more(self, part: OwnedPartition) -> Any:
        consumer = self.app.consumer

        def has_more(topic: str, delivered: int) -> bool:
            try:
                highwater = consumer.highwater(faust.types.TP(topic, part.number))
            except Exception:  # not assigned (any more): nothing to wait for
                return False
            # Unknown until the partition's first fetch: it may hold the hosts' and VMs' starts
            # that a backlog of telemetry needs first, so wait for it (at most the merge's limit).
            return more_to_come(highwater, delivered, part.snapshot.mark.next.get(f"{topic}:{part.number}", 0))
        return has_more

    async def _commit(self, part: OwnedPartition) -> None:
        released = part.merge.release(self._has_more(part))
        if not released:
            return
        mark = part.snapshot.mark.copy()
        fresh: list[Decoded] = []
        for item in released:
            if mark.seen(item.source):
                continue  # processed before a crash or a rebalance
            mark.advance(item.source)
            fresh.append(item)
        if not fresh:
            return
        outs, working = self._fold_all(fresh, part)
        records = [record for item, out in zip(fresh, outs) for record in self._outputs(item, out)]
        snapshots = [Out(self.snapshot_topic, host.encode(), record.to_bytes(), part.number)
                     for host, record in working.items()]
        if self.signer is not None:  # a signed checkpoint of each chain this batch extended
            snapshots += [Out(self.settings.topics.checkpoints, host.encode(),
                              self.signer.checkpoint(host, record.entries, record.chain, record.state.last_at_ms))
                          for host, record in working.items()
                          if record.chain and record.entries and (host not in part.snapshot.hosts
                                                                  or part.snapshot.hosts[host].chain != record.chain)]
        snapshots.append(Out(self.snapshot_topic, MARK_KEY, mark.to_bytes(), part.number))
        offsets = {TopicPartition(slot.rsplit(":", 1)[0], part.number): offset for slot, offset in mark.next.items()}
        started = time.perf_counter()
        try:
            await part.producer.commit(records + snapshots, offsets, committed=lambda: self._committed(part, mark),
                                       still_owned=lambda: part.owned)
        except Fenced as error:
            self._fenced(part, error)
            return
        if not part.owned:
            return  # revoked while committing: the next owner reads the committed state back
        part.snapshot.mark = mark
        part.snapshot.hosts.update(working)
        self.metrics.transaction(time.perf_counter() - started, len(records) + len(snapshots))
        each = itertools.chain.from_iterable
        self.metrics.count(each(out.inputs for out in outs), each(out.decisions for out in outs),
                           each(out.reasons for out in outs), [out.fold_seconds for out in outs if out.rounds])

    async def _committed(self, part: OwnedPartition, mark: Any) -> bool:
        """Whether a transaction whose outcome is unknown committed: its mark is the partition's."""
        assert self._reader is not None
        async with self._reading:
            loaded = await load_partition(self._reader, self.snapshot_topic, part.number)
        return bool(loaded.mark.next == mark.next)

    def _fold_all(self, items: list[Decoded], part: OwnedPartition) -> tuple[list[Outputs], dict[str, HostRecord]]:
        """Fold a batch, its due rounds computed together; if that fails, message by message, so
        that the one message that made it fail becomes a dead letter and the others are folded."""
        def record_of(host: str) -> HostRecord | None:
            stored = part.snapshot.hosts.get(host)
            return stored.copy() if stored is not None else None
        try:
            return self.processor.fold_batch(items, record_of)
        except Exception:  # no input, however crafted, stops the agent
            log.exception("dmtwin worker: folding a batch of %d failed; folding its messages one by one", len(items))
        working: dict[str, HostRecord] = {}
        return [self._fold(item, part, working) for item in items], working

    def _fold(self, item: Decoded, part: OwnedPartition, working: dict[str, HostRecord]) -> Outputs:
        host = item.host
        record = None
        if host is not None:
            record = working.get(host)
            if record is None and host in part.snapshot.hosts:
                record = part.snapshot.hosts[host].copy()
        try:
            new, out = self.processor.fold(item, record.copy() if record is not None else None)
        except Exception as error:  # no input, however crafted, stops the agent
            log.exception("dmtwin worker: folding %s failed", item.source.line())
            new, out = None, Outputs(dead_letters=[dead_letter(item.value, item.source, f"internal error: {error!r}")],
                                     reasons=["state"])
        if host is not None and new is not None:
            working[host] = new
        return out

    def _outputs(self, item: Decoded, out: Outputs) -> list[Out]:
        topics = self.settings.topics
        key = item.key
        records = [Out(topics.event_log, key, line) for line in out.log]
        records += [Out(topics.balloon_commands, key, line) for line in out.balloon_commands]
        records += [Out(topics.addition_commands, key, line) for line in out.addition_commands]
        records += [Out(topics.dead_letters, key, d.value, headers=d.headers) for d in out.dead_letters]
        return records

    def _fenced(self, part: OwnedPartition, error: Fenced) -> None:
        if not part.owned or self.partitions.get(part.number) is not part:
            return  # a rebalance replaced this producer: expected
        log.error("dmtwin worker: %s; another worker took partition %d while this one held it. "
                  "Nothing of this batch was committed; exiting so that a supervisor restarts the worker.",
                  error, part.number)
        os._exit(EXIT_FENCED)

    # --- rebalances --------------------------------------------------------------------------------

    async def on_revoked(self, revoked: set[Any]) -> None:
        lost = {tp.partition for tp in revoked if tp.topic in self.settings.topics.inputs}
        parts = [self.partitions.pop(n) for n in lost if n in self.partitions]
        for part in parts:
            part.owned = False
            part.merge.clear()
        try:  # let a round in flight finish, so its outcome is known before the next owner starts
            await asyncio.wait_for(self._round.acquire(), timeout=5.0)
            self._round.release()
        except asyncio.TimeoutError:
            pass
        await asyncio.gather(*(part.producer.stop() for part in parts))

    async def on_assigned(self, assigned: set[Any]) -> None:
        s = self.settings
        numbers = sorted({tp.partition for tp in assigned if tp.topic in s.topics.inputs} - set(self.partitions))
        for n in numbers:
            self.partitions[n] = OwnedPartition(n, PartitionProducer(s.broker, s.app_id, n, **s.kafka_client()),
                                                EventTimeMerge((s.topics.host_events, s.topics.telemetry)))
        self._loading = asyncio.ensure_future(self._load([self.partitions[n] for n in numbers]))

    async def _load(self, parts: list[OwnedPartition]) -> None:
        """Fence the previous owner of each partition, then read its committed state back."""
        if self._reader is None:
            self._reader = AIOKafkaConsumer(bootstrap_servers=self.settings.broker, group_id=None,
                                            enable_auto_commit=False, isolation_level="read_committed",
                                            **self.settings.kafka_client())
            await self._reader.start()
        for part in parts:
            started = time.perf_counter()
            for attempt in itertools.count(1):  # the broker may be away right after a rebalance
                if not part.owned:
                    break
                try:
                    await asyncio.wait_for(part.producer.start(), RECOVERY_STEP_S)
                    async with self._reading:
                        part.snapshot = await asyncio.wait_for(
                            load_partition(self._reader, self.snapshot_topic, part.number), RECOVERY_STEP_S)
                    break
                except (KafkaError, asyncio.TimeoutError) as error:
                    log.warning("dmtwin worker: partition %d not loaded (%r); retrying", part.number, error)
                    await part.producer.stop()
                    part.producer = PartitionProducer(self.settings.broker, self.settings.app_id, part.number,
                                                      **self.settings.kafka_client())
                    await asyncio.sleep(min(attempt, 10))
            if part.owned:
                part.ready.set()
                log.info("dmtwin worker: partition %d: %d hosts loaded in %.2f s", part.number,
                         len(part.snapshot.hosts), time.perf_counter() - started)
        self._wake.set()

    # --- the app -----------------------------------------------------------------------------------

    def _build(self) -> faust.App:
        s = self.settings
        topics = s.topics
        app = faust.App(s.app_id, **app_options(s))
        inputs = app.topic(*topics.inputs, partitions=s.partitions, acks=False, **RAW_TOPIC)

        @app.agent(inputs, concurrency=1)
        async def fold(stream: Any) -> None:
            await self.intake(stream)

        @app.task
        async def committer() -> None:
            tune_gc()
            await self.commit_forever()

        @app.timer(interval=5.0)
        async def measure_lag() -> None:
            consumer = app.consumer
            for tp in consumer.assignment():
                part = self.partitions.get(tp.partition)
                if tp.topic in topics.inputs and part is not None and part.ready.is_set():
                    highwater = consumer.highwater(tp)
                    committed = part.snapshot.mark.next.get(f"{tp.topic}:{tp.partition}", 0)
                    if highwater is not None:
                        self.metrics.set_consumer_lag(tp.topic, tp.partition, max(0, highwater - committed))

        @app.on_partitions_revoked.connect
        async def revoked(sender: Any, revoked: set[Any], **_: Any) -> None:
            await self.on_revoked(revoked)

        @app.on_partitions_assigned.connect
        async def assigned(sender: Any, assigned: set[Any], **_: Any) -> None:
            await self.on_assigned(assigned)

        @app.page("/hosts/")
        async def hosts(web: Any, request: Any) -> Any:
            replayed = Replay()
            for state in sorted(self.hosts(), key=lambda state: state.name):
                replayed.twin.hosts[state.name] = state
            return web.json(summary(replayed, decisions=False))

        return app


def create_app(settings: Settings | None = None) -> faust.App:
    """The Faust app for ``faust -A streams.worker.app worker`` style use."""
    return Worker(settings or Settings()).app
