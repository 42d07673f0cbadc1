"""The package's layout is its architecture: imports point one way (entry points -> pipeline, report ->
core), with no circles, and no module imports the package's own `__init__.py`.

Every import counts, at module level or inside a function: a lazy import still ties two modules.
"""
import ast
from pathlib import Path

import pytest

import stacked_ae

PACKAGE = Path(stacked_ae.__file__).resolve().parent
ENTRY_POINTS = {"__init__", "__main__", "cli", "encode", "estimators"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """The stacked_ae modules that `path` imports (`from . import x` resolved to the module x when it is one)."""
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "stacked_ae"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "stacked_ae":
                continue
            submodules = [f"{target}.{alias.name}" for alias in node.names if module_exists(f"{target}.{alias.name}")]
            found |= set(submodules) if submodules and len(submodules) == len(node.names) else {target}
    return found - {here}


def module_exists(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def import_graph() -> dict[str, set[str]]:
    return {module_name(path): imported_modules(path) for path in sorted(PACKAGE.rglob("*.py"))}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as a list of modules (first == last), or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_finds_a_circle_and_accepts_a_tree():
    """The checker itself: a two-module circle is found, a diamond is not a circle."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"d"}, "c": {"d"}, "d": set()}) is None


def test_no_import_circles():
    """No chain of imports inside stacked_ae leads back to where it started."""
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_top_level_holds_only_entry_points_and_three_parts():
    """stacked_ae/ holds the entry points and the core, pipeline and report subpackages, nothing else."""
    top = {p.stem for p in PACKAGE.glob("*.py")}
    subpackages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert top == ENTRY_POINTS, f"modules at the top level: {sorted(top - ENTRY_POINTS)} belong in a subpackage"
    assert subpackages == {"core", "pipeline", "report"}


@pytest.mark.parametrize("part, forbidden", [
    ("core", ("stacked_ae.pipeline", "stacked_ae.report", "stacked_ae.cli", "stacked_ae.encode",
              "stacked_ae.estimators")),
    ("pipeline", ("stacked_ae.report", "stacked_ae.cli", "stacked_ae.encode", "stacked_ae.estimators")),
    ("report", ("stacked_ae.pipeline.runner", "stacked_ae.pipeline.arms", "stacked_ae.pipeline.executors",
                "stacked_ae.cli", "stacked_ae.encode", "stacked_ae.estimators")),
])
def test_imports_point_one_way(part, forbidden):
    """core imports nothing else of the package; pipeline never imports report; report never the runner."""
    bad = {mod: sorted(dep for dep in deps if dep.startswith(forbidden))
           for mod, deps in import_graph().items() if mod.startswith(f"stacked_ae.{part}")}
    bad = {mod: deps for mod, deps in bad.items() if deps}
    assert not bad, f"{part}/ imports against the layout: {bad}"


def test_no_module_imports_the_package_init():
    """`from . import __version__` and friends run the package's __init__ from inside it: an arrow upward."""
    offenders = sorted(mod for mod, deps in import_graph().items() if "stacked_ae" in deps and mod != "stacked_ae")
    assert not offenders, f"modules importing stacked_ae/__init__.py: {offenders}"


def test_checker_sees_lazy_and_relative_imports(tmp_path, monkeypatch):
    """An import inside a function and a `from .. import` both count (they are how circles hide)."""
    pkg = tmp_path / "stacked_ae"
    (pkg / "core").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "core" / "__init__.py").write_text("")
    (pkg / "core" / "a.py").write_text("def f():\n    from .b import g\n")
    (pkg / "core" / "b.py").write_text("from .. import core\nfrom . import a\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", pkg)
    graph = import_graph()
    assert graph["stacked_ae.core.a"] == {"stacked_ae.core.b"}
    assert graph["stacked_ae.core.b"] == {"stacked_ae.core", "stacked_ae.core.a"}
    assert find_cycle(graph) == ["stacked_ae.core.a", "stacked_ae.core.b", "stacked_ae.core.a"]
