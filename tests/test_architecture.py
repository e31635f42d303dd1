"""The house rules (the design card's) that code can check: no import cycle among mxquant's
modules, no core module reaching up into the face (`mxquant/__init__.py`), the core never
importing the tooling (cli/, checkpoint/, conformance/, evaluate/), MXQUANT_* variables read only in
selection.py / plugins.py, and no module over 400 lines."""

import ast
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
PKG = ROOT / "mxquant"
TOOLING = ("mxquant.cli", "mxquant.checkpoint", "mxquant.conformance", "mxquant.evaluate")


def _modules():
    for path in sorted(PKG.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        yield name, path


KNOWN = set()


def _imports(name: str, path: pathlib.Path) -> set:
    """mxquant modules `path` imports (module level and inside functions alike)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("mxquant")}
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("mxquant"):
                subs = {f"{target}.{a.name}" for a in node.names}
                found |= subs  # `from . import plugins` imports a submodule, not the package's names
                if not subs <= KNOWN:
                    found.add(target)
    return found


MODULES = dict(_modules())
KNOWN |= set(MODULES)
GRAPH = {name: {m for m in _imports(name, path) if m in MODULES and m != name} for name, path in MODULES.items()}


def test_no_core_module_imports_the_face():
    # cli/ and checkpoint/ are built on the public API, so they may use it by its public name
    upward = {name: deps for name, deps in GRAPH.items()
              if name != "mxquant" and not name.startswith(TOOLING) and "mxquant" in deps}
    assert not upward, f"modules importing mxquant/__init__.py: {upward}"


def test_core_never_imports_the_tooling():
    core = [n for n in GRAPH if not n.startswith(TOOLING) and n not in ("mxquant", "mxquant.__main__")]
    bad = {n: sorted(d for d in GRAPH[n] if d.startswith(TOOLING)) for n in core}
    assert not {n: d for n, d in bad.items() if d}


def test_no_import_cycle():
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for dep in sorted(GRAPH[node]):
            if state.get(dep) == "open":
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = "done"

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [name])
    assert not cycles, cycles


def test_environment_variables_have_one_home():
    readers = {}
    for name, path in MODULES.items():
        for var in re.findall(r"[\"'](MXQUANT_[A-Z_]+)[\"']", path.read_text()):
            readers.setdefault(var, set()).add(name)
    assert readers, "no MXQUANT_* variable found: the scan is broken"
    homes = {"mxquant.selection", "mxquant.plugins"}
    assert all(names <= homes for names in readers.values()), readers


def test_no_module_over_400_lines():
    paths = list(PKG.rglob("*.py")) + list((ROOT / "backends").rglob("*.py"))
    long = {str(p.relative_to(ROOT)): n for p in paths if (n := len(p.read_text().splitlines())) > 400}
    assert not long, long
