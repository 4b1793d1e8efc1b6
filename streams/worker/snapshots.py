"""The worker's durable state: one compacted topic, written only inside Kafka transactions.

Partition *p* of ``<app id>-snapshots`` holds, for the hosts of input partition *p*:

- one record per host, keyed by its name: its ``HostRecord`` (state and chain head);
- one *mark*, keyed ``MARK_KEY``: for each input topic-partition, the next offset to process.

Both are written in the same transaction as the input offsets, the log entries, commands and dead
letters they come from, so a reader with ``read_committed`` sees a state that matches the committed
offsets exactly. The mark makes redelivery harmless: a message below ``next`` is
skipped, whatever offset the consumer group resumed from (Faust's own offset commits are off).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, TopicPartition

from .processor import HostRecord, Source

__all__ = ["MARK_KEY", "PartitionMark", "PartitionSnapshot", "load_partition"]

MARK_KEY = b"\x00mark"
"""Key of a partition's mark (no host name starts with a NUL)."""


@dataclass
class PartitionMark:
    """The next offset to process of every input topic-partition of one partition. Each
    topic-partition is processed in offset order (``streams.worker.ordering`` only releases the heads of
    its queues), so one offset says everything."""

    next: dict[str, int] = field(default_factory=dict)

    def seen(self, source: Source) -> bool:
        return source.offset < self.next.get(source.slot, 0)

    def advance(self, source: Source) -> None:
        self.next[source.slot] = max(self.next.get(source.slot, 0), source.offset + 1)

    def to_bytes(self) -> bytes:
        return json.dumps({"next": dict(sorted(self.next.items()))}, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, blob: bytes) -> PartitionMark:
        return cls({slot: int(offset) for slot, offset in json.loads(blob)["next"].items()})

    def copy(self) -> PartitionMark:
        return PartitionMark(dict(self.next))


@dataclass
class PartitionSnapshot:
    """What a partition's snapshot holds: its hosts' records and its mark."""

    hosts: dict[str, HostRecord] = field(default_factory=dict)
    mark: PartitionMark = field(default_factory=PartitionMark)


async def load_partition(consumer: AIOKafkaConsumer, topic: str, partition: int) -> PartitionSnapshot:
    """Read a partition of the snapshot topic to its end (the last stable offset, ``consumer``
    reads ``read_committed``); the newest record of each key wins."""
    tp = TopicPartition(topic, partition)
    consumer.assign([tp])
    await consumer.seek_to_beginning(tp)
    end = (await consumer.end_offsets([tp]))[tp]
    latest: dict[bytes, bytes | None] = {}
    while await consumer.position(tp) < end:
        batch = await consumer.getmany(tp, timeout_ms=1000)
        for record in batch.get(tp, []):
            if record.key is not None:
                latest[record.key] = record.value
    snapshot = PartitionSnapshot()
    for key, value in latest.items():
        if value is None:
            continue
        if key == MARK_KEY:
            snapshot.mark = PartitionMark.from_bytes(value)
        else:
            snapshot.hosts[key.decode()] = HostRecord.from_bytes(value)
    return snapshot
