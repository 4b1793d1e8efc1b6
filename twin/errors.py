"""Errors raised by the twin. Every rejection names the field and the offending value."""

from __future__ import annotations

from typing import Any

__all__ = ["TwinError", "Rejected"]


class TwinError(Exception):
    """Base class of the twin's errors."""


class Rejected(TwinError):
    """An event the twin refuses: invalid, or illegal in the state it would apply to.

    ``position`` is the event's place in its log, its 1-based line number, once known.
    """

    def __init__(self, field: str, value: Any, reason: str, position: int | None = None) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        self.position = position
        super().__init__(self.describe())

    def __reduce__(self) -> tuple[type[Rejected], tuple[str, Any, str, int | None]]:
        return (Rejected, (self.field, self.value, self.reason, self.position))

    def at(self, position: int) -> Rejected:
        """The same rejection, placed at ``position`` in a log."""
        return Rejected(self.field, self.value, self.reason, position)

    def describe(self) -> str:
        where = f"line {self.position}: " if self.position is not None else ""
        return f"{where}{self.field}={self.value!r}: {self.reason}"

    def as_dict(self) -> dict[str, Any]:
        return {"position": self.position, "field": self.field, "value": _jsonable(self.value),
                "reason": self.reason}


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)
