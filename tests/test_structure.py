"""The package's shape, read from its source with ``ast`` (nothing is imported):
no import cycle anywhere in gan_ext, and the core (ops, nn, the twins, the
backend switch) imports nothing from the applications built on it.

Every import counts, also one inside a function: a function-level import that
only dodges a cycle is still a cycle.  Imports under ``if TYPE_CHECKING:`` do
not run and are skipped.
"""
from __future__ import annotations

import ast
import os
import re
from typing import Dict, List, Set

import pytest

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "gan_ext")
PACKAGE = "gan_ext"

# The core: what `import gan_ext` loads and what a user's model depends on.
CORE = ("gan_ext", "gan_ext._backend", "gan_ext._validate", "gan_ext._info", "gan_ext.memory",
        "gan_ext.reference", "gan_ext.ops", "gan_ext.nn")
# The applications on top of the core; the core must not reach them.
APPLICATIONS = ("gan_ext.models", "gan_ext.train", "gan_ext.metrics", "gan_ext.data",
                "gan_ext.bench", "gan_ext.cli")


def _modules() -> Dict[str, str]:
    """Module name -> file, for every .py file of the package."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        rel = os.path.relpath(dirpath, os.path.dirname(ROOT)).replace(os.sep, ".")
        for f in filenames:
            if f.endswith(".py"):
                name = rel if f == "__init__.py" else f"{rel}.{f[:-3]}"
                found[name] = os.path.join(dirpath, f)
    return found


MODULES = _modules()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST):
    """Every Import/ImportFrom node, skipping `if TYPE_CHECKING:` bodies."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _resolve(name: str) -> str | None:
    """The package module a dotted name refers to (a module, or the module that
    defines the attribute), None outside the package."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str) -> Set[str]:
    """The package modules `module` imports (at any depth of its code)."""
    path = MODULES[module]
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    is_package = path.endswith("__init__.py")
    out: Set[str] = set()
    for node in _import_nodes(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            if node.level:
                base = module if is_package else module.rpartition(".")[0]
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            # `from pkg import sub` imports the submodule; `from mod import name`
            # imports mod.
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base
                       for a in node.names]
        for t in targets:
            r = _resolve(t)
            if r is not None and r != module:
                out.add(r)
    return out


GRAPH = {m: imports_of(m) for m in MODULES}


def _cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _closure(start: str) -> Set[str]:
    seen, todo = set(), [start]
    while todo:
        m = todo.pop()
        for n in GRAPH[m]:
            if n not in seen:
                seen.add(n)
                todo.append(n)
    return seen


def _under(module: str, prefixes) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_the_reader_sees_the_package():
    # Guards the test itself: an empty graph would pass every check below.
    assert len(MODULES) > 40
    assert "gan_ext.nn" in GRAPH["gan_ext"]
    assert sum(len(v) for v in GRAPH.values()) > 100


def test_the_cycle_finder_finds_cycles():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle():
    cycles = _cycles(GRAPH)
    assert not cycles, "import cycles in gan_ext: " + "; ".join(" <-> ".join(c) for c in cycles)


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _under(m, CORE[1:]) or m == "gan_ext"))
def test_core_imports_no_application(module):
    reached = sorted(m for m in _closure(module) if _under(m, APPLICATIONS))
    assert not reached, f"core module {module} reaches {reached}"


# ------------------------------------------------------------ file sizes
@pytest.mark.parametrize("module", sorted(MODULES))
def test_python_files_stay_short(module):
    with open(MODULES[module], encoding="utf-8") as f:
        lines = len(f.read().splitlines())
    assert lines <= 450, f"{MODULES[module]} has {lines} lines: split it by concern"


def test_version_matches_pyproject():
    import tomllib

    from gan_ext._version import __version__
    with open(os.path.join(os.path.dirname(ROOT), "pyproject.toml"), "rb") as f:
        assert tomllib.load(f)["project"]["version"] == __version__


# ------------------------------------------------------- one op, one folder
CSRC = os.path.join(os.path.dirname(ROOT), "csrc")
OPS_DIR = os.path.join(CSRC, "ops")
OP_FOLDERS = sorted(os.listdir(OPS_DIR))


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def _defined(source: str) -> List[str]:
    """The op names a source defines with m.def("name(...)")."""
    return re.findall(r'm\.def\(\s*"([A-Za-z0-9_]+)\(', source)


def _implemented(source: str) -> List[str]:
    return re.findall(r'm\.impl\(\s*"([A-Za-z0-9_]+)"', source)


def test_every_schema_is_defined_in_exactly_one_op_folder():
    owners: Dict[str, List[str]] = {}
    for dirpath, _, filenames in os.walk(CSRC):
        for f in filenames:
            for name in _defined(_read(os.path.join(dirpath, f))):
                owners.setdefault(name, []).append(os.path.relpath(os.path.join(dirpath, f), CSRC))
    assert len(owners) >= 20  # the reader sees the schemas
    bad = {n: files for n, files in owners.items()
           if len(files) != 1 or not files[0].startswith("ops" + os.sep)}
    assert not bad, f"schemas defined outside one csrc/ops/<op>/ folder: {bad}"


@pytest.mark.parametrize("op", OP_FOLDERS)
def test_op_folder_holds_one_op(op):
    """csrc/ops/<op>/: <op>.cpp (schemas + autograd), cpu.cpp, cuda.cu, and
    every kernel registered there belongs to a schema of this folder."""
    folder = os.path.join(OPS_DIR, op)
    files = set(os.listdir(folder))
    assert {f"{op}.cpp", "cpu.cpp", "cuda.cu"} <= files, f"csrc/ops/{op} has {sorted(files)}"
    source = _read(os.path.join(folder, f"{op}.cpp"))
    assert "TORCH_LIBRARY_FRAGMENT(gan_ext" in source
    own = set(_defined(source))
    assert own
    for f in sorted(files):
        if f.endswith((".cpp", ".cu")):
            foreign = set(_implemented(_read(os.path.join(folder, f)))) - own
            assert not foreign, f"csrc/ops/{op}/{f} registers kernels of other ops: {sorted(foreign)}"
    # Kernels live in the op folders only.
    for dirpath, _, filenames in os.walk(CSRC):
        if os.path.commonpath([dirpath, OPS_DIR]) != OPS_DIR:
            for f in filenames:
                assert not _implemented(_read(os.path.join(dirpath, f))), os.path.join(dirpath, f)


def _defined_anywhere() -> List[str]:
    return [n for op in OP_FOLDERS for n in _defined(_read(os.path.join(OPS_DIR, op, f"{op}.cpp")))]


@pytest.mark.parametrize("op", OP_FOLDERS)
def test_op_folder_has_its_python_side(op):
    """csrc/ops/<op>/ pairs with gan_ext/ops/<op>.py, listed in the ops index
    with its kernels and what it gives gan_ext.reference; every schema of the
    folder gets a fake kernel from Python (torch.compile)."""
    import torch

    from gan_ext import _backend, ops
    module = {m.__name__: m for m in ops.OP_MODULES}.get(f"gan_ext.ops.{op}")
    assert module is not None, f"gan_ext/ops/{op}.py is missing from gan_ext.ops.OP_MODULES"
    assert module.OP == op and module.KERNELS and module.REFERENCE
    assert set(module.KERNELS) <= set(_defined_anywhere())
    if not _backend.extension_loaded:
        pytest.skip("gan_ext._C is not built")
    for name in _defined(_read(os.path.join(OPS_DIR, op, f"{op}.cpp"))):
        if name.startswith("_norm_act_plan"):
            continue  # host-side debug ops: no tensors, no fake kernel needed
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"gan_ext::{name}", "Meta"), \
            f"gan_ext::{name} has no fake kernel"
