"""The modules of meshctl's compose adapter depend one way (no engine needed): the runtime
uses the rollouts, the rollouts the target, the target the fleet, never back; as on the local
runtime, whose fleet knows nothing of the rollouts and the autoscaler that drive it. Before,
runtime.py, rollouts.py and target.py imported each other in a circle."""

from __future__ import annotations

import ast
from pathlib import Path

from compose_support import ROOT

PACKAGE = ROOT / "infra" / "compose"


def imports_of(path: Path) -> set[str]:
    """The infra.compose modules a module imports, at any level (TYPE_CHECKING included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "infra.compose":
                found |= {alias.name for alias in node.names}
            elif node.module.startswith("infra.compose."):
                found.add(node.module.removeprefix("infra.compose.").split(".")[0])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("infra.compose."):
                    found.add(alias.name.removeprefix("infra.compose.").split(".")[0])
    return found


def graph() -> dict[str, set[str]]:
    return {p.stem: imports_of(p) - {p.stem} for p in PACKAGE.glob("*.py") if p.stem != "__init__"}


def test_the_adapter_has_no_import_cycle() -> None:
    edges = graph()
    visiting: list[str] = []
    done: set[str] = set()

    def visit(module: str) -> None:
        assert module not in visiting, " -> ".join([*visiting, module])
        if module in done:
            return
        visiting.append(module)
        for target in sorted(edges.get(module, set())):
            visit(target)
        visiting.pop()
        done.add(module)

    for module in sorted(edges):
        visit(module)


def test_below_the_runtime_nothing_imports_it() -> None:
    edges = graph()
    for module in ("target", "rollouts", "fleet", "store", "versions", "project", "autoscaler"):
        assert "runtime" not in edges[module], f"{module} imports runtime"
    assert "rollouts" not in edges["target"] and "target" in edges["rollouts"]
    assert "fleet" in edges["target"]
