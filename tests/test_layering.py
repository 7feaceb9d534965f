"""The package layers: no import cycle between subpackages (any import, lazy ones inside functions included) and a
bottom layer, ``nerfseg_plugin.core``, that imports no other part of the plugin."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = "nerfseg_plugin"
ROOT = Path(__file__).resolve().parents[1]
SOURCES = {PACKAGE: ROOT / PACKAGE, f"{PACKAGE}.method_configs": ROOT / "method_configs"}


def _modules() -> dict[str, Path]:
    """Dotted name -> file for every module of the plugin (method_configs installs as nerfseg_plugin.method_configs)."""
    modules = {}
    for prefix, folder in SOURCES.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            modules[".".join((prefix, *parts)).removesuffix(".__init__")] = path
    return modules


def _unit(module: str) -> str:
    """The layering unit of a module: its subpackage, or the module itself at the package root."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else PACKAGE


def imported_modules(module: str, path: Path) -> set[str]:
    """Every plugin module ``module`` imports anywhere in its file (top level, functions, TYPE_CHECKING blocks)."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)  # ``from pkg import submodule``
    return {name for name in found if name == PACKAGE or name.startswith(f"{PACKAGE}.")}


def unit_graph() -> dict[str, dict[str, list[str]]]:
    """unit -> imported unit -> the modules that make the edge."""
    modules = _modules()
    graph: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for module, path in modules.items():
        for target in imported_modules(module, path):
            if target == PACKAGE or target.count(".") == 0:
                continue
            source, imported = _unit(module), _unit(target)
            if source != imported and not (source == PACKAGE and module == PACKAGE):
                graph[source][imported].append(module)
    return graph


def find_cycle(graph: dict[str, dict[str, list[str]]]) -> list[str] | None:
    """A cycle of units as a path (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for successor in sorted(graph.get(node, {})):
            if state.get(successor) == 1:
                return stack[stack.index(successor) :] + [successor]
            if successor not in state:
                cycle = visit(successor)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_parser_sees_lazy_and_relative_imports(tmp_path: Path) -> None:
    source = tmp_path / "mod.py"
    source.write_text(
        "from . import sibling\n"
        "def f():\n    from nerfseg_plugin.data.dataset import RssegDataset\n"
        "if True:\n    import nerfseg_plugin.semantics.metrics\n"
    )
    found = imported_modules("nerfseg_plugin.core.mod", source)
    assert {"nerfseg_plugin.core.sibling", "nerfseg_plugin.data.dataset", "nerfseg_plugin.semantics.metrics"} <= found


def test_cycle_detection_finds_an_indirect_cycle() -> None:
    graph = {"a": {"b": ["m"]}, "b": {"c": ["m"]}, "c": {"a": ["m"]}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b": ["m"]}, "b": {}}) is None


def test_no_import_cycle_between_subpackages() -> None:
    graph = unit_graph()
    cycle = find_cycle(graph)
    if cycle:
        pairs = zip(cycle[:-1], cycle[1:], strict=True)
        edges = [f"{a} -> {b} (in {', '.join(sorted(set(graph[a][b])))})" for a, b in pairs]
        raise AssertionError("import cycle between subpackages:\n  " + "\n  ".join(edges))


def test_core_imports_no_other_part_of_the_plugin() -> None:
    assert "core" in {_unit(module) for module in _modules()}
    leaks = {unit: modules for unit, modules in unit_graph().get("core", {}).items()}
    assert not leaks, f"nerfseg_plugin.core imports {leaks}"


LAYERS = [
    {"core", "compat"},
    {"data"},
    {"semantics"},
    {"pseudolabels", "appearance"},  # supervision sources the models and the viewer use
    {"interactive"},
    {"viewer"},
    {"splat", "nerf"},
    {"pipeline", "evaluation", "export", "baselines", "geo", "planning", "process", "scenegen", "blocks"},
    {"method_configs"},
]
"""The order README's "Code layout" describes; the last layers hold tools that may use each other (acyclically)."""
TOOLS = LAYERS[-2]


def test_every_import_points_down_the_layers() -> None:
    level = {unit: index for index, units in enumerate(LAYERS) for unit in units}
    graph = unit_graph()
    units = {_unit(module) for module in _modules()} - {PACKAGE}
    assert units == set(level), f"units without a layer: {sorted(units - set(level))}"
    upward = [
        f"{source} -> {target} (in {', '.join(sorted(set(modules)))})"
        for source, targets in graph.items()
        for target, modules in targets.items()
        if level[target] > level[source] or (level[target] == level[source] and source not in TOOLS)
    ]
    assert not upward, "imports against the layer order:\n  " + "\n  ".join(upward)
