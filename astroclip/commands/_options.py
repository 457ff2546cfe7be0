"""Command-line options made from the functions they call, so each is declared once.

A sub-command's options are read from the signature and the numpydoc
docstring of the Python function it runs (`add_function_options`; the function
is named as ``"module:function"`` and read from its source with `ast`, so that
building the ``astroclip`` parser imports neither Lightning nor the models): the
option's name is the parameter's (``max_steps`` -> ``--max-steps``), its
default the parameter's, its type that of the default or, for a default of
None, the docstring's (``int, optional``), and its help the first sentence of
the parameter's description.  The options every training stage shares come
from the fields of `astroclip.training.options.RunOptions` (`add_run_options`).
Booleans get ``--x / --no-x``; a set type (``{"a", "b"}``) gives the
choices; tuples take one value per element; ``dict`` parameters take JSON.
``tests/commands/test_options.py`` checks that every parameter of the training
functions is an option.
"""

import argparse
import ast
import dataclasses
import importlib.util
import inspect
import json
import re

__all__ = ["function_spec", "doc_parameters", "add_function_options", "function_kwargs",
           "add_run_options", "run_kwargs"]

_EMPTY = inspect.Parameter.empty

#: Docstring types an option can take (the first word of ``name : type``).
_TYPES = {"int": int, "float": float, "str": str, "bool": bool, "dict": "dict"}


def function_spec(func):
    """``([(name, default or inspect.Parameter.empty, is_option)], docstring)`` of a function.

    ``func`` is a callable, or ``"package.module:function"``, read from the
    module's source without importing it.  ``is_option`` is False for ``*args``
    and ``**kwargs``.
    """
    if callable(func):
        params = [(p.name, p.default, p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL))
                  for p in inspect.signature(func).parameters.values()]
        return params, inspect.getdoc(func) or ""
    module, _, name = func.partition(":")
    spec = importlib.util.find_spec(module)
    with open(spec.origin, encoding="utf-8") as fh:
        tree = ast.parse(fh.read())
    node = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name),
                None)
    if node is None:
        raise LookupError(f"{module} has no function {name!r}")
    a = node.args
    positional = a.posonlyargs + a.args
    defaults = [_EMPTY] * (len(positional) - len(a.defaults)) + list(a.defaults)
    pairs = list(zip(positional, defaults)) + list(zip(a.kwonlyargs, a.kw_defaults))
    params = []
    for arg, node_default in pairs:
        default = _EMPTY            # (ast gives None for a keyword-only argument without one)
        if node_default is not _EMPTY and node_default is not None:
            try:
                default = ast.literal_eval(node_default)
            except ValueError:
                raise TypeError(f"the default of {func}({arg.arg}=...) is not a literal; "
                                "it cannot become a command-line default") from None
        params.append((arg.arg, default, True))
    for extra in (a.vararg, a.kwarg):
        if extra is not None:
            params.append((extra.arg, _EMPTY, False))
    return params, ast.get_docstring(node) or ""


def doc_parameters(doc):
    """``{name: (type text, description)}`` of the Parameters section of a numpydoc docstring.

    Grouped entries (``lr, weight_decay : optional``) give each name the same text.

    Examples
    --------
    >>> from astroclip.commands._options import doc_parameters
    >>> def f(a, *, b=1):
    ...     '''Do it.
    ...
    ...     Parameters
    ...     ----------
    ...     a, b : int, optional
    ...         The values.  More text.
    ...     '''
    >>> doc_parameters(f.__doc__)["b"]
    ('int, optional', 'The values.  More text.')
    """
    lines = inspect.cleandoc(doc or "").splitlines()
    out = {}
    try:
        start = next(i for i, line in enumerate(lines[:-1])
                     if line.strip() == "Parameters" and set(lines[i + 1].strip()) == {"-"})
    except StopIteration:
        return out
    names, typ, desc = None, "", []

    def flush():
        if names:
            for name in names:
                out[name] = (typ, " ".join(desc).strip())

    i = start + 2
    while i < len(lines):
        line = lines[i]
        if i + 1 < len(lines) and line.strip() and set(lines[i + 1].strip()) == {"-"} \
                and not line.startswith(" "):
            break                                   # the next section
        if line and not line.startswith(" "):
            flush()
            head, _, typ = line.partition(" : ")
            names = [n.strip().lstrip("*") for n in head.split(",")]
            typ, desc = typ.strip(), []
        elif line.strip():
            desc.append(line.strip())
        i += 1
    flush()
    return out


def _first_sentence(text):
    m = re.match(r"(.+?\.)(\s|$)", text)
    sentence = (m.group(1) if m else text).rstrip(".")
    # Sphinx roles and literals read as plain text on a terminal
    sentence = re.sub(r"``([^`]+)``", r"\1", sentence)
    sentence = re.sub(r"`~?(?:[\w.]+\.)?(\w+)`", r"\1", sentence)
    return sentence.replace("%", "%%")


def _choices(typ):
    """The values of a numpydoc set type (``{"a", "b"}, optional``), or None."""
    m = re.match(r"\{(.*?)\}", typ.strip())
    return re.findall(r"[\"']([^\"']+)[\"']", m.group(1)) if m else None


def _type_of(default, typ):
    if default is not None and not isinstance(default, (tuple, list)):
        return type(default)
    if _choices(typ):
        return str
    first = re.split(r"[\s,]", typ.strip(), maxsplit=1)[0] if typ else ""
    return _TYPES.get(first)


def _add(parser, name, default, typ_text, help_text, *, required=False, spec=None):
    flag = "--" + name.replace("_", "-")
    spec = dict(spec or {})
    help_text = spec.pop("help", help_text)
    kind = spec.pop("type", None) or _type_of(default, typ_text)
    if _choices(typ_text) and "choices" not in spec:
        spec["choices"] = _choices(typ_text)
    if required:
        parser.add_argument(flag, dest=name, required=True, help=help_text,
                            type=kind if callable(kind) and kind is not bool else None, **spec)
        return
    shown = f" (default: {default})" if default not in (None, (), "") else ""
    if kind is bool:
        parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction,
                            default=default, help=help_text + shown, **spec)
    elif isinstance(default, (tuple, list)) and default:
        parser.add_argument(flag, dest=name, nargs=len(default), type=type(default[0]),
                            default=tuple(default), help=help_text + shown, **spec)
    elif kind == "dict":
        parser.add_argument(flag, dest=name, type=json.loads, default=default,
                            metavar="JSON", help=help_text + " (JSON)" + shown, **spec)
    elif callable(kind):
        parser.add_argument(flag, dest=name, type=kind, default=default,
                            help=help_text + shown, **spec)
    else:
        raise TypeError(f"cannot make a command-line option of parameter {name!r} (default "
                        f"{default!r}, documented type {typ_text!r}); give it a type in "
                        "the docstring or in the command's overrides")


def add_function_options(parser, func, *, skip=(), overrides=None):
    """Add an option per keyword parameter of ``func`` (see the module docstring).

    Parameters
    ----------
    parser : argparse.ArgumentParser
    func : callable
        The function the sub-command runs.
    skip : sequence of str, optional
        Parameters that are not options (Python objects, or set by the command).
    overrides : dict, optional
        ``{name: argparse keywords}`` for parameters that need more than the
        signature says (``choices``, a parsing ``type``).
    """
    overrides = overrides or {}
    params, doc = function_spec(func)
    docs = doc_parameters(doc)
    for name, default, is_option in params:
        if name in skip or not is_option:
            continue
        typ, desc = docs.get(name, ("", ""))
        required = default is _EMPTY
        _add(parser, name, None if required else default, typ, _first_sentence(desc),
             required=required, spec=overrides.get(name))


def function_kwargs(args, func, *, skip=()):
    """The parsed values of the options that `add_function_options` made for ``func``."""
    params, _ = function_spec(func)
    out = {}
    for name, default, is_option in params:
        if is_option and name not in skip:
            value = getattr(args, name)
            # nargs gives a list; the function's default says a tuple
            out[name] = tuple(value) if isinstance(default, tuple) and isinstance(value, list) \
                else value
    return out


def _run_fields():
    from ..training.options import RunOptions

    return [f for f in dataclasses.fields(RunOptions) if f.metadata.get("cli", True)]


def add_run_options(parser):
    """Add the options every training stage shares (`~astroclip.training.options.RunOptions`)."""
    group = parser.add_argument_group("options of every training stage")
    for f in _run_fields():
        typ = getattr(f.type, "__name__", "")
        _add(group, f.name, f.default, typ, f.metadata["help"],
             spec={"type": f.metadata["type"]} if f.metadata.get("type") else None)


def run_kwargs(args):
    """The parsed values of the options that `add_run_options` made."""
    return {f.name: getattr(args, f.name) for f in _run_fields()}
