"""Worker settings, each with its environment variable. Kept apart from the Faust app: importing
faust parses the command line (its own options such as --loop), which other commands must not do."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .topics import Topics

__all__ = ["Settings"]


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


@dataclass(frozen=True)
class Settings:
    """Worker settings; each has an environment variable."""

    broker: str = field(default_factory=lambda: _env("DMTWIN_BROKER", "localhost:9092"))
    """Kafka bootstrap server, host:port (DMTWIN_BROKER)."""
    app_id: str = field(default_factory=lambda: _env("DMTWIN_APP_ID", "dmtwin"))
    """Consumer group and prefix of internal topics (DMTWIN_APP_ID)."""
    store: str = field(default_factory=lambda: _env("DMTWIN_STORE", "rocksdb://"))
    """Table store: rocksdb:// (survives restarts without a full changelog replay) or memory://."""
    data_dir: Path = field(default_factory=lambda: Path(_env(
        "DMTWIN_DATA_DIR", str(Path.home() / ".local/state/dmtwin/worker"))))
    """Where RocksDB keeps the tables (DMTWIN_DATA_DIR). One per worker on a machine."""
    partitions: int = field(default_factory=lambda: int(_env("DMTWIN_PARTITIONS", "4")))
    """Partitions of the input topics and of the table (DMTWIN_PARTITIONS)."""
    topic_prefix: str = field(default_factory=lambda: _env("DMTWIN_TOPIC_PREFIX", "dmtwin."))
    tick_ms: int = field(default_factory=lambda: int(_env("DMTWIN_TICK_MS", "1000")))
    """Event time between two balancing rounds of a host (DMTWIN_TICK_MS)."""
    web_port: int = field(default_factory=lambda: int(_env("DMTWIN_WEB_PORT", "6066")))
    """Faust's web server, serving /hosts/ (DMTWIN_WEB_PORT)."""
    metrics_port: int = field(default_factory=lambda: int(_env("DMTWIN_METRICS_PORT", "9108")))
    """Prometheus exposition; 0 turns it off (DMTWIN_METRICS_PORT)."""

    @property
    def topics(self) -> Topics:
        return Topics(self.topic_prefix)
