"""The event log outside Kafka and back: export a topic to a file, import a file to a topic
(``dmtwin log export|import``). Reading either as lines is ``streams.audit.logtool``'s.

- **Export** writes the messages' values as JSON Lines (gzip when the name ends in .gz),
  partition after partition, so every host's entries keep their order. A small sidecar
  (``FILE.export.json``) records, after each batch, the next offset of each partition and the
  file's size: an interrupted export resumes from there (the file is cut back to the last
  checkpoint first, so nothing is written twice). Each batch of a .gz file is its own gzip member.
- **Import** sends a file's lines keyed by their host, in file order, one request in flight, so
  Kafka keeps each host's order. Its sidecar (``FILE.import-TOPIC.json``) records the lines sent
  and the topic's end offsets after each flush; on resume, messages that reached the topic after
  the last checkpoint are recognised and not sent again. ``skip`` starts at a given line instead.

Uses kafka-python (synchronous). Progress goes to stderr.
"""

from __future__ import annotations

import gzip
import json
import os
import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from twin.chain import split_line, verify_chain
from twin.log import peek
from twin.signing import Signer

from ..kafka.security import KafkaSecurity, connect
from .logtool import BATCH, _kafka, _Progress, host_of, read_topic

__all__ = ["ExportFilter", "ExportStats", "ImportStats", "export_log", "import_log"]


# --- export -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportFilter:
    """Which messages to export: an at_ms range (inclusive), hosts, partitions, an offset range."""

    since_ms: int | None = None
    until_ms: int | None = None
    hosts: tuple[str, ...] = ()
    partitions: tuple[int, ...] = ()
    first_offset: int | None = None
    end_offset: int | None = None
    """Exclusive."""

    def keeps(self, key: bytes | None, value: bytes) -> bool:
        if self.hosts and (key.decode("utf-8", "replace") if key else host_of(value)) not in self.hosts:
            return False
        if self.since_ms is None and self.until_ms is None:
            return True
        head = peek(value)
        at_ms = head[0] if head is not None else _at_ms(value)
        if at_ms is None:
            return True  # not an event: exported as it is, an audit reports it
        return (self.since_ms is None or at_ms >= self.since_ms) and (self.until_ms is None or at_ms <= self.until_ms)


def _at_ms(value: bytes) -> int | None:
    try:
        at_ms = json.loads(value).get("at_ms")
    except (ValueError, AttributeError):
        return None
    return at_ms if isinstance(at_ms, int) else None


@dataclass
class ExportStats:
    read: int = 0
    written: int = 0
    resumed: bool = False
    next_offsets: dict[int, int] = field(default_factory=dict)


def export_log(bootstrap: str, topic: str, path: str | Path, filt: ExportFilter = ExportFilter(),
               fresh: bool = False, max_messages: int | None = None, progress: IO[str] | None = sys.stderr,
               security: KafkaSecurity | None = None) -> ExportStats:
    """Export ``topic`` to ``path``, resuming an interrupted export (see the module docstring)."""
    path = Path(path)
    sidecar = path.with_name(path.name + ".export.json")
    identity = {"topic": topic, "filter": asdict(filt)}
    stats = ExportStats()
    start: dict[int, int] = {}
    if fresh:
        path.unlink(missing_ok=True)
        sidecar.unlink(missing_ok=True)
    if sidecar.exists():
        saved = json.loads(sidecar.read_text())
        if {k: saved.get(k) for k in identity} != json.loads(json.dumps(identity)):
            raise ValueError(f"{sidecar} belongs to another export (topic or filter differ): pass --fresh "
                             "to start over")
        start = {int(p): o for p, o in saved["next"].items()}
        with open(path, "ab") as raw:
            raw.truncate(saved["bytes"])  # drop what was written after the last checkpoint
        stats.resumed, stats.written = True, saved["lines"]
    elif path.exists() and path.stat().st_size:
        raise ValueError(f"{path} exists and no export to resume is recorded for it: pass --fresh to overwrite")
    first = filt.first_offset or 0
    show = _Progress("export", progress)
    next_offsets = dict(start)
    batch: list[bytes] = []
    gz = path.suffix == ".gz"

    def checkpoint() -> None:
        data = b"".join(batch)
        with open(path, "ab") as raw:
            if data:
                if gz:
                    with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as member:
                        member.write(data)
                else:
                    raw.write(data)
            raw.flush()
            os.fsync(raw.fileno())
            size = raw.tell()
        stats.written += len(batch)
        batch.clear()
        state = {**identity, "next": next_offsets, "bytes": size, "lines": stats.written}
        tmp = sidecar.with_name(sidecar.name + ".tmp")
        tmp.write_text(json.dumps(state, sort_keys=True))
        tmp.replace(sidecar)

    for partition, offset, key, value in read_topic(bootstrap, topic, lambda p: max(start.get(p, 0), first),
                                                    filt.end_offset, filt.partitions or None, security):
        stats.read += 1
        if filt.keeps(key, value):
            batch.append(value.rstrip(b"\n") + b"\n")
        next_offsets[partition] = offset + 1
        if len(batch) >= BATCH:
            checkpoint()
        show(stats.read, f" read, {stats.written + len(batch):,} exported, partition {partition} offset {offset}")
        if max_messages is not None and stats.read >= max_messages:
            break
    checkpoint()
    stats.next_offsets = next_offsets
    show(stats.read, f" read, {stats.written:,} exported to {path}", final=True)
    return stats


# --- import -------------------------------------------------------------------------------------


@dataclass
class ImportStats:
    sent: int = 0
    skipped: int = 0
    already_there: int = 0
    """Lines found on the topic after the last checkpoint of an interrupted import: not sent again."""
    lines: int = 0
    checkpoints: int = 0
    """Signed checkpoints sent (with a signer)."""


def _ensure_topic(bootstrap: str, topic: str, partitions: int, security: KafkaSecurity | None = None) -> None:
    kafka = _kafka()
    admin = connect(kafka.admin.KafkaAdminClient, bootstrap, security)
    try:
        if topic not in admin.list_topics():
            try:
                admin.create_topics([kafka.admin.NewTopic(topic, partitions, 1, topic_configs={"retention.ms": "-1"})])
            except kafka.errors.TopicAlreadyExistsError:
                pass
    finally:
        admin.close()


def _end_offsets(bootstrap: str, topic: str, security: KafkaSecurity | None = None) -> dict[int, int]:
    kafka = _kafka()
    consumer = connect(kafka.KafkaConsumer, bootstrap, security, enable_auto_commit=False, group_id=None,
                       isolation_level="read_committed")
    try:
        tps = [kafka.TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        return {tp.partition: offset for tp, offset in consumer.end_offsets(tps).items()}
    finally:
        consumer.close()


def import_log(path: str | Path, bootstrap: str, topic: str, skip: int | None = None, partitions: int = 4,
               max_messages: int | None = None, progress: IO[str] | None = sys.stderr,
               signer: Signer | None = None, checkpoints_topic: str | None = None,
               security: KafkaSecurity | None = None) -> ImportStats:
    """Send a log file's lines to ``topic`` keyed by host, resuming an interrupted import.

    With a ``signer``, the file's chains are checked first (a broken one is refused: signing it
    would vouch for the tampering), and after each flush a checkpoint of each host sent since is
    signed and sent to ``checkpoints_topic``, as the worker does; one more per host at the end."""
    kafka = _kafka()
    path = Path(path)
    sidecar = path.with_name(f"{path.name}.import-{topic}.json")
    if signer is not None:
        if checkpoints_topic is None:
            raise ValueError("a signer needs a checkpoints topic")
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as check:
            broken = verify_chain(check)
        if broken:
            first = broken[0]
            raise ValueError(f"{path}: not signing a log whose chain is broken ({len(broken)} problems, the first "
                             f"at line {first.position}, host {first.host}: {first.kind}); dmtwin audit verify says more")
        _ensure_topic(bootstrap, checkpoints_topic, partitions, security)
    _ensure_topic(bootstrap, topic, partitions, security)
    counts: dict[str, int] = {}
    heads: dict[str, tuple[str, int]] = {}
    touched: set[str] = set()
    signed: dict[str, int] = {}
    stats = ImportStats()
    extra: dict[bytes, list[bytes]] = {}
    start = 0
    if skip is not None:
        start = skip
    elif sidecar.exists():
        saved = json.loads(sidecar.read_text())
        start = saved["lines"]
        ends = {int(p): o for p, o in saved["ends"].items()}
        now = _end_offsets(bootstrap, topic, security)
        if any(now.get(p, 0) > o for p, o in ends.items()) or set(now) - set(ends):
            for _, _, key, value in read_topic(bootstrap, topic, start=ends, end=now, security=security):
                extra.setdefault(key or b"", []).append(value)
    producer = connect(kafka.KafkaProducer, bootstrap, security, acks="all", enable_idempotence=True,
                       max_in_flight_requests_per_connection=1, linger_ms=20,
                       batch_size=512 * 1024, delivery_timeout_ms=300_000, request_timeout_ms=30_000)
    show = _Progress("import", progress)
    pending = 0
    futures: list[Any] = []

    def sign(hosts: Iterable[str]) -> None:
        if signer is None:
            return
        producer.flush()  # the lines first, then the checkpoints that vouch for them
        for host in sorted(hosts):
            if host in heads and signed.get(host) != counts[host]:
                head, at_ms = heads[host]
                producer.send(checkpoints_topic, key=host.encode(),
                              value=signer.checkpoint(host, counts[host], head, at_ms))
                signed[host] = counts[host]
                stats.checkpoints += 1
        touched.clear()

    def checkpoint(lines: int) -> None:
        sign(touched)
        producer.flush()
        failed = [f.exception for f in futures if f.failed()]
        futures.clear()
        if failed:  # the sidecar keeps the last delivered line: a rerun resumes from there
            raise RuntimeError(f"{len(failed)} lines were not delivered to {topic}: {failed[0]!r}")
        state = {"topic": topic, "lines": lines, "ends": _end_offsets(bootstrap, topic, security)}
        tmp = sidecar.with_name(sidecar.name + ".tmp")
        tmp.write_text(json.dumps(state, sort_keys=True))
        tmp.replace(sidecar)

    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as lines:
            number = 0
            for number, line in enumerate(lines, start=1):
                if signer is not None:  # count every chained line, sent now or before
                    parts = split_line(line)
                    if parts is not None and parts[2] is not None:
                        head_of = peek(line)
                        counts[parts[0]] = counts.get(parts[0], 0) + 1
                        heads[parts[0]] = (parts[2], head_of[0] if head_of is not None else 0)
                        if number > start:
                            touched.add(parts[0])
                if number <= start:
                    stats.skipped += 1
                    continue
                value = line.rstrip(b"\r\n")
                if not value.strip():
                    continue
                host = host_of(value)
                key = host.encode() if host is not None else None
                waiting = extra.get(key or b"")
                if waiting:
                    if waiting[0] == value:
                        waiting.pop(0)
                        stats.already_there += 1
                        continue
                    waiting.clear()  # the topic goes on differently: send from here
                futures.append(producer.send(topic, key=key, value=value))
                stats.sent += 1
                pending += 1
                if pending >= BATCH:
                    checkpoint(number)
                    pending = 0
                show(stats.sent, f" sent, line {number:,} of {path.name}")
                if max_messages is not None and stats.sent >= max_messages:
                    break
            stats.lines = number
            if signer is not None:
                touched.update(counts)  # at the end every host is signed through its last line
            checkpoint(number)
    finally:
        producer.close()
    show(stats.sent, f" sent to {topic}, {stats.already_there} already there", final=True)
    return stats
