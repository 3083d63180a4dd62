"""The package's import layering is a checked contract (ARCHITECTURE.md, "Layers").

Every module of kdpose_tf is parsed with `ast` (nothing is imported) and each `import` / `from ... import`
of a kdpose_tf module, at module level or inside a function, is an edge of the import graph. The tests
fail on an edge that runs up the layers, on a cycle between modules, on a module placed in no layer, and
on more than MAX_FUNCTION_IMPORTS function-level imports outside `cli/` or one without a reason comment on
its line. Each failure prints the offending edges as `importer -> imported (file:line)`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "kdpose_tf"

# Lowest first: a module may import its own layer and the layers before it.
LAYERS = ["utils", "keypoints", "codecs", "data", "runtimes", "models", "export", "distillation", "training",
          "cli"]

# Module (or package prefix) -> layer; the longest matching prefix decides.
PLACEMENT = {
    "kdpose_tf.utils": "utils",
    "kdpose_tf.errors": "utils",
    "kdpose_tf.version": "utils",
    "kdpose_tf.keypoints": "keypoints",
    "kdpose_tf.visualization": "keypoints",   # draws a KeypointSet's skeleton; numpy + utils.io only
    "kdpose_tf.codecs": "codecs",
    "kdpose_tf.data": "data",
    "kdpose_tf.metrics": "data",              # PCK / OKS AP over samples and predictions
    "kdpose_tf.evaluation": "data",           # crop -> predict_fn -> decode -> metrics; takes any predict_fn
    "kdpose_tf.tracking": "data",             # crops and filters over joint arrays (numpy only)
    "kdpose_tf.runtimes": "runtimes",
    "kdpose_tf.models": "models",
    "kdpose_tf.pipeline": "models",           # a runtimes/ detector feeding a PoseEstimator
    "kdpose_tf.export": "export",
    "kdpose_tf.distillation": "distillation",
    "kdpose_tf.training": "training",
    "kdpose_tf.training_probe": "training",  # the linear probe of new joints before fine-tuning
    "kdpose_tf.training_dwpose": "training",  # DWPose's two stages as fit_resumable runs
    "kdpose_tf.cli": "cli",
    "kdpose_tf": "cli",                       # the package facade (kdpose_tf/__init__.py) re-exports the top
}

MAX_FUNCTION_IMPORTS = 15


def _modules(package_dir):
    """{dotted module name: path} for every .py file of the package (a package is its __init__)."""
    modules = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


class _ImportCollector(ast.NodeVisitor):
    """(imported name, line, inside a function) for every import statement of one module."""

    def __init__(self, module, is_package):
        self.module, self.is_package = module, is_package
        self.depth = 0
        self.found = []

    def _function(self, node):
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def visit_Import(self, node):
        for alias in node.names:
            self.found.append((alias.name, node.lineno, self.depth > 0))

    def visit_ImportFrom(self, node):
        if node.level:
            base = self.module.split(".")
            if not self.is_package:
                base = base[:-1]
            base = base[:len(base) - node.level + 1]
            source = ".".join(base + ([node.module] if node.module else []))
        else:
            source = node.module or ""
        # `from pkg import sub` imports the submodule pkg.sub; `from mod import name` imports mod.
        for alias in node.names:
            self.found.append((f"{source}.{alias.name}", node.lineno, self.depth > 0, source))


def _edges(package_dir=PACKAGE_DIR):
    """[(importer, imported, path, line, function_level)] over the kdpose_tf modules, self-imports dropped;
    path is relative to the package's parent folder."""
    modules = _modules(package_dir)
    edges = []
    for module, path in modules.items():
        collector = _ImportCollector(module, path.name == "__init__.py")
        collector.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        for found in collector.found:
            name, line, in_function = found[:3]
            if name not in modules and len(found) == 4:
                name = found[3]
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name.startswith("kdpose_tf") and name != module:
                edges.append((module, name, path.relative_to(package_dir.parent), line, in_function))
    return modules, edges


def _layer(module):
    prefixes = [p for p in PLACEMENT if module == p or module.startswith(p + ".")]
    return PLACEMENT[max(prefixes, key=len)] if prefixes else None


def _show(edge):
    importer, imported, path, line, in_function = edge
    where = f"{path}:{line}"
    return (f"{importer} ({_layer(importer)}) -> {imported} ({_layer(imported)})  {where}"
            + ("  [in a function]" if in_function else ""))


def _cycles(modules, edges):
    """Strongly connected components of more than one module (Tarjan), each as its sorted module list."""
    graph = {m: sorted({e[1] for e in edges if e[0] == m}) for m in modules}
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for module in modules:
        if module not in index:
            visit(module)
    return components


def test_every_module_has_a_layer():
    modules, _ = _edges()
    unplaced = [m for m in modules if _layer(m) is None]
    if unplaced:
        pytest.fail("modules in no layer (add them to PLACEMENT and ARCHITECTURE.md): " + ", ".join(unplaced))


def test_no_upward_import():
    _, edges = _edges()
    upward = [e for e in edges if LAYERS.index(_layer(e[0])) < LAYERS.index(_layer(e[1]))]
    print(f"{len(upward)} upward imports")
    if upward:
        pytest.fail(f"{len(upward)} imports run up the layers:\n" + "\n".join(map(_show, upward)))


def test_no_import_cycle():
    modules, edges = _edges()
    components = _cycles(modules, edges)
    print(f"{len(components)} import cycles")
    lines = []
    for component in components:
        members = set(component)
        lines.append("cycle: " + ", ".join(component))
        lines += ["  " + _show(e) for e in edges if e[0] in members and e[1] in members]
    if components:
        pytest.fail(f"{len(components)} import cycles:\n" + "\n".join(lines))


def test_few_function_level_imports_each_with_a_reason():
    _, edges = _edges()
    outside_cli = sorted({e for e in edges if e[4] and _layer(e[0]) != "cli"}, key=lambda e: (str(e[2]), e[3]))
    statements = sorted({(e[2], e[3]) for e in outside_cli})
    print(f"{len(statements)} function-level kdpose_tf imports outside cli/")
    unexplained = [e for e in outside_cli
                   if "#" not in (PACKAGE_DIR.parent / e[2]).read_text(encoding="utf-8").splitlines()[e[3] - 1]]
    if len(statements) > MAX_FUNCTION_IMPORTS:
        pytest.fail(f"{len(statements)} function-level kdpose_tf imports outside cli/ (at most "
                    f"{MAX_FUNCTION_IMPORTS}):\n" + "\n".join(map(_show, outside_cli)))
    if unexplained:
        pytest.fail("function-level imports without a reason comment on their line:\n"
                    + "\n".join(map(_show, unexplained)))


def test_the_check_sees_upward_function_level_imports_and_cycles(tmp_path):
    """The collector itself: a function-level upward import and a two-module cycle in a made-up package."""
    package = tmp_path / "kdpose_tf"
    (package / "data").mkdir(parents=True)
    (package / "models").mkdir()
    (package / "__init__.py").write_text("")
    (package / "data" / "__init__.py").write_text("")
    (package / "models" / "__init__.py").write_text("")
    (package / "data" / "a.py").write_text("def f():\n    from kdpose_tf.models import b  # lazy\n")
    (package / "models" / "b.py").write_text("from kdpose_tf.models.c import x\n")
    (package / "models" / "c.py").write_text("from . import b\nx = 1\n")
    modules, edges = _edges(package)
    pairs = {(e[0], e[1], e[4]) for e in edges}
    assert ("kdpose_tf.data.a", "kdpose_tf.models.b", True) in pairs
    assert ("kdpose_tf.models.c", "kdpose_tf.models.b", False) in pairs
    assert _cycles(modules, edges) == [["kdpose_tf.models.b", "kdpose_tf.models.c"]]
