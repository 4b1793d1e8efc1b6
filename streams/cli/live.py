"""The ``dmtwin`` commands that run live against Kafka: ``worker`` and ``simulate --kafka``.

Both check what they need first (the ports they serve on, the broker) and fail with one line
(``failure.Failure``) instead of a client's timeout and traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .failure import UNREACHABLE, Failure, broker_address, reach_broker

__all__ = ["_simulate_to_kafka", "_worker"]


def _simulate_to_kafka(args: argparse.Namespace) -> int:
    import asyncio
    import time

    from twin.scenario import load_scenario

    from ..kafka.feed import feed
    from ..kafka.security import security_from_args
    from ..kafka.settings import Settings

    settings = Settings(security=security_from_args(args))
    scenario = load_scenario(args.scenario)
    if not args.keep_start:  # live runs happen now: event time follows the wall clock from here
        scenario = scenario.model_copy(update={"start_ms": int(time.time()) * 1000})
    bootstrap = reach_broker(args.kafka)
    settings.security.check(bootstrap)  # a refused login or TLS handshake: one line, at once
    try:
        stats = asyncio.run(feed(scenario, bootstrap, settings.topics, speed=args.speed,
                                 per_guest=args.per_guest, partitions=settings.partitions, loop=args.forever,
                                 client=settings.kafka_client()))
    except KeyboardInterrupt:
        return 0
    except Exception as error:
        raise settings.security.refused(bootstrap, error) or error
    print(f"dmtwin simulate: {stats.seconds} s of event time, {stats.reports} reports in "
          f"{stats.messages} messages, {stats.answers} commands answered", file=sys.stderr)
    return 0


def _worker(args: argparse.Namespace) -> int:
    import asyncio
    import dataclasses

    from ..kafka.security import security_from_args
    from ..kafka.settings import Settings

    overrides = {k: v for k, v in {
        "broker": args.kafka and broker_address(args.kafka), "data_dir": args.data_dir and Path(args.data_dir),
        "partitions": args.partitions, "web_host": args.web_host, "web_port": args.web_port,
        "metrics_host": args.metrics_host, "metrics_port": args.metrics_port, "app_id": args.app_id,
        "lateness_ms": args.lateness_ms, "key_path": args.key}.items() if v is not None}
    settings = dataclasses.replace(Settings(security=security_from_args(args)), **overrides)
    _check_ports(settings)
    reach_broker(settings.broker, "--kafka" if args.kafka else "DMTWIN_BROKER")
    settings.security.check(settings.broker)  # a refused login or TLS handshake: one line, at once

    import faust

    from ..kafka.feed import ensure_topics
    from ..worker.app import Worker

    # Topics first: a consumer group ignores topics that do not exist when it joins.
    try:
        asyncio.run(ensure_topics(settings.broker, settings.topics, settings.partitions,
                                  snapshots=f"{settings.app_id}-snapshots", **settings.kafka_client()))
    except Exception as error:
        raise settings.security.refused(settings.broker, error) or error
    worker = Worker(settings)
    if settings.metrics_port:
        from ..ops.serving import serve

        serve(worker.registry, settings.metrics_port, settings.metrics_host)
    print(f"dmtwin worker: broker {settings.broker} ({settings.security.describe()}); hosts at "
          f"http://{settings.web_host}:{settings.web_port}/hosts/, metrics at "
          f"http://{settings.metrics_host}:{settings.metrics_port}/metrics", file=sys.stderr)
    try:
        faust.Worker(worker.app, loglevel=args.loglevel).execute_from_commandline()
    except SystemExit as done:
        return int(done.code or 0)
    return 0


def _check_ports(settings) -> None:  # type: ignore[no-untyped-def]
    """``Failure`` (exit 5) naming the port and its option if another program holds it: else
    Faust would log the error and keep running without its pages."""
    import socket

    for port, host, option in ((settings.web_port, settings.web_host, "--web-port"),
                               (settings.metrics_port, settings.metrics_host, "--metrics-port")):
        if not port:
            continue
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do
            try:
                probe.bind((host, port))
            except OSError as error:
                raise Failure(f"port {port} on {host} ({option}) is taken ({(error.strerror or str(error)).lower()}): "
                              f"stop the program that holds it, or choose another with {option} PORT",
                              UNREACHABLE) from None
