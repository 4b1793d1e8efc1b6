"""Shared checks for the source tests: every log must replay with no rejection."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from twin.events import Decision, InputEvent
from twin.log import Replay, decode, encode, replay

DATA = Path(__file__).resolve().parent / "data"


def replays(events: Iterable[InputEvent | Decision]) -> Replay:
    """Encode, decode and fold ``events``; fail on any rejection."""
    lines = [encode(event) for event in events]
    assert all(decode(line) is not None for line in lines)
    result = replay(lines)
    assert result.rejected == [], [r.describe() for r in result.rejected]
    assert result.events == len(lines)
    return result


def types(events: Iterable[InputEvent | Decision]) -> list[str]:
    return [event.type for event in events]
