"""Kafka plumbing for the twin: local broker management and stream processing.

One subpackage per concern, each described in its own docstring: ``worker`` (the hot path),
``kafka`` (topics, settings, producers, the local broker), ``telemetry`` (sources and sinks),
``audit`` (keys, trails, log export/import/verify), ``ops`` (metrics, ``dmtwin top``) and ``cli``
(the ``dmtwin`` command). No module is over 400 lines and the imports have no circle
(tests/streams/test_layout.py).
"""
