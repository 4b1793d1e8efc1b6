"""Operating the twin: Prometheus metrics and the terminal view.

``metrics`` (the metric definitions, ``METRICS``, and their docs table), ``collectors`` (the twin's
counters and the live ages, computed at each scrape), ``pipeline`` (the worker's own counters, the
registry and serving it) and ``top`` (``dmtwin top``).
"""
