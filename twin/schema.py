"""JSON Schemas of the events, generated from the models (checked into ``docs/schemas``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .events import DECISION_TYPES, EVENT_ADAPTER, INPUT_TYPES, BalancerRound, StatusFrame
from .signing import Checkpoint

__all__ = ["schemas", "write_schemas"]


def schemas() -> dict[str, dict[str, Any]]:
    """File name → schema: one per event type, ``event.json`` for any log entry, the frame, the round, and the
    signed checkpoint (``log.checkpoint``, not an event: it lives beside the log)."""
    out = {"event.json": EVENT_ADAPTER.json_schema()}
    for model in (*INPUT_TYPES, *DECISION_TYPES, StatusFrame, BalancerRound, Checkpoint):
        tag = model.model_fields["type"].default
        out[f"{tag}.json"] = model.model_json_schema()
    return out


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_schemas(folder: Path) -> list[Path]:
    """Write every schema into ``folder``; return the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in schemas().items():
        path = folder / name
        path.write_text(render(schema), encoding="utf-8")
        written.append(path)
    return written
