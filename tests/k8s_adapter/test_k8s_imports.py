"""The modules of infra/k8s depend on each other one way: no import cycle, not even one hidden
behind ``if TYPE_CHECKING`` (a cycle there still means two modules that each need the other)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "infra" / "k8s"


def imports_of(path: Path) -> set[str]:
    """The infra.k8s modules a file imports, wherever the import statement is."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "infra.k8s":
                found |= {f"infra.k8s.{alias.name}" for alias in node.names}
            elif node.module.startswith("infra.k8s."):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("infra.k8s.")}
    return found


def graph() -> dict[str, set[str]]:
    return {f"infra.k8s.{p.stem}": imports_of(p) for p in PACKAGE.glob("*.py")}


def cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the list of modules around it, or None."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = "open"
        path.append(module)
        for other in sorted(edges.get(module, ())):
            if state.get(other) == "open":
                return [*path[path.index(other) :], other]
            if other not in state and (found := visit(other)):
                return found
        path.pop()
        state[module] = "done"
        return None

    for module in sorted(edges):
        if module not in state and (found := visit(module)):
            return found
    return None


def test_infra_k8s_has_no_import_cycle() -> None:
    edges = graph()
    assert "infra.k8s.runtime" in edges and "infra.k8s.target" in edges
    found = cycle(edges)
    assert found is None, " -> ".join(found or [])


def test_the_cycle_finder_finds_a_cycle() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycle(edges) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) is None


def test_runtime_sits_on_top_and_the_target_below_the_driver() -> None:
    edges = graph()
    assert "infra.k8s.runtime" not in set().union(*edges.values())
    assert "infra.k8s.driver" not in edges["infra.k8s.target"]
