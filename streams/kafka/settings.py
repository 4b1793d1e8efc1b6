"""Worker settings, each with its environment variable. Kept apart from the Faust app: importing
faust parses the command line (its own options such as --loop), which other commands must not do."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .security import KafkaSecurity, SettingError
from .topics import Topics

__all__ = ["Settings", "SettingError", "KafkaSecurity"]


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def _number(name: str, default: float, kind: type = int) -> Any:
    """The environment variable ``name`` as a ``kind`` (int or float), naming it when it is not."""
    raw = os.environ.get(name)
    if raw is None:
        return kind(default)
    try:
        return kind(raw)
    except ValueError:
        raise SettingError(f"{name}={raw!r}: expected {'a whole number' if kind is int else 'a number'}") from None


@dataclass(frozen=True)
class Settings:
    """Worker settings; each has an environment variable."""

    broker: str = field(default_factory=lambda: _env("DMTWIN_BROKER", "localhost:9092"))
    """Kafka bootstrap server, host:port (DMTWIN_BROKER)."""
    app_id: str = field(default_factory=lambda: _env("DMTWIN_APP_ID", "dmtwin"))
    """Consumer group, prefix of the transactional ids and of the snapshot topic (DMTWIN_APP_ID)."""
    data_dir: Path = field(default_factory=lambda: Path(_env(
        "DMTWIN_DATA_DIR", str(Path.home() / ".local/state/dmtwin/worker"))))
    """Faust's own files (DMTWIN_DATA_DIR). The hosts' state lives in Kafka, not here."""
    partitions: int = field(default_factory=lambda: _number("DMTWIN_PARTITIONS", 4))
    """Partitions of the input topics and of the snapshot topic (DMTWIN_PARTITIONS)."""
    topic_prefix: str = field(default_factory=lambda: _env("DMTWIN_TOPIC_PREFIX", "dmtwin."))
    tick_ms: int = field(default_factory=lambda: _number("DMTWIN_TICK_MS", 1000))
    """Event time between two balancing rounds of a host (DMTWIN_TICK_MS)."""
    lateness_ms: int = field(default_factory=lambda: _number("DMTWIN_LATENESS_MS", 300_000))
    """How far behind its host's event time an input may arrive and still be folded; older ones
    are dead-lettered as ``late`` (DMTWIN_LATENESS_MS)."""
    linger_ms: int = field(default_factory=lambda: _number("DMTWIN_LINGER_MS", 20))
    """How long the committer gathers messages before a transaction (DMTWIN_LINGER_MS)."""
    max_queued: int = field(default_factory=lambda: _number("DMTWIN_MAX_QUEUED", 20_000))
    """Messages decoded and waiting for their transaction before the agent stops reading."""
    session_timeout_s: float = field(default_factory=lambda: _number("DMTWIN_SESSION_TIMEOUT_S", 10.0, float))
    """How long the group waits for a silent worker before giving its hosts to the others."""
    key_path: str = field(default_factory=lambda: _env("DMTWIN_KEY", ""))
    """Ed25519 private key (``dmtwin keys new``) that signs each host's chain in checkpoints
    published with every transaction; empty: no checkpoints (DMTWIN_KEY)."""
    web_host: str = field(default_factory=lambda: _env("DMTWIN_WEB_HOST", "127.0.0.1"))
    """Address Faust's web server (/hosts/) listens on (DMTWIN_WEB_HOST; 0.0.0.0 for all)."""
    web_port: int = field(default_factory=lambda: _number("DMTWIN_WEB_PORT", 6066))
    """Faust's web server, serving /hosts/ (DMTWIN_WEB_PORT)."""
    metrics_host: str = field(default_factory=lambda: _env("DMTWIN_METRICS_HOST", "127.0.0.1"))
    """Address the Prometheus exposition listens on (DMTWIN_METRICS_HOST)."""
    metrics_port: int = field(default_factory=lambda: _number("DMTWIN_METRICS_PORT", 9108))
    """Prometheus exposition; 0 turns it off (DMTWIN_METRICS_PORT)."""

    security: KafkaSecurity = field(default_factory=KafkaSecurity.from_env)
    """TLS and SASL towards the broker (DMTWIN_KAFKA_SECURITY_PROTOCOL and the other
    DMTWIN_KAFKA_* variables, docs/security.md)."""

    @property
    def topics(self) -> Topics:
        return Topics(self.topic_prefix)

    def kafka_client(self) -> dict[str, Any]:
        """Connection options shared by every aiokafka client of the worker ({} for plaintext)."""
        return self.security.client()
