"""Is the local broker alive, and does it answer? Probes for ``streams.kafka.broker``.

Standard library only; kafka-python is imported lazily by ``broker_answers``, which degrades to
a plain TCP probe when it is not installed.
"""

from __future__ import annotations

import os
import socket
import warnings
from pathlib import Path


def _pid_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """True if something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def broker_answers(bootstrap: str, timeout_s: float = 5.0) -> bool:
    """True if the broker at ``bootstrap`` answers a metadata request and lists a live broker.

    Uses kafka-python when available (imported lazily), otherwise only a TCP probe.
    """
    try:
        with warnings.catch_warnings():  # kafka-python 3.0 uses deprecated importlib.resources
            warnings.simplefilter("ignore", DeprecationWarning)
            from kafka import KafkaAdminClient  # type: ignore[import-untyped]
            from kafka.errors import KafkaConfigurationError
            from kafka.errors import KafkaError as ClientError
    except ImportError:
        host, _, port = bootstrap.rpartition(":")
        return _port_open(int(port), host=host or "127.0.0.1")
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap,
            client_id="dmtwin-readiness",
            request_timeout_ms=int(timeout_s * 1000),
        )
    except KafkaConfigurationError:
        raise  # a bug here, not "broker not ready yet"
    except (ClientError, OSError):
        return False
    try:
        return bool(admin.describe_cluster().get("brokers"))
    except (ClientError, OSError):
        return False
    finally:
        admin.close()
