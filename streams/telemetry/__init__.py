"""Telemetry into the twin: sources and the sinks their events go to.

``agent`` (this Linux machine as a guest) and ``ingest`` (recorded and synthetic sources) hand
their events to a *sink*; ``sink`` makes one for a target (``KafkaSink``, or a file). The ``Sink``
protocol and ``JsonlSink`` that all three share live in ``jsonl``, so that each depends on it and
none on another: no import circle.
"""
