"""The package's layout rules, read from the source: a thin CLI, no borrowed private names, imports at the
top, no import circles, a maths core that imports nothing else of initlab (docs/architecture.md)."""
import ast
from pathlib import Path

import pytest

SRC = Path(__file__).parent.parent / "src" / "initlab"
CLI_MAX_LINES = 700
PACKAGES = ("",)  # the whole package is held to the import rules below


def modules(packages=PACKAGES):
    """(dotted module name, path) of every module under the given packages of src/initlab ("" = all)."""
    for package in packages:
        for path in sorted((SRC / package).rglob("*.py")):
            parts = path.relative_to(SRC.parent).with_suffix("").parts
            yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path


def imported_from(name: str, path: Path, node: ast.ImportFrom) -> str:
    """The absolute module an ``ImportFrom`` reads (relative imports resolved against ``name``)."""
    if not node.level:
        return node.module or ""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    base = package[:len(package) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def private_imports(name: str, path: Path) -> list[str]:
    """``module._name`` for every ``_private`` name this module imports from another initlab module."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            source = imported_from(name, path, node)
            if source.split(".")[0] == "initlab" and source != name:
                found += [f"{source}.{a.name}" for a in node.names
                          if a.name.startswith("_") and not a.name.startswith("__")]
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("initlab.")
                      and any(p.startswith("_") and not p.startswith("__") for p in a.name.split("."))]
    return found


def function_level_imports(name: str, path: Path) -> list[str]:
    """``function: module`` for every initlab module imported inside a function body."""
    found = []
    for fn in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(fn):
                if isinstance(node, ast.ImportFrom) and imported_from(name, path, node).startswith("initlab"):
                    found.append(f"{fn.name}: {imported_from(name, path, node)}")
                elif isinstance(node, ast.Import):
                    found += [f"{fn.name}: {a.name}" for a in node.names if a.name.split(".")[0] == "initlab"]
    return found


def test_cli_is_thin():
    lines = {p.name: len(p.read_text().splitlines()) for p in sorted((SRC / "cli").glob("*.py"))}
    assert sum(lines.values()) <= CLI_MAX_LINES, lines


@pytest.mark.parametrize("name, path", list(modules()), ids=lambda v: v if isinstance(v, str) else "")
def test_no_private_names_imported_from_another_module(name, path):
    assert private_imports(name, path) == []


@pytest.mark.parametrize("name, path", list(modules()), ids=lambda v: v if isinstance(v, str) else "")
def test_no_initlab_imports_inside_functions(name, path):
    assert function_level_imports(name, path) == []


def test_the_scans_see_what_they_look_for(tmp_path):
    """Each scan finds its case (relative imports included), so the tests above cannot pass by seeing nothing."""
    pkg = tmp_path / "initlab" / "pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("from .a import _x\n")
    (pkg / "b.py").write_text("from initlab.other import _y, z\nimport initlab.c._d\n"
                              "def f():\n    from . import a\n    import initlab.e\n")
    assert private_imports("initlab.pkg", pkg / "__init__.py") == ["initlab.pkg.a._x"]
    assert private_imports("initlab.pkg.b", pkg / "b.py") == ["initlab.other._y", "initlab.c._d"]
    assert function_level_imports("initlab.pkg.b", pkg / "b.py") == ["f: initlab.pkg", "f: initlab.e"]


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The initlab modules ``name`` imports: ``from P import m`` with ``m`` a module of ``P`` is an import of
    ``P.m`` (not of the package face ``P``, which only hands names on); ``from P import x`` of ``P``."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            source = imported_from(name, path, node)
            if source.split(".")[0] == "initlab":
                for a in node.names:
                    out.add(f"{source}.{a.name}" if f"{source}.{a.name}" in known else source)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "initlab")
    return out & known - {name}


def import_graph() -> dict[str, set[str]]:
    mods = dict(modules(("",)))
    return {name: imports_of(name, path, set(mods)) for name, path in mods.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_circles():
    assert circles(import_graph()) == []


def test_the_maths_core_imports_nothing_else_of_initlab():
    graph = import_graph()
    outside = {n: sorted(m for m in deps if not m.startswith("initlab.core")) for n, deps in graph.items()
               if n.startswith("initlab.core")}
    assert {n: deps for n, deps in outside.items() if deps} == {}


def test_the_circle_scan_finds_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


# docs/architecture.md's layers, lowest first; a module may import its own layer and those below it
LAYERS = (
    ("core",),
    ("version", "data", "store"),
    ("graph",),
    ("schemes",),
    ("models",),
    ("training",),
    ("analysis", "plots"),
    ("experiments",),
    ("claims", "trackers"),
    ("report",),
    ("cli",),
    ("",),  # initlab/__init__.py, the public API
)


def layer_of(module: str) -> int:
    part = module.split(".")[1] if module.count(".") else ""
    return next(i for i, names in enumerate(LAYERS) if part in names)


def test_imports_flow_down_the_layers():
    upward = {f"{n} -> {m}" for n, deps in import_graph().items() for m in deps if layer_of(m) > layer_of(n)}
    assert upward == set()
