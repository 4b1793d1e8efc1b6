"""The floor of bench_pipeline.py: an empty Faust agent with the worker's app settings.

A faust.App built like ``streams.worker.app.Worker._build`` (broker, memory store, partitions,
consumer and session settings, raw bytes, ``acks=False`` on the input topics, one agent of
concurrency 1 over both input topics), whose agent only iterates the stream's events and counts.
It runs as a process of its own, started like ``dmtwin worker`` (``faust.Worker(app)``), and is
configured by the same ``DMTWIN_*`` environment variables (``streams.kafka.settings.Settings``),
plus:

- ``FLOOR_EXPECT``: telemetry messages to wait for;
- ``FLOOR_RESULT``: a JSON file written once they are all seen:
  ``{"seconds", "cpu_seconds", "telemetry", "other", "differences"}``; ``seconds`` runs from the
  first telemetry message the agent sees to the last, ``cpu_seconds`` is the process's CPU time
  (every thread) meanwhile, and ``differences`` lists every Faust setting in which this
  app differs from the worker's (beyond its id, ports and directories), so a drift shows.

Run: ``python benchmarks/floor_agent.py worker --loglevel info`` (FloorProcess in
bench_pipeline.py does). No Faust import until run: importing faust reads the command line.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

OWN = {"id", "name", "appdir", "datadir", "tabledir", "web_port", "web_host", "web_bind", "canonical_url",
       "broker_client_id", "reply_to"}
"""Settings the floor has of its own (its id and what derives from it, its port)."""


def build(settings: Any) -> Any:
    """The app and its empty agent (the worker's app, ``Worker._build``, with nothing in the agent)."""
    import faust

    from streams.worker.app import RAW_TOPIC, app_options, tune_gc

    s = settings
    topics = s.topics
    app = faust.App(s.app_id, **app_options(s))
    inputs = app.topic(*topics.inputs, partitions=s.partitions, acks=False, **RAW_TOPIC)
    expect = int(os.environ.get("FLOOR_EXPECT", "0"))
    result = os.environ.get("FLOOR_RESULT", "")
    counts = {"telemetry": 0, "other": 0}
    clock = {"first": 0.0, "first_cpu": 0.0, "last": 0.0}

    @app.agent(inputs, concurrency=1)
    async def floor(stream: Any) -> None:
        tune_gc()  # the worker's process settings too, so that the floor is Faust's own cost alone
        async for event in stream.events():
            if event.message.topic == topics.telemetry:
                now, cpu = time.perf_counter(), time.process_time()
                clock["first"] = clock["first"] or now
                clock["first_cpu"] = clock["first_cpu"] or cpu
                clock["last"] = now
                counts["telemetry"] += 1
                if counts["telemetry"] == expect and result:
                    write(result, clock["last"] - clock["first"], cpu - clock["first_cpu"], counts, drift)
            else:
                counts["other"] += 1

    drift = differences(app, settings)  # before the app runs
    return app


def write(path: str, seconds: float, cpu_seconds: float, counts: dict[str, int], diff: dict[str, Any]) -> None:
    Path(path + ".tmp").write_text(json.dumps({"seconds": seconds, "cpu_seconds": cpu_seconds, **counts,
                                               "differences": diff}))
    os.replace(path + ".tmp", path)


def differences(app: Any, settings: Any) -> dict[str, Any]:
    """Every Faust setting in which ``app`` differs from the worker's app of the same settings
    (and the worker's input topic, if its options differ)."""
    import dataclasses
    import warnings

    from streams.worker.app import Worker

    worker = Worker(dataclasses.replace(settings, app_id=settings.app_id + "-probe")).app
    diff: dict[str, Any] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecated settings warn when read
        for name in sorted(set(type(app.conf).SETTINGS) - OWN):
            a, b = repr(getattr(app.conf, name, None)), repr(getattr(worker.conf, name, None))
            if a != b:
                diff[name] = [a, b]
    mine, theirs = (next(iter(a.agents.values())) for a in (app, worker))
    for option in ("acks", "partitions", "key_serializer", "value_serializer", "topics"):
        a, b = (repr(getattr(agent.channel, option, None)) for agent in (mine, theirs))
        if a != b:
            diff[f"topic.{option}"] = [a, b]
    a, b = (agent.concurrency for agent in (mine, theirs))
    if a != b:
        diff["agent.concurrency"] = [a, b]
    return diff


def main() -> None:
    import faust

    from streams.kafka.settings import Settings

    faust.Worker(build(Settings()), loglevel="info").execute_from_commandline()


if __name__ == "__main__":
    main()
