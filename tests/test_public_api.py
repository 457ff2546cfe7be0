"""The public surface: the top level is lazy, and its one table of names (the stub) is complete."""

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import astroclip

STUB = Path(astroclip.__file__).with_name("__init__.pyi")


def _stub_names():
    tree = ast.parse(STUB.read_text())
    names = {}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                names[alias.asname or alias.name] = "astroclip." + node.module
    return names


def test_the_stub_is_the_table_of_public_names():
    names = _stub_names()
    assert sorted(names) == sorted(astroclip.__all__)
    for name, module in names.items():
        assert getattr(astroclip, name) is getattr(importlib.import_module(module), name), name
    assert {"create_model", "list_models", "register_model", "load_model"} <= set(names)
    with pytest.raises(AttributeError, match="no_such_name"):
        astroclip.no_such_name


def test_import_astroclip_imports_no_submodule_and_no_torch():
    code = ("import sys, astroclip; print(sorted(m for m in sys.modules if m == 'torch' or "
            "m.startswith('astroclip.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(astroclip.__file__).parent.parent)
    assert out.stdout.strip() == "['astroclip._version']" or out.stdout.strip() == "[]"


@pytest.mark.parametrize("package", ["models", "inputs", "data", "training", "plotting",
                                     "evaluation", "simulate"])
def test_subpackages_re_export_their_names(package):
    mod = importlib.import_module(f"astroclip.{package}")
    assert mod.__all__
    for name in mod.__all__:
        assert getattr(mod, name) is not None, (package, name)
