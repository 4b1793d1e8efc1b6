"""The shape of ``streams/``: no module over 400 lines, and no import circle between its modules.

Imports are read with ``ast`` from every statement, those inside functions too (a lazy import
still makes a circle, it only hides it until the call). ``from P import x`` counts as importing
``P.x`` when that is a module of ``streams``, else ``P``. The parents a submodule import
initialises first (``streams.cli`` for ``streams.cli.parser``) are not edges of their own.
"""

from __future__ import annotations

import ast
from pathlib import Path

STREAMS = Path(__file__).resolve().parents[2] / "streams"
MAX_LINES = 400


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(STREAMS.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(STREAMS.rglob("*.py"))}


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The ``streams`` modules that ``name`` (at ``path``) imports anywhere in its code."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            targets = [f"{origin}.{alias.name}" if f"{origin}.{alias.name}" in modules else origin
                       for alias in node.names]
        else:
            continue
        found.update(t for t in targets if t in modules and t != name)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle for each strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_streams_module_is_over_400_lines() -> None:
    long = {str(path.relative_to(STREAMS.parent)): n for path in STREAMS.rglob("*.py")
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"split these modules (over {MAX_LINES} lines): {long}"


def test_streams_imports_have_no_circle() -> None:
    graph = _graph()
    assert not _cycles(graph), f"import circles in streams/: {_cycles(graph)}"


def test_the_import_graph_sees_relative_lazy_and_absolute_imports() -> None:
    graph = _graph()
    assert "streams.telemetry.jsonl" in graph["streams.telemetry.sink"]  # from .jsonl import ...
    assert "streams.worker.app" in graph["streams.cli.live"]  # from ..worker.app import, in a function
    assert "streams.telemetry.sink" in graph["streams.telemetry.agent"]  # lazy, in agent_main
    assert "streams.cli" in graph["streams.cli.__main__"]  # from . import main


def test_the_circle_finder_finds_circles() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
