"""The package's layers: no import cycle and no upward import.

Data flows one way (issue 12): inputs -> data -> models -> training / api ->
search, evaluation -> plotting -> quickstart -> cli/commands, on top of the
foundation modules (exceptions, configuration, optional dependencies, progress
bars, array checks, devices, file helpers).  The imports are read from the
source with `ast`: every ``import`` anywhere in a module (also inside
functions), and every string that names one of our modules (``"astroclip.x.y"``
or ``"astroclip.x.y:attr"``: a module imported by name at run time).  The
top-level package is the lazy facade of the public names: importing it
(``from astroclip import __version__``) counts as importing ``astroclip._version``,
and its table of names is not an import.
"""

import ast
from pathlib import Path

import pytest

import astroclip

PACKAGE = Path(astroclip.__file__).parent

#: Layers, lowest first: a module may import modules of its own layer or below.  The
#: layer of a module is that of the longest prefix listed here.
LAYERS = {
    0: ["astroclip", "astroclip._version", "astroclip._config", "astroclip.exceptions",
        "astroclip._optional", "astroclip._progress", "astroclip._arrays",
        "astroclip._device", "astroclip._io"],
    1: ["astroclip.inputs"],
    2: ["astroclip.data"],
    3: ["astroclip.models", "astroclip.simulate",
        # pure functions of arrays and tensors, used by the training stages' validation
        "astroclip.evaluation.metrics", "astroclip.evaluation._targets"],
    4: ["astroclip.training", "astroclip.api", "astroclip.distributed"],
    5: ["astroclip.search", "astroclip.evaluation"],
    6: ["astroclip.plotting"],
    7: ["astroclip.quickstart"],
    8: ["astroclip.commands", "astroclip.cli"],
}

#: Known upward imports, (importer, imported), left for the later parts of issue 12;
#: each part removes the entries it fixes (an entry that no longer occurs fails).
ALLOWED_UPWARD = set()

#: Known import cycles (sets of modules), left for the later parts of issue 12.
ALLOWED_CYCLES = []


def modules(root=PACKAGE):
    """``{module name: (path, is_package)}`` of every module under ``root``."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return out


def _docstrings(tree):
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def _known(name, mods):
    """The module ``name`` is in (its longest known prefix), or None outside the package."""
    while name not in mods:
        if "." not in name:
            return None
        name = name.rsplit(".", 1)[0]
    return name


def imports(mods, top="astroclip"):
    """``{module: set of modules it imports}`` (ours only, see the module docstring)."""
    graph = {}
    for name, (path, is_package) in mods.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        found = set()
        docstrings = _docstrings(tree)
        for node in ast.walk(tree):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = name.split(".") if is_package else name.split(".")[:-1]
                if node.level:
                    base = base[:len(base) - node.level + 1]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module
                targets = [f"{module}.{alias.name}" if f"{module}.{alias.name}" in mods
                           else module for alias in node.names]
            elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
                  and id(node) not in docstrings and name != top):
                text = node.value.split(":", 1)[0]
                if text in mods and text != top:
                    targets = [text]
            for target in targets:
                if target == top:
                    target = f"{top}._version"  # the facade's one static import
                target = _known(target, mods)
                if target is not None and target != name:
                    found.add(target)
        graph[name] = found
    return graph


def layer(name):
    """The layer of a module (None when LAYERS does not place it)."""
    best = None
    for level, prefixes in LAYERS.items():
        for prefix in prefixes:
            # the top-level package places itself only, not everything under it
            if name == prefix or (prefix != "astroclip" and name.startswith(prefix + ".")):
                if best is None or len(prefix) > len(best[1]):
                    best = (level, prefix)
    return None if best is None else best[0]


def upward(graph):
    """``{(importer, imported)}`` where the imported module sits in a higher layer.

    Modules without a layer are left out (`test_every_module_has_a_layer` names them).
    """
    return {(a, b) for a, targets in graph.items() for b in targets
            if None not in (layer(a), layer(b)) and layer(b) > layer(a)}


def cycles(graph):
    """The import cycles: strongly connected sets of two modules or more (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


@pytest.fixture(scope="module")
def graph():
    return imports(modules())


def test_every_module_has_a_layer(graph):
    missing = sorted(m for m in graph if layer(m) is None)
    assert not missing, f"place these modules in LAYERS: {missing}"


def test_no_upward_import(graph):
    found = upward(graph)
    new = sorted(found - ALLOWED_UPWARD)
    assert not new, ("upward imports (importer, imported) against the layers of LAYERS: "
                     f"{new}; import only from the same layer or below")
    stale = sorted(ALLOWED_UPWARD - found)
    assert not stale, f"fixed upward imports still listed in ALLOWED_UPWARD: {stale}"


def test_no_import_cycle(graph):
    found = cycles(graph)
    new = [sorted(c) for c in found if not any(c <= allowed for allowed in ALLOWED_CYCLES)]
    assert not new, f"import cycles: {new}"
    stale = [sorted(a) for a in ALLOWED_CYCLES if not any(c <= a for c in found)]
    assert not stale, f"fixed cycles still listed in ALLOWED_CYCLES: {stale}"


def test_the_checker_sees_every_kind_of_import(tmp_path):
    root = tmp_path / "astroclip"
    (root / "data").mkdir(parents=True)
    (root / "__init__.py").write_text('"""astroclip.api is not an import in a docstring."""\n')
    (root / "_version.py").write_text("")
    (root / "data" / "__init__.py").write_text("")
    (root / "data" / "paired.py").write_text(
        "def f():\n    from ..api import embed  # a lazy upward import\n")
    (root / "data" / "other.py").write_text('TABLE = {"x": "astroclip.data.paired:f"}\n')
    (root / "api.py").write_text("from . import __version__\nfrom .data import other\n"
                                 "import astroclip.data.paired\n")
    graph = imports(modules(root))
    assert graph["astroclip.data.paired"] == {"astroclip.api"}
    assert graph["astroclip.data.other"] == {"astroclip.data.paired"}
    assert graph["astroclip.api"] == {"astroclip._version", "astroclip.data.other",
                                      "astroclip.data.paired"}
    assert graph["astroclip"] == set()
    assert upward(graph) == {("astroclip.data.paired", "astroclip.api")}
    assert cycles(graph) == [{"astroclip.api", "astroclip.data.other", "astroclip.data.paired"}]
