"""The Kafka topics of dmtwin and their contract (documented in docs/topics.md).

Every topic is keyed by host name (UTF-8), so all of one host's messages share a partition and its
VMs are balanced together by one worker. Values are UTF-8 JSON, one event per message, in the
twin's event schemas (docs/schemas).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Topics", "FOREVER"]

FOREVER = -1
"""retention.ms of topics that are kept forever."""


@dataclass(frozen=True)
class Topics:
    """Topic names under one prefix (``DMTWIN_TOPIC_PREFIX``, default ``dmtwin.``)."""

    prefix: str = "dmtwin."

    @property
    def telemetry(self) -> str:
        """In: ``guest.status`` reports, one guest each, or ``guest.status_frame``: a host's tick."""
        return self.prefix + "telemetry"

    @property
    def host_events(self) -> str:
        """In: host and VM lifecycle (``host.*``, ``vm.*``) and the guests' answers (``guest.*_response``)."""
        return self.prefix + "host-events"

    @property
    def balloon_commands(self) -> str:
        """Out: ``decision.balloon`` (inflate to a target) and ``decision.unballoon``."""
        return self.prefix + "commands.balloon"

    @property
    def addition_commands(self) -> str:
        """Out: ``decision.hot_add``, memory-addition requests."""
        return self.prefix + "commands.memory-addition"

    @property
    def event_log(self) -> str:
        """Out: every accepted input and every decision, in order per host. Kept forever."""
        return self.prefix + "event-log"

    @property
    def dead_letters(self) -> str:
        """Out: every rejected message with its original bytes and the reason. Kept forever."""
        return self.prefix + "dead-letter"

    @property
    def checkpoints(self) -> str:
        """Out: ``log.checkpoint``, a signed checkpoint of a host's event-log chain (``twin.signing``),
        one per host per transaction. Kept forever."""
        return self.prefix + "checkpoints"

    @property
    def inputs(self) -> tuple[str, str]:
        return (self.telemetry, self.host_events)
