"""Scenario errors as one line naming the file, the host, the VM, the field and the value, e.g.
``examples/x.toml: host h1, VM web: minimum_mib=5000: must not exceed startup_mib=4096``.

``ScenarioError`` is what ``twin.scenario.load_scenario`` raises for a file that cannot be read as
a scenario; ``scenario_error`` turns pydantic's validation error into one.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import ValidationError

__all__ = ["ScenarioError", "scenario_error", "where"]


class ScenarioError(ValueError):
    """A scenario file that cannot be used: ``str`` is the whole one-line message."""

    def __init__(self, path: str | Path, location: str, problem: str, more: int = 0) -> None:
        self.path, self.location, self.problem, self.more = str(path), location, problem, more
        text = f"{path}: " + (f"{location}: " if location else "") + problem
        super().__init__(text + (f" (and {more} more problem{'s' * (more > 1)})" if more else ""))


def _named(items: Any, index: int, kind: str) -> str:
    item = items[index] if isinstance(items, list) and 0 <= index < len(items) else None
    name = item.get("name") if isinstance(item, dict) else None
    return f"{kind} {name}" if isinstance(name, str) else f"{kind} #{index + 1}"


_PLACES = {"hosts": "host", "vms": "VM", "memory_changes": "memory change", "settings_changes": "settings change"}
_TAGS = {"steady", "idle", "diurnal", "bursty", "leak", "boot_storm", "batch", "trace"}


def where(data: Any, loc: tuple[int | str, ...]) -> tuple[str, str]:
    """(``host h1, VM web``, ``workload.level``): the named places of ``loc`` in the raw ``data``,
    and the field path that is left."""
    places: list[str] = []
    fields: list[str] = []
    node = data
    parts = list(loc)
    i = 0
    while i < len(parts):
        part = parts[i]
        following = parts[i + 1] if i + 1 < len(parts) else None
        if isinstance(part, str) and part in _PLACES and isinstance(following, int) and not fields:
            items = node.get(part) if isinstance(node, dict) else None
            places.append(_named(items, following, _PLACES[part]))
            node = items[following] if isinstance(items, list) and following < len(items) else None
            i += 2
            continue
        if not (isinstance(part, str) and part in _TAGS and fields and fields[-1] == "workload"):
            fields.append(str(part))  # the union's tag (workload kind) is left out
        node = node.get(part) if isinstance(node, dict) and isinstance(part, str) else None
        i += 1
    return ", ".join(places), ".".join(fields)


def _reason(message: str) -> str:
    message = message.removeprefix("Value error, ")
    return message[:1].lower() + message[1:]


def problem_text(field: str, value: Any, kind: str, message: str, context: dict[str, Any] | None = None) -> str:
    """``field=value: reason`` (or ``field: missing``) for one pydantic error."""
    reason = _reason(message)
    if kind == "union_tag_invalid" and context:
        key = str(context.get("discriminator", "kind")).strip("'")
        return f"{field}.{key}={context.get('tag')!r}: expected one of {context.get('expected_tags')}"
    if kind == "missing":
        return f"{field or 'value'}: missing"
    if kind == "extra_forbidden":
        return f"{field}={value!r}: not a known field (a typo?)"
    if kind == "value_error":
        # model validators already say "name=value must ...": split at the first "name=value "
        said = re.match(r"(\w+=\S+) (.*)", reason)
        if said:
            return f"{field + '.' if field else ''}{said[1]}: {said[2]}"
        return f"{field}: {reason}" if field else reason
    if isinstance(value, (dict, list)):
        return f"{field}: {reason}"
    return f"{field}={value!r}: {reason}" if field else reason


def scenario_error(path: str | Path, data: Any, error: ValidationError,
                   prefix: tuple[int | str, ...] = ()) -> ScenarioError:
    """The first problem of ``error`` (raised validating ``data``, the file's content, or a part
    of it at ``prefix``) as a ``ScenarioError``; the others are counted."""
    problems = error.errors(include_url=False)
    first = problems[0]
    location, field = where(data, prefix + tuple(first["loc"]))
    text = problem_text(field, first.get("input"), first["type"], first["msg"], first.get("ctx"))
    return ScenarioError(path, location, text, len(problems) - 1)
