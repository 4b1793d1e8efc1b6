"""Integration tests for streams.kafka.broker against real Kafka processes (no mocks)."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer

from streams.kafka.broker import LocalKafka
from streams.kafka.download import KafkaError, fetch_kafka
from streams.kafka.probe import broker_answers


def _produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        for key, value in records:
            producer.send(topic, key=key, value=value).get(timeout=30)
    finally:
        producer.close()


def _consume(bootstrap: str, topic: str, count: int) -> list[tuple[bytes, bytes]]:
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"test-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        consumer_timeout_ms=30_000,
    )
    got: list[tuple[bytes, bytes]] = []
    try:
        for msg in consumer:
            got.append((msg.key, msg.value))
            if len(got) == count:
                break
    finally:
        consumer.close()
    return got


def test_produce_and_consume(kafka_bootstrap: str) -> None:
    topic = f"dmtwin-it-{uuid.uuid4().hex[:8]}"  # auto-created by the broker
    records = [(b"vm-%d" % i, b'{"pressure": %d}' % (40 + i)) for i in range(3)]
    _produce(kafka_bootstrap, topic, records)
    assert _consume(kafka_bootstrap, topic, len(records)) == records


def test_fetch_is_cached() -> None:
    libs = fetch_kafka()
    assert (libs / ".complete").exists()
    assert fetch_kafka() == libs
    jars = {p.name for p in libs.glob("*.jar")}
    assert any(j.startswith("kafka_2.13-") for j in jars)
    assert any(j.startswith("log4j-slf4j-impl-") for j in jars)


def test_lifecycle_up_idempotent_down_and_restart(
    tmp_path: Path, free_port_pair: Callable[[], tuple[int, int]]
) -> None:
    port, controller_port = free_port_pair()
    kafka = LocalKafka(data_dir=tmp_path / "kafka", port=port, controller_port=controller_port)
    assert not kafka.status().running
    try:
        first = kafka.up()
        assert first.running and first.pid is not None
        assert first.bootstrap == f"localhost:{port}"
        assert broker_answers(kafka.bootstrap)

        # Idempotent: same object, and a fresh object on the same data dir (pid file).
        assert kafka.up().pid == first.pid
        other = LocalKafka(data_dir=kafka.data_dir, port=port, controller_port=controller_port)
        assert other.up().pid == first.pid
        assert other.status().running

        topic = "dmtwin-it-restart"
        _produce(kafka.bootstrap, topic, [(b"k", b"survives restart")])

        assert kafka.down() is True
        stopped = kafka.status()
        assert not stopped.running and stopped.pid is None
        assert not kafka.pid_file.exists()
        assert not other.status().running
        assert kafka.down() is False

        # Restart on the same data dir: not reformatted, data kept.
        again = kafka.up()
        assert again.running and again.pid != first.pid
        assert _consume(kafka.bootstrap, topic, 1) == [(b"k", b"survives restart")]
    finally:
        kafka.down()
    assert not kafka.status().running


def test_up_refuses_busy_port(
    tmp_path: Path, free_port_pair: Callable[[], tuple[int, int]]
) -> None:
    port, controller_port = free_port_pair()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        kafka = LocalKafka(data_dir=tmp_path / "kafka", port=port, controller_port=controller_port)
        with pytest.raises(KafkaError, match="already in use"):
            kafka.up()
    assert not kafka.status().running
