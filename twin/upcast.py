"""Upcasters: reading events written under an older schema version (``v``) as current ones.

A log is kept forever, so the twin must read what older versions of itself wrote. Each entry of
``UPCASTERS`` turns the JSON object of one version into the next one; ``upcast`` applies them in
turn up to ``SCHEMA_VERSION``. Events of a *newer* version are refused with a clear message: their
meaning is unknown to this twin, and guessing would make an audit lie.

Version history:

- **v0** (the prototype's format): memory amounts in bytes, in fields named ``*_bytes``
  (``total_bytes``, ``committed_bytes``, ``settings.startup_bytes``, ...), like PowerShell's
  ``-StartupBytes``. v1 counts whole MiB in ``*_mib`` fields; a partial MiB rounds up.
- **v1**: the current schema (``twin.events``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .errors import Rejected
from .events import SCHEMA_VERSION

__all__ = ["MIB", "UPCASTERS", "upcast"]

MIB = 1 << 20

JsonObject = dict[str, Any]


def _v0_to_v1(event: JsonObject) -> JsonObject:
    """v0 → v1: ``*_bytes`` fields (at any depth) become ``*_mib``, rounded up to whole MiB."""

    def convert(value: Any) -> Any:
        if isinstance(value, dict):
            out: JsonObject = {}
            for key, item in value.items():
                if key.endswith("_bytes") and isinstance(item, int) and not isinstance(item, bool):
                    out[key[: -len("_bytes")] + "_mib"] = -(-item // MIB)
                else:
                    out[key] = convert(item)
            return out
        if isinstance(value, list):
            return [convert(item) for item in value]
        return value

    upgraded: JsonObject = convert(event)
    upgraded["v"] = 1
    return upgraded


UPCASTERS: dict[int, Callable[[JsonObject], JsonObject]] = {0: _v0_to_v1}
"""Version n → the function that turns a version-n event into a version n+1 one."""


def upcast(event: JsonObject) -> JsonObject:
    """The event as a current-version JSON object; ``Rejected`` for unknown or newer versions."""
    version = event.get("v", SCHEMA_VERSION)
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise Rejected("v", version, "the schema version must be a whole number ≥ 0")
    if version > SCHEMA_VERSION:
        raise Rejected("v", version, f"written by a newer dmtwin (schema v{version}); this one reads "
                                     f"v0 to v{SCHEMA_VERSION}: upgrade dmtwin to read this log")
    while version < SCHEMA_VERSION:
        step = UPCASTERS.get(version)
        if step is None:
            raise Rejected("v", version, "no upgrade is known from this schema version")
        event = step(event)
        version = event["v"]
    return event
