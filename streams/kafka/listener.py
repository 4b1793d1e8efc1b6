"""A SASL_SSL client listener for the local broker (``LocalKafka(secure=...)``, docs/security.md).

Standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["SecureListener"]


@dataclass(frozen=True)
class SecureListener:
    """Clients reach the broker over SASL_SSL (SCRAM) only; the controller and the broker's own
    traffic stay on plaintext listeners bound to 127.0.0.1 (``internal_port``).

    ``keystore`` is a PKCS#12 file with the broker's private key and certificate chain; the SCRAM
    ``users`` (name → password) are written into the metadata log when the data dir is formatted
    (``kafka-storage format --add-scram``), so they exist before the broker takes a connection."""

    internal_port: int
    keystore: Path
    keystore_password: str = field(repr=False)
    users: dict[str, str] = field(default_factory=dict, repr=False)
    mechanism: str = "SCRAM-SHA-512"

    def properties(self, port: int, controller_port: int) -> dict[str, str]:
        """The ``server.properties`` entries that put clients on SASL_SSL at ``port``."""
        internal, c = self.internal_port, controller_port
        return {
            "listeners": f"SASL_SSL://127.0.0.1:{port},INTERNAL://127.0.0.1:{internal},CONTROLLER://127.0.0.1:{c}",
            "advertised.listeners": f"SASL_SSL://localhost:{port},INTERNAL://localhost:{internal},"
                                    f"CONTROLLER://localhost:{c}",
            "inter.broker.listener.name": "INTERNAL",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,INTERNAL:PLAINTEXT,SASL_SSL:SASL_SSL",
            "sasl.enabled.mechanisms": self.mechanism,
            f"listener.name.sasl_ssl.{self.mechanism.lower()}.sasl.jaas.config":
                "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            "ssl.keystore.type": "PKCS12",
            "ssl.keystore.location": str(Path(self.keystore).resolve()),
            "ssl.keystore.password": self.keystore_password,
            "ssl.key.password": self.keystore_password,
            "ssl.client.auth": "none",
        }

    def scram_arguments(self) -> list[str]:
        """``kafka-storage format`` arguments creating the SCRAM users."""
        return [arg for name, password in self.users.items()
                for arg in ("--add-scram", f"{self.mechanism}=[name={name},password={password}]")]
