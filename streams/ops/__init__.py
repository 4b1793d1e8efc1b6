"""Operating the twin: Prometheus metrics and the terminal view.

``metrics`` defines every metric once (``METRICS``) and renders the docs' table; ``collectors``
reads the twin's counters and the live ages at each scrape; ``pipeline`` is the worker's own
health (``PipelineMetrics``, the dead letters' ``rejection_reason``); ``serving`` builds the
registry (``twin_registry``) and serves it over HTTP; ``top`` is ``dmtwin top``.
"""
