"""The package's layout rules, checked on the source: every module says its job in its first
docstring line and stays under 500 lines; aelab's modules import each other without a
circle (imports inside functions count); an import inside a function is for an optional or
heavy package and says so."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "aelab"
MODULES = sorted(p for p in SRC.rglob("*.py"))


def _name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(module: str, node: ast.ImportFrom, is_package: bool) -> list[str]:
    """The aelab modules an ``from X import a, b`` names (a name may be a submodule)."""
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[:len(base) - node.level + 1]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    if not target.startswith("aelab"):
        return []
    return [target] + [f"{target}.{a.name}" for a in node.names]


def _imports(path: Path) -> set[str]:
    """Every aelab module ``path`` imports, at module level or inside a function: an import
    put in a function to dodge a circle is still a circle of jobs."""
    module, tree = _name(path), ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            found.update(_resolve(module, node, path.name == "__init__.py"))
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("aelab"))
    known = {_name(p) for p in MODULES}
    return {m for m in found if m in known and m != module}


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_a_module_says_its_job_and_is_short(path):
    tree = ast.parse(path.read_text())
    doc = ast.get_docstring(tree)
    assert doc and doc.splitlines()[0].strip(), f"{path.name}: the first docstring line says the module's job"
    lines = len(path.read_text().splitlines())
    assert lines <= 500, f"{path.name} has {lines} lines: split it by job"


def test_no_import_circle():
    graph = {_name(p): _imports(p) for p in MODULES}
    # a package's __init__ importing its own submodules is not a circle of jobs
    for name, deps in graph.items():
        graph[name] = {d for d in deps if not (d.startswith(name + ".") and (SRC.parent / name.replace(".", "/")).is_dir())}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                circle = stack[stack.index(dep):] + [dep]
                pytest.fail("import circle: " + " -> ".join(circle))
            if dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def _says_why(lines: list[str], i: int) -> bool:
    """A comment on line ``i``, on a comment line just above it, or on an import line of the
    same block above it (one comment covers a group of imports)."""
    while i >= 0:
        line = lines[i].strip()
        if line.startswith("#") or "#" in line:
            return True
        if not line.startswith(("import ", "from ")):
            return False
        i -= 1
    return False


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_imports_inside_functions_say_why(path):
    """Imports inside a function only for optional or heavy packages, with a comment (on the
    line or the one above) saying which; never to dodge a circle."""
    lines = path.read_text().splitlines()
    tree = ast.parse("\n".join(lines))
    bare = []
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(fn):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                if not _says_why(lines, node.lineno - 1):
                    bare.append(f"{path.name}:{node.lineno}: {lines[node.lineno - 1].strip()}")
    assert not bare, "imports inside functions without a comment saying why:\n" + "\n".join(bare)
