"""The event log outside Kafka: read a topic or a file as the lines of a log (for ``dmtwin audit``
and ``dmtwin whatif``), and the helpers that export and import share.

Export and import (``dmtwin log export|import``, resumable) are ``streams.audit.transfer``'s;
``verify_parallel`` is ``streams.audit.parallel``'s.

Uses kafka-python (synchronous). Progress goes to stderr.
"""

from __future__ import annotations

import gzip
import json
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from twin.log import peek

from ..kafka.security import KafkaSecurity, connect

__all__ = [
    "host_of",
    "kafka_url",
    "open_lines",
    "read_topic",
]

BATCH = 5000
Offsets = dict[int, int] | int | Callable[[int], int] | None
PROGRESS_EVERY_S = 2.0


def _kafka() -> Any:
    with warnings.catch_warnings():  # kafka-python 3 imports deprecated importlib APIs
        warnings.simplefilter("ignore", DeprecationWarning)
        import kafka  # type: ignore[import-untyped]
        import kafka.admin  # type: ignore[import-untyped]
    return kafka


def kafka_url(text: str) -> str | None:
    """``kafka://HOST:PORT`` → ``HOST:PORT``; None for anything else."""
    if text.startswith("kafka://") and len(text) > len("kafka://"):
        return text[len("kafka://"):]
    return None


def host_of(line: bytes) -> str | None:
    """The host a log line belongs to (its Kafka key), or None if the line is not an event."""
    head = peek(line)
    if head is not None:
        return head[1]
    try:
        data = json.loads(line)
    except ValueError:
        return None
    host = data.get("host") if isinstance(data, dict) else None
    return host if isinstance(host, str) else None


class _Progress:
    """A line on stderr every few seconds."""

    def __init__(self, what: str, out: IO[str] | None) -> None:
        self.what, self.out = what, out
        self.started = self.last = time.monotonic()

    def __call__(self, done: int, detail: str = "", final: bool = False) -> None:
        now = time.monotonic()
        if self.out is None or (not final and now - self.last < PROGRESS_EVERY_S):
            return
        self.last = now
        rate = done / max(now - self.started, 1e-9)
        print(f"dmtwin log {self.what}: {done:,} messages{detail} ({rate:,.0f}/s)"
              + (" done" if final else ""), file=self.out, flush=True)


# --- reading ------------------------------------------------------------------------------------


def read_topic(bootstrap: str, topic: str, start: Offsets = None,
               end: Offsets = None, partitions: Iterable[int] | None = None,
               security: KafkaSecurity | None = None) -> Iterator[tuple[int, int, bytes | None, bytes]]:
    """(partition, offset, key, value) of every message, partition after partition, from ``start``
    (default: the beginning) up to ``end`` (default: the end offsets when called; exclusive).
    ``start`` and ``end`` are one offset for all partitions, or one per partition (a dict, or a
    function of the partition)."""
    kafka = _kafka()
    consumer = connect(kafka.KafkaConsumer, bootstrap, security, enable_auto_commit=False, group_id=None,
                       isolation_level="read_committed")
    try:
        known = consumer.partitions_for_topic(topic)
        if not known:
            raise ValueError(f"topic {topic!r} does not exist on {bootstrap}")
        chosen = sorted(known if partitions is None else set(partitions) & set(known))
        tps = [kafka.TopicPartition(topic, p) for p in chosen]
        ends = consumer.end_offsets(tps)
        begins = consumer.beginning_offsets(tps)
        for tp in tps:
            stop = min(ends[tp], _offset(end, tp.partition, ends[tp]))
            first = max(begins[tp], _offset(start, tp.partition, 0))
            if first >= stop:
                continue
            consumer.assign([tp])
            consumer.seek(tp, first)
            while consumer.position(tp) < stop:
                for record in consumer.poll(timeout_ms=1000, max_records=BATCH).get(tp, []):
                    if record.offset >= stop:
                        break
                    yield tp.partition, record.offset, record.key, record.value
    finally:
        consumer.close()


def _offset(offsets: Offsets, partition: int, default: int) -> int:
    if offsets is None:
        return default
    if isinstance(offsets, int):
        return offsets
    if isinstance(offsets, dict):
        return offsets.get(partition, default)
    return offsets(partition)


def open_lines(source: str, topic: str | None = None, security: KafkaSecurity | None = None) -> Iterator[bytes]:
    """The lines of a log: a file (.gz allowed), ``-`` for stdin, or ``kafka://HOST:PORT`` (the
    event-log topic, partition after partition, through ``security``)."""
    bootstrap = kafka_url(source)
    if bootstrap is not None:
        yield from (value for _, _, _, value in read_topic(bootstrap, topic or _default_topic(),
                                                           security=security))
        return
    if source == "-":
        yield from sys.stdin.buffer
        return
    path = Path(source)
    with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as lines:
        yield from lines


def _default_topic() -> str:
    from ..kafka.topics import Topics

    return Topics(os.environ.get("DMTWIN_TOPIC_PREFIX", "dmtwin.")).event_log
