"""One Kafka transaction per batch and partition: outputs, state and input offsets, all or nothing.

Each input partition has its own transactional producer, ``transactional.id = <app id>-<p>`` (the
per-partition scheme of Kafka's exactly-once v1, which aiokafka implements). A worker that is given
partition *p* starts that producer before it reads *p*'s state: the broker then aborts whatever the
previous owner left open and fences it, so a worker presumed dead can never commit again.

A batch's records and its input offsets (``send_offsets_to_transaction``, to the worker's consumer
group) commit together. Broker errors are retried with the same records in a new transaction (an
aborted one is invisible to ``read_committed`` readers); a fenced producer means another worker owns
the partition now, and the batch is dropped without a trace.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.errors import (
    InvalidProducerEpoch,
    KafkaError,
    ProducerFenced,
    TransactionalIdAuthorizationFailed,
)

__all__ = ["Out", "Fenced", "PartitionProducer", "MAX_RECORD_BYTES"]

log = logging.getLogger(__name__)

MAX_RECORD_BYTES = 8 * 1024 * 1024 + 64 * 1024
"""The largest record the worker sends: a dead letter keeps an input of up to the broker's default
1 MiB raw, and the dead-letter topic allows 8 MiB (``streams.kafka.feed.ensure_topics``)."""


@dataclass(frozen=True)
class Out:
    """One record of a transaction."""

    topic: str
    key: bytes | None
    value: bytes
    partition: int | None = None
    headers: tuple[tuple[str, bytes], ...] = ()


ATTEMPT_S = 30.0
"""Longest wait for one attempt of a transaction before it is given up and tried again."""

RECOVERY_STEP_S = 30.0
"""Longest wait for one step of recovering from a failed transaction (new producer, mark read)."""


class Fenced(Exception):
    """Another worker owns the partition now: the transaction did not and will not commit."""


class PartitionProducer:
    """The transactional producer of one input partition."""

    def __init__(self, bootstrap: str, app_id: str, partition: int, **client: object) -> None:
        self.partition = partition
        self.group = app_id
        self._options = dict(
            bootstrap_servers=bootstrap, transactional_id=f"{app_id}-{partition}", enable_idempotence=True,
            acks="all", max_request_size=MAX_RECORD_BYTES, transaction_timeout_ms=300_000,
            retry_backoff_ms=20, linger_ms=2, **client)
        self.producer = AIOKafkaProducer(**self._options)
        self._partition_of: dict[tuple[str, bytes | None, int], int] = {}

    async def _by_partition(self, records: list[Out]) -> dict[tuple[str, int], list[Out]]:
        """Records by topic-partition: their own, else their key's under Kafka's default partitioner
        (murmur2, as ``send`` would choose; remembered per key)."""
        groups: dict[tuple[str, int], list[Out]] = {}
        known: dict[str, list[int]] = {}
        for r in records:
            partition = r.partition
            if partition is None:
                partitions = known.get(r.topic)
                if partitions is None:
                    partitions = known[r.topic] = sorted(await self.producer.partitions_for(r.topic))
                cached = (r.topic, r.key, len(partitions))
                partition = self._partition_of.get(cached)
                if partition is None:
                    partition = self._partition_of[cached] = DefaultPartitioner()(r.key, partitions, partitions)
            groups.setdefault((r.topic, partition), []).append(r)
        return groups

    async def _renew(self) -> None:
        """A producer whose transaction state went bad (aiokafka turns some broker outages into a
        fatal state) is replaced by a new one with the same id, which aborts what was left open."""
        await self.stop()
        self.producer = AIOKafkaProducer(**self._options)
        await self.producer.start()

    async def start(self) -> None:
        """Register the transactional id: aborts the previous owner's open transaction and fences it."""
        await self.producer.start()

    async def stop(self) -> None:
        try:
            await self.producer.stop()
        except KafkaError:
            pass

    async def commit(self, records: Iterable[Out], offsets: dict[TopicPartition, int],
                     committed: Callable[[], Awaitable[bool]], still_owned: Callable[[], bool] = lambda: True,
                     retry_s: float = 1.0) -> None:
        """Send ``records`` and commit ``offsets`` in one transaction, retrying while the partition
        is ``still_owned``; raise ``Fenced`` if it is not, or if this producer lost it.

        A failure can leave it unknown whether the commit reached the broker; before a retry,
        ``committed()`` reads the partition's committed mark back to tell (never commit twice)."""
        records = list(records)
        attempt = 0
        while True:
            if not still_owned():
                raise Fenced(f"partition {self.partition} was revoked")
            try:  # bounded: aiokafka can wait forever on a coordinator lost in a broker restart
                await asyncio.wait_for(self._once(records, offsets), ATTEMPT_S)
                return
            except (ProducerFenced, InvalidProducerEpoch, TransactionalIdAuthorizationFailed) as error:
                raise Fenced(f"partition {self.partition}: {error!r}") from error
            except (KafkaError, AssertionError, asyncio.TimeoutError) as error:
                attempt += 1
                log.warning("transaction of partition %d failed (%r); retrying (attempt %d)",
                            self.partition, error, attempt)
                await asyncio.sleep(min(retry_s * attempt, 10.0))
                try:  # bounded: a step that hangs on a half-back broker is tried again, never waited on forever
                    await asyncio.wait_for(self._renew(), RECOVERY_STEP_S)
                    if await asyncio.wait_for(committed(), RECOVERY_STEP_S):
                        log.info("partition %d: the transaction had committed; not sent again", self.partition)
                        return
                except (KafkaError, asyncio.TimeoutError) as again:
                    log.warning("partition %d: broker still away (%r)", self.partition, again)

    async def _once(self, records: list[Out], offsets: dict[TopicPartition, int]) -> None:
        producer = self.producer
        await producer.begin_transaction()
        futures = []
        for (topic, partition), group in (await self._by_partition(records)).items():
            # One batch per partition rather than a send per record: a send costs tens of µs in
            # aiokafka, an append a few. The order within a partition is the records' order.
            batch = producer.create_batch()
            for r in group:
                if batch.append(key=r.key, value=r.value, timestamp=None, headers=list(r.headers)) is None:
                    futures.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = producer.create_batch()
                    batch.append(key=r.key, value=r.value, timestamp=None, headers=list(r.headers))
            futures.append(await producer.send_batch(batch, topic, partition=partition))
        if offsets:
            await producer.send_offsets_to_transaction(offsets, self.group)
        await producer.commit_transaction()
        for future in futures:  # a record the broker refused fails the transaction's commit first
            future.result()
