"""Serving the metrics: a registry with the twin's collectors (``streams.ops.collectors``) and
prometheus_client's process and platform collectors, over HTTP for the worker and for
``dmtwin replay --serve``.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector, start_http_server

from twin.state import HostState

if TYPE_CHECKING:
    from twin.log import Replay

from .collectors import Clock, LiveCollector, TwinCollector

__all__ = ["twin_registry", "serve", "serve_replay"]


def twin_registry(hosts: Callable[[], Iterable[HostState]], *,
                  clock: Clock | None = time.time) -> CollectorRegistry:
    """A fresh registry holding a ``TwinCollector`` and a ``LiveCollector`` over ``hosts``, and the
    process and platform collectors of prometheus_client. ``clock`` measures the ages of the
    newest events; pass None when the events are not live (a replayed log)."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(TwinCollector(hosts))
    registry.register(LiveCollector(hosts, clock))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry


def serve(registry: CollectorRegistry, port: int, addr: str = "0.0.0.0") -> WSGIServer:
    """Serve ``registry`` on ``http://addr:port/metrics`` from a daemon thread.

    ``port`` 0 picks a free port (read it from ``server.server_address[1]``). Stop with
    ``server.shutdown(); server.server_close()``.
    """
    server, _thread = start_http_server(port, addr=addr, registry=registry)
    return server


def serve_replay(result: Replay, port: int, *, addr: str = "0.0.0.0",
                 stop: threading.Event | None = None) -> None:
    """Serve the counters of a replayed log until interrupted (``dmtwin replay --serve PORT``).

    Blocks until Ctrl-C, or until ``stop`` is set when one is given.
    """
    hosts = list(result.twin.hosts.values())
    server = serve(twin_registry(lambda: hosts, clock=None), port, addr)
    bound = server.server_address[1]
    print(f"dmtwin replay: serving {len(hosts)} host(s) on http://{addr}:{bound}/metrics "
          "(Ctrl-C to stop)", file=sys.stderr, flush=True)
    try:
        (stop or threading.Event()).wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        server.server_close()
