"""The package's import structure: no import cycle between fastrnn's modules (at module level or
inside functions), and every module importable on its own and in any order."""
from __future__ import annotations

import ast
import concurrent.futures
import os
import subprocess
import sys
from pathlib import Path

PKG_DIR = Path(__file__).resolve().parents[1] / "python" / "fastrnn"
PYTHON_DIR = PKG_DIR.parent


# the compiled extensions (imported by fastrnn.backend): leaves of the graph, built or not
EXTENSIONS = ("fastrnn._core", "fastrnn._cuda")


def _module_names():
    """{dotted module name: path} for every .py file of the package (None for the extensions)."""
    out = dict.fromkeys(EXTENSIONS)
    for path in sorted(PKG_DIR.rglob("*.py")):
        rel = path.relative_to(PYTHON_DIR).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _is_package(name, modules):
    return modules[name] is not None and modules[name].name == "__init__.py"


def _resolve(name, modules):
    """The module an import of ``name`` loads last: ``name`` itself if it is a module of the package,
    else None (a name outside the package)."""
    return name if name in modules else None


def import_edges(modules=None):
    """{module: set of modules it imports}, from every import statement anywhere in its source
    (module level and inside functions; relative and absolute). ``from P import x`` is an edge to
    the submodule P.x when there is one, else to P itself. A package's __init__ importing its own
    submodules is an ordinary edge; a submodule importing its package's __init__ is one too."""
    modules = modules or _module_names()
    edges = {}
    for mod, path in modules.items():
        if path is None:
            edges[mod] = set()
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        package = mod if _is_package(mod, modules) else mod.rpartition(".")[0]
        targets = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if _resolve(alias.name, modules):
                        targets.add(alias.name)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[:len(base) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                if source not in modules:
                    continue
                for alias in node.names:
                    sub = f"{source}.{alias.name}"
                    targets.add(sub if sub in modules else source)
        targets.discard(mod)
        edges[mod] = targets
    return edges


def find_cycle(edges):
    """One cycle as a list [a, b, ..., a], or None."""
    WHITE, GREY, BLACK = 0, 1, 2
    color = {m: WHITE for m in edges}
    stack = []

    def visit(m):
        color[m] = GREY
        stack.append(m)
        for n in sorted(edges.get(m, ())):
            if color.get(n, BLACK) == GREY:
                return stack[stack.index(n):] + [n]
            if color.get(n) == WHITE:
                found = visit(n)
                if found:
                    return found
        stack.pop()
        color[m] = BLACK
        return None

    for m in sorted(edges):
        if color[m] == WHITE:
            found = visit(m)
            if found:
                return found
    return None


def test_the_graph_sees_every_kind_of_import():
    edges = import_edges()
    assert "fastrnn.layers.base" in edges["fastrnn.layers.core"]           # from .base import ...
    assert "fastrnn.ops" in edges["fastrnn.layers.core"]                   # from .. import ops
    assert "fastrnn.layers" in edges["fastrnn"]                            # package -> own submodule
    assert "fastrnn.reference._common" in edges["fastrnn.layers.base"]     # from ..reference._common import
    assert "fastrnn.backend" in edges["fastrnn._bench"]                    # inside a function
    assert "fastrnn" in edges["fastrnn._bench"]                            # import fastrnn (absolute)
    assert "fastrnn._core" in edges["fastrnn.backend"]                     # an extension, a leaf


def test_find_cycle_reports_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle():
    cycle = find_cycle(import_edges())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def _run(code):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(PYTHON_DIR)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


def _importable():
    return sorted(m for m in _module_names() if m not in EXTENSIONS)  # __main__ runs only as __main__


def test_every_module_imports_alone_in_a_fresh_interpreter():
    # one interpreter per module (importing fastrnn.X runs fastrnn/__init__ first, so this checks
    # that no module depends on what __init__ happened to import before it)
    names = _importable()
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda n: _run(f"import importlib; importlib.import_module({n!r})"), names))
    failures = [f"{n}:\n{r.stderr[-2000:]}" for n, r in zip(names, results) if r.returncode != 0]
    assert not failures, "\n".join(failures)


def test_every_module_imports_in_reverse_alphabetical_order():
    names = _importable()[::-1]
    r = _run("import importlib\n" + "".join(f"importlib.import_module({n!r})\n" for n in names))
    assert r.returncode == 0, r.stderr[-3000:]


def test_importing_fastrnn_and_distributed_does_not_import_mpi4py():
    # fastrnn.distributed imports mpi4py in init() only
    r = _run("import sys, fastrnn, fastrnn.distributed\n"
             "print(sorted(m for m in sys.modules if m.split('.')[0] in ('mpi4py', 'cupy')))")
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip() == "[]"


def test_importing_interop_does_not_import_torch_or_keras():
    r = _run("import sys, fastrnn.interop\n"
             "print(sorted(m for m in ('torch', 'keras', 'tensorflow') if m in sys.modules))")
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip() == "[]"


def test_saving_imports_neither_models_nor_seq2seq():
    # the model classes register themselves with saving (saving.register_model)
    assert not {"fastrnn.models", "fastrnn._model", "fastrnn.seq2seq", "fastrnn"} & import_edges()["fastrnn.saving"]
