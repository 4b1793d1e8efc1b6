"""Where sources send events: a JSON Lines file, or the twin's input topics on Kafka."""

from __future__ import annotations

import os
from typing import Any

from twin.events import Decision, GuestStatusReported, InputEvent
from twin.log import encode

from ..kafka.feed import DELIVERY_TIMEOUT_MS, DeliveryError, parse_kafka_url
from ..kafka.security import KafkaSecurity, connect
from ..kafka.topics import Topics
from .jsonl import JsonlSink, Sink

__all__ = ["KafkaSink", "sink_for"]


class KafkaSink:
    """Sends each input to the twin's topics, keyed by host: status reports to the telemetry topic,
    everything else (host and VM events, guests' answers) to the host-events topic."""

    def __init__(self, bootstrap: str, topics: Topics | None = None, security: KafkaSecurity | None = None) -> None:
        import warnings

        with warnings.catch_warnings():  # kafka-python 3 imports deprecated importlib APIs
            warnings.simplefilter("ignore", DeprecationWarning)
            from kafka import KafkaProducer
        self.topics = topics or Topics(os.environ.get("DMTWIN_TOPIC_PREFIX", "dmtwin."))
        self.producer: Any = connect(KafkaProducer, bootstrap, security, linger_ms=5, acks="all",
                                     enable_idempotence=True, delivery_timeout_ms=DELIVERY_TIMEOUT_MS,
                                     request_timeout_ms=30_000)
        self.count = 0
        self._pending: list[Any] = []

    def __call__(self, event: InputEvent | Decision) -> None:
        topic = self.topics.telemetry if isinstance(event, GuestStatusReported) else self.topics.host_events
        self._pending.append(self.producer.send(topic, key=event.host.encode(), value=encode(event).encode()))
        self.count += 1
        if len(self._pending) >= 10_000:
            self.check()

    def check(self) -> None:
        """Wait until the broker has every event sent so far; raise ``DeliveryError`` if one failed."""
        self.producer.flush()
        pending, self._pending = self._pending, []
        failed = [f.exception for f in pending if f.failed()]
        if failed:
            raise DeliveryError(f"{len(failed)} of {len(pending)} events were not delivered: {failed[0]!r}")

    def close(self) -> None:
        try:
            self.check()
        finally:
            self.producer.close()


def sink_for(target: str, append: bool = False, security: KafkaSecurity | None = None) -> Sink:
    """``kafka://HOST:PORT`` → a ``KafkaSink`` (through ``security``, default the ``DMTWIN_KAFKA_*``
    variables); anything else is a JSON Lines file (``-``: stdout)."""
    if target.startswith("kafka://"):
        from ..cli.failure import reach_broker  # at once, not after the client's 30 s timeout

        return KafkaSink(reach_broker(parse_kafka_url(target), "--kafka"), security=security)
    return JsonlSink(target, mode="a" if append else "w")
