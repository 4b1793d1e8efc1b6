"""Kafka plumbing shared by the worker, the producers and the tools.

``topics`` (topic names and retention), ``settings`` (the worker's settings from flags and
``DMTWIN_*``), ``feed`` (creating topics, streaming a scenario in, idempotent delivery) and the
local single-node broker: ``download`` fetches Kafka from Maven Central, ``broker`` formats, starts,
probes and stops it (``dmtwin kafka``).
"""
