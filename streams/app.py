"""The Faust app: one agent folds each host's inputs into a changelog-backed table, runs the
balancer and sends commands, log entries and dead letters.

Commit order for one message (at-least-once, made idempotent):

1. the processor folds the message (``streams.processor``); its offset is recorded in the host's
   table value, so a message redelivered after a crash is recognised and skipped;
2. log entries, commands and dead letters are sent (commands carry host, VM and ``seq``, so an
   actuator applies each once even if a crash makes the worker send it twice); the output topics
   are created before the worker starts (``streams.feed.ensure_topics``);
3. the host's new state is written to the table (and so to its changelog topic);
4. Faust commits the input offset after the agent has processed the message.

Agents run at concurrency 1 (ECOSYSTEM.md §1.2: offsets can be committed past in-flight messages
with more), and the balancer's ticks come from event time (``Twin.ingest``), never from a timer.
"""

from __future__ import annotations

from typing import Any

import faust

from twin.log import Replay
from twin.report import summary
from twin.state import HostState

from .metrics import PipelineMetrics, twin_registry
from .processor import HostProcessor, HostRecord, Outputs, Source
from .settings import Settings

__all__ = ["Settings", "Worker", "create_app"]


class Worker:
    """The app and its agent, built from settings. ``published`` holds the latest state of each
    host this worker owns, for the metrics exposition and the /hosts/ page."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.processor = HostProcessor(settings.tick_ms)
        self.published: dict[str, tuple[int, bytes]] = {}
        """Each owned host's partition and latest table value: immutable bytes, decoded only when
        read, so the agent does no extra work per message and readers see a consistent state."""
        self.registry = twin_registry(self.hosts)
        self.metrics = PipelineMetrics(self.registry)
        self.app = self._build()

    def hosts(self) -> list[HostState]:
        """The hosts this worker owns (safe to call from the metrics thread)."""
        return [HostRecord.from_bytes(blob).state for _, blob in list(self.published.values())]

    async def _send(self, app: faust.App, key: bytes | None, out: Outputs) -> None:
        """Send one message's outputs straight to the producer: Faust's Topic.send costs a queue
        hop per record, and Faust flushes this producer before it commits input offsets."""
        topics = self.settings.topics
        send = app.producer.send
        for topic, lines in ((topics.event_log, out.log), (topics.balloon_commands, out.balloon_commands),
                             (topics.addition_commands, out.addition_commands),
                             (topics.dead_letters, out.dead_letters)):
            for line in lines:
                await send(topic, key, line, None, None, None)

    def _build(self) -> faust.App:
        s = self.settings
        topics = s.topics
        app = faust.App(
            s.app_id, broker=f"kafka://{s.broker}", store=s.store, datadir=str(s.data_dir),
            topic_partitions=s.partitions, topic_replication_factor=1, table_standby_replicas=0,
            consumer_auto_offset_reset="earliest", web_port=s.web_port, web_host="0.0.0.0",
            web_bind="0.0.0.0", broker_commit_every=100, broker_commit_interval=1.0,
        )
        raw: dict[str, Any] = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw",
                               "value_serializer": "raw"}
        inputs = app.topic(*topics.inputs, partitions=s.partitions, **raw)
        options = {"driver": "rocksdict"} if s.store.startswith("rocksdb") else None
        changelog = app.topic(f"{s.app_id}-hosts-changelog", partitions=s.partitions, compacting=True,
                              deleting=False, internal=True, **raw)
        table = app.Table("hosts", default=None, partitions=s.partitions, options=options,
                          schema=faust.Schema(**raw), changelog_topic=changelog)
        # Faust derives a table's store serializers from its types (bytes → json) and ignores
        # the schema's; the store is created lazily, so setting them here takes effect.
        table.key_serializer = table.value_serializer = "raw"

        @app.agent(inputs, concurrency=1)
        async def fold(stream: Any) -> None:
            # One message at a time, its table entry written right after its outputs are sent: a
            # batch that deferred the table writes (take_events, tried) ran twice faster but left a
            # window in which a rebalance re-delivers messages whose outputs were already sent.
            async for event in stream.events():
                message = event.message
                key = event.key if isinstance(event.key, bytes) else None
                stored = table.get(key) if key else None
                blob, out = self.processor.process(
                    key, event.value, Source(message.topic, message.partition, message.offset), stored)
                await self._send(app, key, out)
                if blob is not None and key is not None:
                    table[key] = blob
                    self.published[key.decode()] = (message.partition, blob)
                self.metrics.count(out.inputs, out.decisions, out.reasons,
                                   out.fold_seconds if out.rounds else None)

        @app.timer(interval=5.0)
        async def measure_lag() -> None:
            consumer = app.consumer
            for tp in consumer.assignment():
                if tp.topic in topics.inputs:
                    highwater = consumer.highwater(tp)
                    position = await consumer.position(tp)
                    if highwater is not None and position is not None:
                        self.metrics.set_consumer_lag(tp.topic, tp.partition, max(0, highwater - position))

        @app.on_partitions_revoked.connect
        async def forget(sender: Any, revoked: set[Any], **_: Any) -> None:
            lost = {tp.partition for tp in revoked if tp.topic in topics.inputs}
            for host, (partition, _) in list(self.published.items()):
                if partition in lost:
                    del self.published[host]
            self.processor.forget()

        @app.page("/hosts/")
        async def hosts(web: Any, request: Any) -> Any:
            replayed = Replay()
            for state in sorted(self.hosts(), key=lambda state: state.name):
                replayed.twin.hosts[state.name] = state
            return web.json(summary(replayed, decisions=False))

        return app


def create_app(settings: Settings | None = None) -> faust.App:
    """The Faust app for ``faust -A streams.app worker`` style use."""
    return Worker(settings or Settings()).app
