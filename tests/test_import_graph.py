"""effscope's modules import one another one way: no import cycle, except the registry's registration import.

Every `import` and `from ... import` statement counts, wherever it stands: at module level, inside a function
(a deferred import still ties the two modules together), under `if TYPE_CHECKING:`. Relative imports are resolved.
`from package import name` is an edge to `package.name` when that is a module, else to `package`. Importing a
submodule is an edge to that submodule only, not to the packages above it: a package's `__init__` re-exporting
its submodules' names is not a cycle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "effscope"

# The one known cycle, on purpose: `effscope.spec.blocks()` / `models()` import the block and model packages so
# that their modules run `register_block` / `register_model` (which live in effscope.spec) and fill the registries
# on first use; the packages cannot be imported first because `import effscope.spec` must stay free of torch.
# These two edges (each a function-level import in effscope/spec.py) are left out of the graph; any other cycle,
# including one through these modules, fails.
REGISTRATION_IMPORTS = {("effscope.spec", "effscope.blocks"), ("effscope.spec", "effscope.models")}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules_under(package: Path) -> dict[str, Path]:
    return {module_name(p, package.parent): p for p in sorted(package.rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules of `known` that the file imports, anywhere in it."""
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets: Iterable[str] = (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                here = name.split(".") if is_package else name.split(".")[:-1]
                base_parts = here[: len(here) - (node.level - 1)]
                base = ".".join([*base_parts, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            targets = (f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names)
        else:
            continue
        for target in targets:
            while target and target not in known:  # `import effscope.x.y` where only effscope.x exists
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    modules = modules_under(package)
    known = set(modules)
    return {name: imports_of(name, path, known) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each as one cycle through it."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_one_cycle(graph, set(c)) for c in components]


def _one_cycle(graph: dict[str, set[str]], comp: set[str]) -> list[str]:
    """A shortest cycle through the component's first module (breadth-first), for the failure message."""
    start = min(comp)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & comp):
                if w == start:
                    return [*paths[v], start]
                if w not in paths:
                    paths[w] = [*paths[v], w]
                    nxt.append(w)
        frontier = nxt
    return sorted(comp)


def test_no_import_cycle_except_the_registration_import():
    graph = import_graph()
    for a, b in REGISTRATION_IMPORTS:
        assert b in graph[a], f"{a} no longer imports {b}: drop the allowance in REGISTRATION_IMPORTS"
        graph[a] = graph[a] - {b}
    found = cycles(graph)
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(c) for c in found)


def test_the_registration_import_is_the_cycle_it_claims_to_be():
    """Without the allowance the registries form a cycle; the checker sees it (and so would see a new one)."""
    found = cycles(import_graph())
    spec_cycles = [c for c in found if "effscope.spec" in c]
    assert spec_cycles and any("effscope.blocks" in c for c in spec_cycles)


def test_the_checker_resolves_relative_and_function_level_imports(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .sub import b\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..a import x\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.sub.b\n")
    graph = import_graph(pkg)
    assert graph["pkg.a"] == {"pkg.sub.b"} and graph["pkg.sub.b"] == {"pkg.a"} and graph["pkg.c"] == {"pkg.sub.b"}
    assert cycles(graph) == [["pkg.a", "pkg.sub.b", "pkg.a"]]


def test_the_search_asks_models_for_their_blocks_instead_of_importing_block_families():
    """A model declares its block layout (`ImageModel.block_layout`); the search never imports a block family."""
    graph = import_graph()
    reaches = {
        (a, b)
        for a, targets in graph.items()
        if a.startswith("effscope.search")
        for b in targets
        if b.startswith(("effscope.blocks", "effscope.models"))
    }
    assert not reaches, f"the search imports block or model modules: {sorted(reaches)}"
