"""The import structure of the project: no import cycle, nothing imports ``train``, lower layers never import
higher ones.

Every project ``.py`` file is parsed with ``ast`` (nothing is imported), and every import in it counts, at module
level or inside a function (the project imports heavy modules lazily, so a function-level import is as real a
dependency as a top-level one). ``importlib.import_module("name")`` with a literal name counts as an import too.
An import names the most specific project module it reaches: ``from dassl.utils.tools import atomic_write`` is an
edge to ``dassl.utils.tools``; ``from dassl.utils import atomic_write`` an edge to the package ``dassl.utils``
(its ``__init__``, which imports its submodules); ``from analysis import draw`` an edge to ``analysis.draw``.

The layers, lowest first. A module may import its own package and any package of a LOWER layer; packages of the
same layer are independent of each other (they never import one another); nothing imports a higher layer.

0. ``microworld`` — the synthetic image world (scenes, renderer, tasks); imports nothing of the project.
   ``datasets/micro_world.py`` serves its tasks as a dataset, so it sits below ``datasets``.
1. ``dassl`` — the engine (generic: knows no CLIP, no method, no dataset).
2. ``clip_patch`` — CLIP loading and the one prompted forward (uses the engine's registries and utilities).
3. ``datasets`` — dataset folders and protocols, registered into the engine.
4. ``trainers`` — one file per method; their feature cache (``trainers.feature_cache``).
5. ``runs`` — one run of a configured trainer: config from arguments, checks, the output folder, errors.
6. ``results`` — collecting finished runs into tables and plots (reads run folders and logs).
7. ``sweeps`` — running many runs: protocols, sweep files, preflight, executors (local, SLURM).
8. ``analysis``, ``benchmarks``, ``scripts`` — tools built on runs (models to look into, speed, the command-line
   files of sweeps and results, checkpoint export).
9. ``train.py``, ``parse_test_res.py`` — the documented entry-point files: command lines only.
10. ``tests`` — may import anything except ``train`` (they test the library modules, and run ``train.py`` as a
   command).

``train`` is imported by no module at all: it is a command line, and everything another entry point needs from it
lives in ``runs``.
"""
import ast
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

LAYERS = [
    ("microworld",),
    ("dassl",),
    ("clip_patch",),
    ("datasets",),
    ("trainers",),
    ("runs",),
    ("results",),
    ("sweeps",),
    ("analysis", "benchmarks", "scripts"),
    ("train", "parse_test_res"),
    ("tests",),
]
LAYER_OF = {package: rank for rank, packages in enumerate(LAYERS) for package in packages}
ENTRY_POINT = "train"


# -- the graph --------------------------------------------------------------------------------------------------------

def project_files(root):
    """``{module name: path}`` of every project ``.py`` file: the top-level ``.py`` files of ``root`` and every file
    inside its top-level packages (folders with an ``__init__.py``; data, outputs and virtual environments are none).
    """
    modules = {}
    for entry in sorted(os.listdir(root)):
        top = os.path.join(root, entry)
        if entry.endswith(".py") and os.path.isfile(top):
            modules[entry[:-3]] = top
        elif os.path.isfile(os.path.join(top, "__init__.py")):
            for folder, subfolders, files in os.walk(top):
                subfolders[:] = sorted(d for d in subfolders if d != "__pycache__" and not d.startswith("."))
                for name in files:
                    if name.endswith(".py"):
                        parts = os.path.relpath(os.path.join(folder, name), root)[:-3].split(os.sep)
                        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = os.path.join(folder, name)
    return modules


def _imported_names(tree, module, is_package):
    """Every module name an import in ``tree`` asks for, with its line: ``[(name, [names taken from it], line)]``."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against the importing module's package
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[:len(package) - (node.level - 1)]
                base = ".".join(package + ([base] if base else []))
            found.append((base, [alias.name for alias in node.names], node.lineno))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            found.append((node.args[0].value, [], node.lineno))  # importlib.import_module("a.b"): an import by name
    return found


def _project_module(name, modules):
    """The most specific project module ``name`` reaches (``a.b.c`` -> ``a.b`` when only that is a module)."""
    parts = name.split(".")
    while parts and ".".join(parts) not in modules:
        parts.pop()
    return ".".join(parts) or None


def import_graph(modules):
    """``{module: {imported project module: first line}}`` over ``modules`` (see :func:`project_files`)."""
    graph = {}
    for module, path in modules.items():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), filename=path)
        edges = {}
        for base, names, line in _imported_names(tree, module, path.endswith("__init__.py")):
            targets = [f"{base}.{n}" if f"{base}.{n}" in modules else base for n in names] or [base]
            for target in targets:
                target = _project_module(target, modules)
                if target is not None and target != module:
                    edges.setdefault(target, line)
        graph[module] = edges
    return graph


def cycles(graph):
    """``(cycle [a, b, ..., a], sorted members)`` for every strongly connected group of modules (modules that import
    one another, directly or through others): one shortest cycle through its first member, and all its members."""
    index, low, on_stack, stack, groups = {}, {}, set(), [], []

    def visit(node):  # Tarjan's algorithm (the graph is a few hundred modules: recursion is fine)
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [(_cycle_through(sorted(group)[0], group, graph), sorted(group)) for group in groups]


def _cycle_through(start, group, graph):
    """A shortest import path from ``start`` back to itself inside ``group`` (breadth first)."""
    paths, seen = [[start]], {start}
    while paths:
        path = paths.pop(0)
        for nxt in sorted(graph[path[-1]]):
            if nxt == start:
                return path + [start]
            if nxt in group and nxt not in seen:
                seen.add(nxt)
                paths.append(path + [nxt])
    raise AssertionError(f"no cycle through {start}")  # (a strongly connected group always has one)


def layer_violations(graph, modules):
    """``"a (layer) imports b (layer) at a.py:LINE"`` for every import of an equal or higher layer's package."""
    found = []
    for module, edges in sorted(graph.items()):
        mine = module.split(".")[0]
        for target, line in sorted(edges.items()):
            theirs = target.split(".")[0]
            if theirs != mine and LAYER_OF[theirs] >= LAYER_OF[mine]:
                where = f"{os.path.relpath(modules[module], REPO)}:{line}"
                found.append(f"{module} (layer {LAYER_OF[mine]}) imports {target} (layer {LAYER_OF[theirs]}) "
                             f"at {where}")
    return found


def importers_of(target, graph, modules):
    return [f"{os.path.relpath(modules[m], REPO)}:{edges[target]}" for m, edges in sorted(graph.items())
            if target in edges]


# -- the project ------------------------------------------------------------------------------------------------------

class Project(tuple):
    """(modules, graph) of the repository; shown by name only in a failure report."""

    def __repr__(self):
        return "<the project's modules and import graph>"


@pytest.fixture(scope="module")
def project():
    modules = project_files(REPO)
    return Project((modules, import_graph(modules)))


def test_every_project_package_has_a_layer(project):
    modules, _ = project
    assert sorted({m.split(".")[0] for m in modules} - set(LAYER_OF)) == [], \
        "a new top-level package or file: give it a layer in LAYERS (and the docstring above)"


def test_no_import_cycle(project):
    _, graph = project
    found = cycles(graph)
    assert found == [], "import cycles:\n" + "\n".join(
        f"{' -> '.join(cycle)} (the group: {', '.join(members)})" for cycle, members in found)


def test_nothing_imports_the_train_command_line(project):
    modules, graph = project
    assert ENTRY_POINT in modules
    found = importers_of(ENTRY_POINT, graph, modules)
    assert found == [], f"{ENTRY_POINT} is imported at: {', '.join(found)} (import from runs/ instead)"


def test_lower_layers_never_import_higher_ones(project):
    modules, graph = project
    found = layer_violations(graph, modules)
    assert found == [], "imports against the layer order:\n" + "\n".join(found)


# -- the checker itself ----------------------------------------------------------------------------------------------

def _write(root, files):
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return project_files(str(root))


def test_the_graph_sees_function_level_relative_and_by_name_imports(tmp_path):
    modules = _write(tmp_path, {
        "pkg/__init__.py": "from .a import x\n",
        "pkg/a.py": "x = 1\ndef f():\n    from . import b\n",
        "pkg/b.py": "import importlib\ndef g():\n    importlib.import_module('pkg.sub.c')\n",
        "pkg/sub/__init__.py": "",
        "pkg/sub/c.py": "from ..a import x\nfrom pkg import a\nimport os\n",
    })
    graph = import_graph(modules)
    assert graph == {"pkg": {"pkg.a": 1}, "pkg.a": {"pkg.b": 3}, "pkg.b": {"pkg.sub.c": 3}, "pkg.sub": {},
                     "pkg.sub.c": {"pkg.a": 1}}
    assert cycles(graph) == [(["pkg.a", "pkg.b", "pkg.sub.c", "pkg.a"], ["pkg.a", "pkg.b", "pkg.sub.c"])]


def test_a_cycle_through_a_package_init_is_found(tmp_path):
    # the engine's old cycle in miniature: utils/__init__ -> torchtools -> run_dir -> utils (function level)
    modules = _write(tmp_path, {
        "eng/__init__.py": "",
        "eng/utils/__init__.py": "from .torchtools import *\nfrom .tools import *\n",
        "eng/utils/tools.py": "def atomic_write(): pass\n",
        "eng/utils/torchtools.py": "from eng.run_dir import BEST\n",
        "eng/run_dir.py": "BEST = 1\ndef write():\n    from eng.utils import atomic_write\n",
    })
    graph = import_graph(modules)
    assert [cycle for cycle, _ in cycles(graph)] == [["eng.run_dir", "eng.utils", "eng.utils.torchtools",
                                                      "eng.run_dir"]]
    (tmp_path / "eng/run_dir.py").write_text("BEST = 1\ndef write():\n    from eng.utils.tools import atomic_write\n")
    assert cycles(import_graph(modules)) == []


def test_layer_violations_name_the_file_and_line(tmp_path, monkeypatch):
    monkeypatch.setitem(globals(), "LAYER_OF", {"low": 0, "peer": 0, "high": 1})
    monkeypatch.setitem(globals(), "REPO", str(tmp_path))
    modules = _write(tmp_path, {
        "low/__init__.py": "def f():\n    import high.tool\n",
        "peer/__init__.py": "import low\n",
        "high/__init__.py": "",
        "high/tool.py": "import low\n",
    })
    assert layer_violations(import_graph(modules), modules) == [
        f"low (layer 0) imports high.tool (layer 1) at {os.path.join('low', '__init__.py')}:2",
        f"peer (layer 0) imports low (layer 0) at {os.path.join('peer', '__init__.py')}:1",
    ]
