"""The package's shape, read from the source with `ast`: every import (inside functions too) goes down a
layer or stays within one, and no module imports itself back through others.

    red_api            the Federation API: imports nothing of Red's
    red_runtime root   stdlib-only helpers (strict_json, files)
    learn < engine < report < tune < apps
    red_operator       imports only red_api

A failure names the import and the line, so a new module lands in the layer its imports put it in.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
SOURCES = {"red_api": ROOT / "api", "red_runtime": ROOT / "runtime", "red_operator": ROOT / "operator"}
LAYERS = ["red_api", "red_runtime", "learn", "engine", "report", "tune", "apps"]
# Red's own modules that may sit directly in runtime/red_runtime (a handful, below every layer).
ROOT_MODULES = {"__init__", "strict_json", "files"}


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported module (the deepest name that is a module of Red's)
    line: int
    deferred: bool  # inside a function


def modules() -> dict[str, Path]:
    found = {}
    for package, base in SOURCES.items():
        for path in (base / package).rglob("*.py"):
            parts = path.relative_to(base).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = modules()


def _resolve(name: str) -> str | None:
    """The longest prefix of `name` that is one of Red's modules."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str) -> list[Import]:
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    functions = [f for f in ast.walk(tree) if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)]
    inner = {id(n) for f in functions for n in ast.walk(f)}
    # `if TYPE_CHECKING:` imports are for annotations only: they run under a type checker, never at run time.
    checking = [g for g in ast.walk(tree) if isinstance(g, ast.If) and "TYPE_CHECKING" in ast.unparse(g.test)]
    typing_only = {id(n) for g in checking for n in ast.walk(g)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            names = [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        if id(node) in typing_only:
            continue
        for name in names:
            target = _resolve(name)
            if target and target != module:
                found.append(Import(module, target, node.lineno, id(node) in inner))
    return found


ALL_IMPORTS = [imp for module in sorted(MODULES) for imp in imports_of(module)]


def layer(module: str) -> int:
    """The rank of `module`'s layer in LAYERS; red_operator sits beside red_runtime's apps."""
    parts = module.split(".")
    if parts[0] == "red_operator":
        return LAYERS.index("apps")
    if parts[0] == "red_api":
        return 0
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else LAYERS.index("red_runtime")


def test_the_walk_sees_red_and_its_imports():
    """The walk finds every package and the imports that tie them, inside functions too (or every other
    test here would pass on nothing)."""
    assert {"red_api.spec", "red_runtime.engine.driver", "red_runtime.apps.cli", "red_operator.reconcile"} <= set(
        MODULES
    )
    assert Import("red_runtime.apps.launch", "red_runtime.engine.driver", 0, True) in {
        Import(i.source, i.target, 0, i.deferred) for i in ALL_IMPORTS
    }
    assert any(i.target.startswith("red_runtime.learn") for i in ALL_IMPORTS if i.source == "red_runtime.engine.node")


def test_no_import_goes_up_a_layer():
    upward = [
        f"{i.source}:{i.line} imports {i.target}"
        for i in ALL_IMPORTS
        if layer(i.target) > layer(i.source)
        or (i.source.startswith("red_operator") and not i.target.startswith(("red_api", "red_operator")))
    ]
    assert not upward, "imports that go up a layer (or from the operator into the runtime):\n" + "\n".join(upward)


def test_no_import_circles():
    graph: dict[str, set[str]] = {}
    for i in ALL_IMPORTS:
        graph.setdefault(i.source, set()).add(i.target)
    circles, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                circles.append(" -> ".join([*path[path.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not circles, "import circles:\n" + "\n".join(circles)


def import_block(path: Path, line: int) -> list[str]:
    """The run of import lines around `line` (1-based), with the comments above them and across the blank lines
    that separate their groups."""
    lines = path.read_text().splitlines()

    def part(text: str) -> bool:
        return text.strip().startswith(("import ", "from ", "#")) or not text.strip()

    start, end = line - 1, line
    while start > 0 and part(lines[start - 1]):
        start -= 1
    while end < len(lines) and part(lines[end]):
        end += 1
    return lines[start:end]


def test_red_imports_inside_functions_say_why():
    """An import of Red's own module inside a function defers something heavy on purpose (torch, Ray,
    kopf) and says so: a `# deferred: ...` comment in its block of imports."""
    unexplained = []
    for i in ALL_IMPORTS:
        if i.deferred and not any("# deferred" in line for line in import_block(MODULES[i.source], i.line)):
            unexplained.append(f"{i.source}:{i.line} imports {i.target}")
    assert not unexplained, "imports inside functions without a '# deferred: why' comment:\n" + "\n".join(unexplained)


def test_learn_needs_no_ray_and_the_root_holds_a_handful():
    ray_in_learn = []
    for module, path in MODULES.items():
        if module.startswith("red_runtime.learn"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
                names += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                ray_in_learn += [f"{module}:{node.lineno}" for n in names if n.split(".")[0] == "ray"]
    assert not ray_in_learn, f"learn/ runs without Ray, but these import it: {ray_in_learn}"
    direct = {p.stem for p in (SOURCES["red_runtime"] / "red_runtime").glob("*.py")}
    assert direct == ROOT_MODULES, f"runtime/red_runtime/ holds {sorted(direct)}: new modules belong in a layer"
