"""Reading released checkpoints safely, in the layouts their training code writes.

The released AstroCLIP files are pickles: ``specformer.ckpt`` and
``astroclip.ckpt`` are PyTorch Lightning checkpoints and ``astrodino.ckpt`` is
what the DINOv2 trainer of the reference code saves.  Unpickling a file with
Python's `pickle` can import any module and call any function it names, so
these files are never read that way here.

`read_checkpoint` first tries ``torch.load(weights_only=True)`` (only tensors
and plain containers are rebuilt).  The released ``astroclip.ckpt`` does not
pass: the reference ``AstroClipModel`` takes its image and spectrum encoders as
constructor arguments and calls ``save_hyperparameters()``, so the Lightning
``hyper_parameters`` hold the encoder *modules*, pickled with their classes
(``ImageHead``, ``SpectrumHead``, ``SpecFormer``, the DINOv2 classes,
``torch.nn`` layers, ``functools.partial`` ...).  Such a file is read again
with `RestrictedUnpickler`: the globals it may resolve are torch's tensor and
parameter rebuild functions, dtypes, ``torch.Size``, ``torch.device`` and a few
plain containers (`ALLOWED_GLOBALS`).  Every other global becomes an inert
`OpaqueObject` subclass: nothing is imported, and "calling" it (the pickle
``REDUCE``, ``NEWOBJ`` and ``BUILD`` instructions) only records the arguments.
A pickle that would call ``os.system`` therefore runs nothing.  TorchScript
archives (which hold code) are refused.

Layouts (`CHECKPOINT_LAYOUTS`):

- ``"lightning"``: ``{"state_dict": {...}, "hyper_parameters": {...}, ...}``
  (``specformer.ckpt``, ``astroclip.ckpt``; anything ``Trainer.save_checkpoint``
  writes);
- ``"dinov2-teacher"``: ``{"teacher": state_dict}`` with ``backbone.*`` and
  DINO/iBOT head keys (``astrodino.ckpt``: the reference DINOv2 trainer saves
  ``{"teacher": model.teacher.state_dict()}``, the dict DINOv2's
  ``load_pretrained_weights(..., "teacher")`` reads);
- ``"state_dict"``: a bare dict of tensors.

Only plain data is kept from the hyper-parameters (`plain_data`): numbers,
strings, booleans, None and lists/tuples/dicts of them; modules and other
objects are left out and named in `Checkpoint.skipped_hyper_parameters`.
"""

import _compat_pickle
import pickle
import types
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..exceptions import CheckpointError

__all__ = ["ALLOWED_GLOBALS", "CHECKPOINT_LAYOUTS", "Checkpoint", "OpaqueObject",
           "RestrictedUnpickler", "restricted_pickle", "read_checkpoint",
           "read_released_checkpoint", "plain_data", "opaque_globals"]

#: Layouts `read_checkpoint` understands (see the module documentation).
CHECKPOINT_LAYOUTS = ("lightning", "dinov2-teacher", "state_dict")


# ------------------------------------------------------------------ inert objects
class OpaqueObject:
    """Stand-in for an object of a class that a checkpoint names but that is never imported.

    The pickle instructions that would construct or fill the object only
    record their arguments: ``args`` / ``kwargs`` (``REDUCE``, ``NEWOBJ``),
    ``state`` (``BUILD``), ``items`` (``APPEND(S)``) and ``mapping``
    (``SETITEM(S)``).  The instances are not callable and run no code.  The
    global the object stands for is the class attribute ``qualified_name``.
    """

    qualified_name = "?"

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        obj.args, obj.kwargs = args, kwargs
        obj.state, obj.items, obj.mapping = None, [], {}
        return obj

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        self.state = state

    def append(self, value):
        self.items.append(value)

    def extend(self, values):
        self.items.extend(values)

    def __setitem__(self, key, value):
        self.mapping[key] = value

    def __repr__(self):
        return f"<{self.qualified_name} (not imported)>"


_OPAQUE_CLASSES = {}


def _opaque_class(module, name):
    key = f"{module}.{name}"
    if key not in _OPAQUE_CLASSES:
        _OPAQUE_CLASSES[key] = type(str(name), (OpaqueObject,),
                                    {"qualified_name": key, "__module__": __name__})
    return _OPAQUE_CLASSES[key]


# ------------------------------------------------------------------ allowed globals
def _latin1_encode(text, encoding="latin1"):
    """``_codecs.encode`` as protocol-2 pickles use it for bytes, latin-1 only."""
    if str(encoding).lower().replace("_", "-") not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"refusing the {encoding!r} codec in a checkpoint")
    return str(text).encode("latin1")


def _rebuild_from_type(func, new_type, args, state):
    """``torch._tensor._rebuild_from_type_v2`` for plain tensors and parameters only.

    A tensor pickled as an instance of a class that is not imported here comes
    back as a plain tensor.
    """
    if isinstance(new_type, type) and issubclass(new_type, OpaqueObject):
        return func(*args)
    return torch._tensor._rebuild_from_type_v2(func, new_type, args, state)


def _allowed_globals():
    from torch import _utils

    allowed = {
        "collections.OrderedDict": OrderedDict,
        "builtins.set": set, "builtins.frozenset": frozenset, "builtins.complex": complex,
        "builtins.bytearray": bytearray, "builtins.bytes": bytes, "builtins.slice": slice,
        "_codecs.encode": _latin1_encode,
        "torch.Size": torch.Size, "torch.device": torch.device,
        "torch.Tensor": torch.Tensor, "torch._tensor.Tensor": torch.Tensor,
        "torch.nn.parameter.Parameter": torch.nn.Parameter,
        "torch._tensor._rebuild_from_type_v2": _rebuild_from_type,
    }
    for name in ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_parameter",
                 "_rebuild_parameter_with_state"):
        if hasattr(_utils, name):
            allowed[f"torch._utils.{name}"] = getattr(_utils, name)
    for name in dir(torch):
        value = getattr(torch, name, None)
        if isinstance(value, (torch.dtype, torch.layout, torch.memory_format)):
            allowed[f"torch.{name}"] = value
    return allowed


#: ``"module.name"`` -> object: the only globals `RestrictedUnpickler` resolves.
ALLOWED_GLOBALS = _allowed_globals()


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that imports nothing and calls only `ALLOWED_GLOBALS`.

    Every other global the pickle names resolves to an `OpaqueObject`
    subclass (created here, empty), so that constructing, calling or filling
    it runs no code from the file.  Tensor storages are rebuilt by torch's own
    loader around this class (``torch.load(pickle_module=restricted_pickle)``).
    """

    def find_class(self, module, name):
        # the Python 2 names of protocol-2 pickles (``__builtin__.set``)
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        found = ALLOWED_GLOBALS.get(f"{module}.{name}")
        return found if found is not None else _opaque_class(module, name)


def _restricted_load(file, **kwargs):
    return RestrictedUnpickler(file, **kwargs).load()


#: A "pickle module" for ``torch.load(..., pickle_module=restricted_pickle)``.
restricted_pickle = types.ModuleType(
    "astroclip_restricted_pickle", "pickle, restricted to tensors and plain data")
restricted_pickle.Unpickler = RestrictedUnpickler
restricted_pickle.load = _restricted_load
restricted_pickle.UnpicklingError = pickle.UnpicklingError


# ------------------------------------------------------------------ plain data
_PLAIN = (bool, int, float, complex, str, bytes, type(None))


def plain_data(value):
    """Whether ``value`` is plain data (recursively), and the value if it is.

    Returns
    -------
    ok : bool
        Whether ``value`` holds only numbers, strings, booleans, None and
        lists/tuples/dicts (with plain keys) of them.
    value
        The value itself when ``ok``.

    Examples
    --------
    >>> from astroclip.models.convert import plain_data
    >>> plain_data({"lr": 1e-4, "betas": (0.9, 0.95)})
    (True, {'lr': 0.0001, 'betas': (0.9, 0.95)})
    >>> plain_data(object())[0]
    False
    """
    ok = _is_plain(value, depth=0)
    return ok, (value if ok else None)


def _is_plain(value, depth):
    if depth > 50:
        return False
    if isinstance(value, _PLAIN):
        return True
    if type(value) in (list, tuple):
        return all(_is_plain(v, depth + 1) for v in value)
    if type(value) in (dict, OrderedDict):
        return all(isinstance(k, _PLAIN) and _is_plain(v, depth + 1) for k, v in value.items())
    return False


def opaque_globals(obj, *, limit=100_000):
    """The ``"module.name"`` of every `OpaqueObject` class reachable from ``obj`` (sorted)."""
    names, seen, stack = set(), set(), [obj]
    while stack and len(seen) < limit:
        item = stack.pop()
        if id(item) in seen or isinstance(item, _PLAIN) or torch.is_tensor(item):
            continue
        seen.add(id(item))
        if isinstance(item, type) and issubclass(item, OpaqueObject):
            names.add(item.qualified_name)
        elif isinstance(item, OpaqueObject):
            names.add(type(item).qualified_name)
            stack += [item.args, item.kwargs, item.state, item.items, item.mapping]
        elif isinstance(item, dict):
            stack += list(item.keys()) + list(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            stack += list(item)
    return sorted(names)


# ------------------------------------------------------------------ reading
@dataclass
class Checkpoint:
    """What `read_checkpoint` recovers from a checkpoint file.

    Attributes
    ----------
    state_dict : dict
        Name -> `torch.Tensor` (on the CPU).
    hyper_parameters : dict
        The plain-data hyper-parameters (Lightning layout; empty otherwise).
    layout : str
        One of `CHECKPOINT_LAYOUTS`.
    restricted : bool
        True when the file needed the restricted unpickler (it names classes
        other than tensors and plain containers).
    not_imported : list of str
        The globals the file names that were replaced by inert stand-ins.
    skipped_hyper_parameters : list of str
        Hyper-parameters left out because they are not plain data (e.g. the
        encoder modules of ``astroclip.ckpt``).
    """

    state_dict: dict
    hyper_parameters: dict = field(default_factory=dict)
    layout: str = "state_dict"
    restricted: bool = False
    not_imported: list = field(default_factory=list)
    skipped_hyper_parameters: list = field(default_factory=list)


def _check_not_torchscript(path):
    """Refuse TorchScript archives; True for a zip archive, False for torch's legacy format."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError):
        return False  # torch's legacy format goes through the same unpickler
    if any(n.split("/", 1)[-1] == "constants.pkl" for n in names):
        raise CheckpointError(f"refusing to read {path}: it is a TorchScript archive, which "
                              "holds code; released AstroCLIP checkpoints are plain Lightning "
                              "or DINOv2 checkpoints")
    return True


def _check_format(path):
    with open(path, "rb") as fh:
        head = fh.read(4)
    # torch's zip archive (torch >= 1.6) or its legacy pickle stream
    if head[:4] != b"PK\x03\x04" and head[:1] != b"\x80":
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint (it is neither a "
                              "torch zip archive nor a pickle); download it again or check "
                              "that it is a .ckpt/.pt/.pth file")


def _load(path):
    """The unpickled object and whether the restricted unpickler was needed."""
    _check_format(path)
    # memory-mapped: a first attempt that fails does not read the tensors' data
    mmap = _check_not_torchscript(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap), False
    except pickle.UnpicklingError:
        pass  # names globals beyond torch's safe list: read again, restricted
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({exc}); download "
                              "it again or check that it is a .ckpt/.pt/.pth file") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False, mmap=mmap,
                         pickle_module=restricted_pickle)
    except Exception as exc:  # noqa: BLE001 - any failure of the restricted reader is reported
        raise CheckpointError(
            f"could not read {path} with the restricted unpickler (nothing from the file was "
            f"imported or run): {type(exc).__name__}: {str(exc).rstrip('.')}. Only tensors, "
            "plain containers and inert stand-ins for other classes can be rebuilt") from None
    return obj, True


def _tensor_dict(obj):
    return isinstance(obj, dict) and bool(obj) and all(torch.is_tensor(v) for v in obj.values())


def _split(obj, path):
    """(state_dict, raw hyper-parameters, layout) of a loaded checkpoint object."""
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a checkpoint dict; "
                              f"expected one of the layouts {CHECKPOINT_LAYOUTS}")
    if "state_dict" in obj:
        state, hparams, layout = obj["state_dict"], obj.get("hyper_parameters"), "lightning"
    elif "teacher" in obj:
        state, hparams, layout = obj["teacher"], None, "dinov2-teacher"
    elif _tensor_dict(obj):
        state, hparams, layout = obj, None, "state_dict"
    else:
        raise CheckpointError(
            f"{path} has neither 'state_dict' (Lightning) nor 'teacher' (DINOv2 trainer) and is "
            f"not a dict of tensors (keys: {sorted(map(str, obj))[:10]}); expected one of the "
            f"layouts {CHECKPOINT_LAYOUTS}")
    if not _tensor_dict(state):
        bad = [k for k, v in getattr(state, "items", lambda: [])() if not torch.is_tensor(v)]
        raise CheckpointError(f"the {layout} state dict of {path} is not a dict of tensors"
                              + (f" (e.g. {bad[:3]})" if bad else ""))
    return dict(state), hparams, layout


def read_checkpoint(path):
    """Read a checkpoint without running code from it.

    Parameters
    ----------
    path : path
        A ``.ckpt`` / ``.pt`` / ``.pth`` file in one of `CHECKPOINT_LAYOUTS`.

    Returns
    -------
    `Checkpoint`

    Raises
    ------
    FileNotFoundError
        No such file.
    astroclip.exceptions.CheckpointError
        Not a PyTorch checkpoint, a TorchScript archive, a layout not in
        `CHECKPOINT_LAYOUTS`, or a pickle the restricted unpickler cannot
        rebuild (it was still not executed).

    Examples
    --------
    >>> import tempfile, torch
    >>> from astroclip.models.convert import read_checkpoint
    >>> path = tempfile.mkdtemp() + "/teacher.pth"
    >>> torch.save({"teacher": {"backbone.cls_token": torch.zeros(1, 1, 8)}}, path)
    >>> ckpt = read_checkpoint(path)
    >>> ckpt.layout, list(ckpt.state_dict)
    ('dinov2-teacher', ['backbone.cls_token'])
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    obj, restricted = _load(path)
    state, raw, layout = _split(obj, path)
    hparams, skipped = {}, []
    if isinstance(raw, OpaqueObject):  # e.g. a dict subclass of the training code
        raw = raw.mapping
    items = raw.items() if isinstance(raw, dict) else []
    for key, value in items:
        ok, value = plain_data(value)
        if ok and isinstance(key, str):
            hparams[key] = value
        else:
            skipped.append(str(key))
    return Checkpoint(state_dict=state, hyper_parameters=hparams, layout=layout,
                      restricted=restricted, not_imported=opaque_globals(obj) if restricted else [],
                      skipped_hyper_parameters=sorted(skipped))


def read_released_checkpoint(path):
    """Safely read a checkpoint: ``(state_dict, hyper_parameters)``.

    `read_checkpoint` reduced to its two main parts: the tensors and the
    plain-data hyper-parameters (empty for the ``"dinov2-teacher"`` and
    ``"state_dict"`` layouts).  Nothing from the file is imported or run.

    Examples
    --------
    >>> from astroclip.models.weights import read_released_checkpoint
    >>> state, hparams = read_released_checkpoint("astroclip.ckpt")  # doctest: +SKIP
    """
    ckpt = read_checkpoint(path)
    return ckpt.state_dict, ckpt.hyper_parameters
