"""Telemetry into the twin: sources and the sinks their events go to.

``sinks`` holds the ``Sink`` protocol and ``JsonlSink``, the one thing both sides share, so that
``agent`` (this Linux machine as a guest) and ``ingest`` (recorded and synthetic sources) depend
on it and ``sink`` (``KafkaSink``, ``sink_for``) depends on it too, without any of them importing
another in a circle.
"""
