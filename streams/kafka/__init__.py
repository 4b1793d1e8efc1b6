"""Kafka plumbing shared by the worker, the producers and the tools.

``topics`` (topic names and retention), ``settings`` (the worker's settings from flags and
``DMTWIN_*``) and ``feed`` (creating topics, streaming a scenario in, checked idempotent delivery);
then the local single-node broker, in four steps: ``download`` fetches Kafka from Maven Central,
``broker`` (``LocalKafka``) formats, starts and stops it, ``probe`` tells whether it is alive and
answering, and ``command`` is ``dmtwin kafka up|down|status``; ``listener`` gives it a SASL_SSL listener.
``security`` holds the TLS and SASL settings of every client (docs/security.md).
"""
