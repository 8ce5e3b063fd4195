"""The layout of the tree: test modules have unique basenames (the tests folders are not
packages, so pytest imports each module by its basename and two of one name collide), and
decaffe's import graph has no cycles and keeps its rooms apart (docs/architecture.md)."""

import ast
import collections
import functools
import os

ROOT = os.path.dirname(os.path.abspath(__file__))


def test_test_module_names_are_unique():
    names = collections.Counter(
        f for d, _s, files in os.walk(ROOT) if "golden" not in d and "models" not in d
        for f in files if f.startswith("test_") and f.endswith(".py"))
    assert [n for n, c in names.items() if c > 1] == []


# ----------------------------------------------------------------------------------------------
# The import graph of decaffe/ and caffe/
# ----------------------------------------------------------------------------------------------
# An edge A -> B when A's source names B in an import statement at any depth (module level,
# inside functions, under TYPE_CHECKING): `import P.m` names P.m; `from P import n` names the
# module P.n when there is one, else P (the package's __init__, whose own imports are its
# edges: re-exports count). The parent packages Python runs before a submodule are not edges
# of their own. A cycle is a set of modules each reaching the others along edges.
REPO = os.path.dirname(ROOT)
ENGINE = ("decaffe.net", "decaffe.net_args", "decaffe.blob", "decaffe.layer", "decaffe.layers",
          "decaffe.solvers", "decaffe.formats", "decaffe.data", "decaffe.sync_bn")
ABOVE_ENGINE = ("decaffe.pycaffe", "decaffe.cli", "decaffe.export", "decaffe.distributed",
                "decaffe.dashboard")


def _modules() -> dict[str, str]:
    out = {}
    for pkg in ("decaffe", "caffe"):
        for d, _s, files in os.walk(os.path.join(REPO, pkg)):
            for f in files:
                if f.endswith(".py"):
                    path = os.path.join(d, f)
                    name = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")
                    out[name.removesuffix(".__init__")] = path
    return out


def _imports(name: str, path: str, modules: dict[str, str]):
    """(imported module, line, node) for each decaffe/caffe module an import names."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = ".".join(base[:len(base) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in modules else module
                       for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in modules:
                t = t.rpartition(".")[0]
            if t and t != name:
                yield t, node.lineno, node


@functools.lru_cache(maxsize=1)
def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {m: {t for t, _l, _n in _imports(m, p, modules)} for m, p in modules.items()}


def _under(module: str, roots) -> bool:
    return any(module == r or module.startswith(r + ".") for r in roots)


def _reach(graph: dict[str, set[str]], start: str) -> dict[str, str]:
    """Every module start imports transitively, each with the module that imports it."""
    seen, todo = {}, [start]
    while todo:
        m = todo.pop()
        for t in graph[m]:
            if t not in seen and t != start:
                seen[t] = m
                todo.append(t)
    return seen


def _path(seen: dict[str, str], start: str, end: str) -> str:
    chain = [end]
    while chain[-1] != start:
        chain.append(seen[chain[-1]])
    return " -> ".join(reversed(chain))


def test_the_graph_sees_imports_at_every_depth():
    graph = _graph()
    assert "decaffe.mode" in graph["decaffe"]
    assert "decaffe.formats.weights" in graph["decaffe.net"]
    # an import inside a function (cli verbs load the engine after parsing their flags)
    assert "decaffe.net" in graph["decaffe.cli.test"]
    # `from . import x` names the submodule; `from .pkg import name` the package
    assert "decaffe.layers.forks" in graph["decaffe.layers"]
    assert "decaffe.export.registry" in graph["decaffe.export.graph"]


def test_no_import_cycles():
    graph = _graph()
    cycles = []
    for m in sorted(graph):
        seen = _reach(graph, m)
        back = sorted(t for t in seen if m in graph[t])
        if back:
            cycles.append(_path(seen, m, back[0]) + f" -> {m}")
    assert cycles == []


def test_the_engine_imports_nothing_above_it():
    graph = _graph()
    bad = []
    for m in sorted(graph):
        if _under(m, ENGINE):
            seen = _reach(graph, m)
            bad += [_path(seen, m, t) for t in sorted(seen) if _under(t, ABOVE_ENGINE)]
    assert bad == []


def test_distributed_does_not_import_the_command_line():
    graph = _graph()
    bad = []
    for m in sorted(graph):
        if _under(m, ("decaffe.distributed",)):
            seen = _reach(graph, m)
            bad += [_path(seen, m, t) for t in sorted(seen) if _under(t, ("decaffe.cli",))]
    assert bad == []


def test_the_export_registry_imports_no_exporter():
    seen = _reach(_graph(), "decaffe.export.registry")
    assert [t for t in seen if _under(t, ("decaffe.export",))] == []


def test_imports_inside_functions_say_why():
    """An import inside a function carries a comment (on its line, or on the comment lines
    right above its group of imports) naming the heavy or optional dependency it defers."""
    modules = _modules()
    bare = []
    for path in sorted(modules.values()):
        lines = open(path, encoding="utf-8").read().splitlines()
        tree = ast.parse("\n".join(lines), path)
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if not isinstance(node, (ast.Import, ast.ImportFrom)):
                    continue
                if any("#" in lines[i] for i in range(node.lineno - 1, node.end_lineno)):
                    continue
                i = node.lineno - 2
                while i >= 0 and lines[i].strip().startswith(("import ", "from ")):
                    i -= 1
                if i >= 0 and lines[i].strip().startswith("#"):
                    continue
                bare.append(f"{os.path.relpath(path, REPO)}:{node.lineno}")
    assert bare == []
