"""Fixtures for tests against a real Kafka broker.

``kafka_bootstrap`` uses ``$DMTWIN_KAFKA_BOOTSTRAP`` when set; otherwise it starts a
:class:`streams.kafka.broker.LocalKafka` (Kafka fetched from Maven Central into the usual cache)
in a fresh temp data dir on free ports, and stops it when the session ends.
"""

from __future__ import annotations

import os
import socket
import warnings
from collections.abc import Callable, Iterator
from contextlib import ExitStack

import pytest

from streams.kafka.broker import LocalKafka

with warnings.catch_warnings():
    # kafka-python 3.0 calls deprecated importlib.resources APIs when first imported; import
    # it here once, quietly, so runs with filterwarnings=error can still use it.
    warnings.simplefilter("ignore", DeprecationWarning)
    import kafka  # noqa: F401


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports that are free on 127.0.0.1 right now."""
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


@pytest.fixture(scope="session")
def free_port_pair() -> Callable[[], tuple[int, int]]:
    """Factory for a (broker, controller) port pair that is currently free."""

    def pair() -> tuple[int, int]:
        broker, controller = free_ports(2)
        return broker, controller

    return pair


@pytest.fixture(scope="session")
def kafka_bootstrap(
    tmp_path_factory: pytest.TempPathFactory,
    free_port_pair: Callable[[], tuple[int, int]],
) -> Iterator[str]:
    """Bootstrap address (``host:port``) of a running Kafka broker for the whole session."""
    external = os.environ.get("DMTWIN_KAFKA_BOOTSTRAP")
    if external:
        yield external
        return
    port, controller_port = free_port_pair()
    kafka = LocalKafka(
        data_dir=tmp_path_factory.mktemp("kafka"), port=port, controller_port=controller_port
    )
    kafka.up()
    try:
        yield kafka.bootstrap
    finally:
        kafka.down()
