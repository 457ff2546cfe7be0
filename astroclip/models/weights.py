"""Our model file format: a folder with safetensors weights and a JSON configuration.

A model is a folder holding ``model.safetensors`` (the state dict, no pickle)
and ``config.json``::

    {"format": "astroclip-weights", "format_version": 1,
     "family": "spectrum", "class": "SpectrumEncoder",
     "config": {...constructor keyword arguments...},
     "astroclip_version": "...", "metadata": {...}}

`save_model` writes both atomically (weights first, the config last, so a
folder with a config is complete).  Reading is in two checked steps:
`read_model_config` (the JSON document) and `read_state_dict` (the tensors:
finite, float32).  Turning the class name of the configuration into a module
is the job of the model factory (`astroclip.models.factory.create_model`, the
one table of model classes), and reading the released checkpoints of the
reference code is `astroclip.models.convert`'s; this module knows neither.

A module is saveable when it has a ``config`` attribute (the JSON-able
arguments of its constructor) and a ``family`` class attribute (``"spectrum"``,
``"image"``, ``"clip"``, ``"head"``), as every model class of
`astroclip.models` has.
"""

import json
from pathlib import Path

import torch

from .._io import atomic_path, check_output_path
from ..exceptions import InputError, ModelFormatError

__all__ = ["FORMAT", "FORMAT_VERSION", "WEIGHTS_FILE", "CONFIG_FILE", "save_model",
           "read_model_config", "read_state_dict", "check_state_dict", "is_model_folder"]

FORMAT = "astroclip-weights"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


def is_model_folder(path):
    """Whether ``path`` is a folder holding both files of our format.

    Examples
    --------
    >>> from astroclip.models.weights import is_model_folder
    >>> is_model_folder("no/such/folder")
    False
    """
    path = Path(path)
    return (path / CONFIG_FILE).is_file() and (path / WEIGHTS_FILE).is_file()


def _version():
    try:
        from .. import __version__
        return __version__
    except ImportError:  # pragma: no cover
        return "unknown"


def _jsonable(value):
    try:
        json.dumps(value)
        return value
    except TypeError:
        if isinstance(value, dict):
            return {str(k): _jsonable(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [_jsonable(v) for v in value]
        return repr(value)


# ------------------------------------------------------------------ our format
def save_model(model, out, *, overwrite=False, metadata=None):
    """Write a module as ``out/model.safetensors`` + ``out/config.json``.

    Parameters
    ----------
    model : `torch.nn.Module`
        A model of `astroclip.models` (a ``config`` attribute and a ``family``
        class attribute; see the module documentation).
    out : path
        Output folder (created).
    overwrite : bool, optional
        Replace an existing model in ``out``.
    metadata : dict, optional
        Extra JSON-able information stored in the config.

    Returns
    -------
    `pathlib.Path`
        The folder.

    Examples
    --------
    >>> import tempfile
    >>> from astroclip.models.heads import MLP
    >>> from astroclip.models.weights import save_model, read_model_config
    >>> folder = save_model(MLP(4, (8,), 2), tempfile.mkdtemp() + "/mlp")
    >>> read_model_config(folder)["config"]["hidden_features"]
    [8]
    """
    from safetensors.torch import save_file

    name = type(model).__name__
    family = getattr(type(model), "family", None)
    if not isinstance(family, str):
        raise InputError(f"{name} is not an astroclip model class (it has no `family` class "
                         "attribute); save a model of astroclip.models (see "
                         "astroclip.models.factory.list_models(kind='class'))")
    config = getattr(model, "config", None)
    if not isinstance(config, dict):
        raise InputError(f"{name} has no `config` dict of constructor arguments; it cannot "
                         "be saved in the astroclip format")
    out = Path(out)
    check_output_path(out / CONFIG_FILE, overwrite=overwrite)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    with atomic_path(out / WEIGHTS_FILE) as tmp:
        save_file(tensors, tmp, metadata={"format": "pt"})
    doc = {"format": FORMAT, "format_version": FORMAT_VERSION, "family": family,
           "class": name, "config": config, "astroclip_version": _version(),
           "metadata": _jsonable(metadata or {})}
    with atomic_path(out / CONFIG_FILE) as tmp:
        Path(tmp).write_text(json.dumps(doc, indent=2) + "\n")
    return out


_REWRITE = "copy the model folder again, or write it anew with save_model (or convert-weights)"


def read_model_config(path):
    """The parsed ``config.json`` of a model folder (format checked).

    Raises
    ------
    FileNotFoundError
        No ``config.json``.
    ModelFormatError
        (a `ValueError`) Not JSON, not an object, another format, a newer
        format version, or no ``class``/``config`` entries.
    """
    path = Path(path)
    cfg_path = path / CONFIG_FILE if path.is_dir() else path
    if not cfg_path.is_file():
        raise FileNotFoundError(f"no {CONFIG_FILE} in {path}: not an astroclip model folder "
                                "(convert released checkpoints with `astroclip convert-weights`)")
    try:
        doc = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFormatError(f"{cfg_path} is not valid JSON ({exc}); the model folder is "
                               f"damaged: {_REWRITE}") from None
    if not isinstance(doc, dict):
        raise ModelFormatError(f"{cfg_path} is not a JSON object (it holds a "
                               f"{type(doc).__name__}); {_REWRITE}")
    if doc.get("format") != FORMAT:
        raise ModelFormatError(f"{cfg_path} is not an astroclip weights config (format "
                               f"{doc.get('format')!r}); {_REWRITE}")
    try:
        version = int(doc.get("format_version", 0))
    except (TypeError, ValueError):
        raise ModelFormatError(f"{cfg_path} has an unreadable format_version "
                               f"{doc.get('format_version')!r}; {_REWRITE}") from None
    if version > FORMAT_VERSION:
        raise ModelFormatError(f"{cfg_path} has format_version {doc['format_version']}, newer "
                               f"than this astroclip understands ({FORMAT_VERSION}); upgrade "
                               "astroclip")
    for key, kind in (("class", str), ("config", dict)):
        if not isinstance(doc.get(key), kind):
            raise ModelFormatError(f"{cfg_path} has no {key!r} entry (a {kind.__name__}); "
                                   f"{_REWRITE}")
    return doc


def _check_tensors(state, source):
    """Refuse non-finite weights; cast floating tensors of another dtype to float32 (warning)."""
    from ..exceptions import AstroclipWarning

    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ModelFormatError(f"{source} holds NaN or infinite weights ({_summary(bad)}); the "
                               f"model is broken (a diverged training run?): {_REWRITE}, or "
                               "train it again")
    other = sorted({str(v.dtype).replace("torch.", "") for v in state.values()
                    if v.is_floating_point() and v.dtype != torch.float32})
    if other:
        import warnings
        warnings.warn(f"{source} stores {', '.join(other)} weights; they were cast to float32, "
                      "the precision the models run in (save the model again to keep it in "
                      "float32)", AstroclipWarning, stacklevel=3)
        state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    return state


def read_state_dict(path):
    """The tensors of a model folder, checked: readable, finite, float32.

    Parameters
    ----------
    path : path
        Model folder (or its ``config.json``).

    Returns
    -------
    dict
        Name -> CPU tensor; floating tensors stored in another precision are
        cast to float32 (with a warning).

    Raises
    ------
    FileNotFoundError
        No ``model.safetensors``.
    ModelFormatError
        A truncated or corrupt file, or NaN / infinite weights.

    Examples
    --------
    >>> import tempfile
    >>> from astroclip.models.heads import MLP
    >>> from astroclip.models.weights import save_model, read_state_dict
    >>> folder = save_model(MLP(4, (8,), 2), tempfile.mkdtemp() + "/mlp")
    >>> sorted(read_state_dict(folder))[:2]
    ['layers.0.bias', 'layers.0.weight']
    """
    from safetensors.torch import load_file

    from safetensors import SafetensorError

    folder = Path(path) if Path(path).is_dir() else Path(path).parent
    weights = folder / WEIGHTS_FILE
    try:
        state = load_file(weights, device="cpu")
    except FileNotFoundError:
        raise
    except (SafetensorError, OSError, RuntimeError) as exc:
        size = weights.stat().st_size if weights.exists() else 0
        raise ModelFormatError(f"{weights} ({size} bytes) cannot be read: it is truncated or "
                               f"corrupt ({exc}); {_REWRITE}") from None
    return _check_tensors(state, weights)


def _summary(keys, n=8):
    keys = sorted(keys)
    more = f" ... and {len(keys) - n} more" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def check_state_dict(model, state, *, source="checkpoint"):
    """Check that ``state`` fills ``model`` exactly: no missing, unexpected or mis-shaped tensor.

    Raises
    ------
    ModelFormatError
        (a `ValueError`) Naming the offending keys.

    Examples
    --------
    >>> from astroclip.models.heads import MLP
    >>> from astroclip.models.weights import check_state_dict
    >>> check_state_dict(MLP(4, (8,), 2), MLP(4, (8,), 2).state_dict())
    """
    expected = model.state_dict()
    missing = set(expected) - set(state)
    unexpected = set(state) - set(expected)
    problems = []
    if missing:
        problems.append(f"missing keys: {_summary(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_summary(unexpected)}")
    wrong = [f"{k} {tuple(state[k].shape)} (expected {tuple(expected[k].shape)})"
             for k in sorted(set(expected) & set(state)) if state[k].shape != expected[k].shape]
    if wrong:
        problems.append("wrong shapes: " + "; ".join(wrong[:8])
                        + (f" ... and {len(wrong) - 8} more" if len(wrong) > 8 else ""))
    if problems:
        raise ModelFormatError(f"{source} does not match {type(model).__name__}: "
                               + " | ".join(problems))
