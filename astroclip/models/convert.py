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

Tensor mapping
--------------
The ``convert_*`` functions map the tensor names of the public reference code
(PolymathicAI/AstroCLIP; DINOv2 for the ViT) onto our modules, derive the
configuration from tensor shapes and hyper-parameters, and check that every
tensor lands somewhere with the right shape and that nothing is missing:

- `convert_specformer`: ``specformer.ckpt`` -> `~astroclip.models.spectrum.SpectrumEncoder`;
- `convert_spectrum_side`: the spectrum side of ``astroclip.ckpt`` ->
  `~astroclip.models.spectrum.SpectrumEmbedder`;
- `convert_image_side`: the image side of ``astroclip.ckpt`` ->
  `~astroclip.models.image.ImageEncoder`;
- `convert_astrodino`: ``astrodino.ckpt`` -> a class-token `~astroclip.models.image.ImageEncoder`;
- `convert_astroclip`: the whole ``astroclip.ckpt`` -> `~astroclip.models.clip.AstroCLIP`.

`convert_checkpoint` reads a file and applies one of them.  The model factory
names them (`astroclip.models.factory`, kind ``"part"``: ``create_model("astrodino",
pretrained="astrodino.ckpt")``) and `astroclip.models.factory.convert_released_checkpoint`
writes the result in our format.
"""

import _compat_pickle
import inspect
import math
import pickle
import types
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..exceptions import CheckpointError, InputError
from .clip import LOGIT_SCALE, NORM_EPS, AstroCLIP
from .image import ImageEncoder
from .presets import get_preset
from .spectrum import SpectrumEmbedder, SpectrumEncoder
from .weights import _jsonable, _summary, check_state_dict

__all__ = ["ALLOWED_GLOBALS", "CHECKPOINT_LAYOUTS", "Checkpoint", "OpaqueObject",
           "RestrictedUnpickler", "restricted_pickle", "read_checkpoint",
           "read_released_checkpoint", "plain_data", "opaque_globals",
           "Converted", "convert_checkpoint", "convert_specformer", "convert_spectrum_side",
           "convert_image_side", "convert_astrodino", "convert_astroclip"]

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
    >>> from astroclip.models.convert import read_released_checkpoint
    >>> state, hparams = read_released_checkpoint("astroclip.ckpt")  # doctest: +SKIP
    """
    ckpt = read_checkpoint(path)
    return ckpt.state_dict, ckpt.hyper_parameters


# ================================================================== tensor mapping
# Each converter is ``fn(state_dict, hparams, **options) -> (class_name, config,
# state_dict)``: it maps the tensor names of the reference code onto ours, derives
# the configuration from tensor shapes and hyper-parameters and checks the result
# against the target module built on the meta device.  The factory names them
# (`astroclip.models.factory`, kind "part") and builds the module.

def _strip(state, prefix):
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _side(state, prefix, renames, side):
    """The keys of one side of a released ``astroclip.ckpt``, renamed onto our module.

    ``renames`` is a sequence of ``(released prefix, our prefix)``; a key under
    ``prefix`` that matches none of them is an error, as is a side with no key.
    """
    sub = _strip(state, prefix)
    if not sub:
        raise CheckpointError(f"no key starts with {prefix!r}: not an AstroCLIP checkpoint")
    out, unknown = {}, []
    for key, value in sub.items():
        for old, new in renames:
            if key.startswith(old):
                out[new + key[len(old):]] = value
                break
        else:
            unknown.append(prefix + key)
    if unknown:
        raise CheckpointError(f"unexpected keys in the {side} side: {_summary(unknown)}")
    return out


def _backbone_config(state, hparams, num_heads=None):
    """SpectrumEncoder config from released tensors (shapes) and hyper-parameters."""
    for key in ("data_embed.weight", "position_embed.weight"):
        if key not in state:
            raise ValueError(f"missing key {key!r}: this is not a SpecFormer state dict")
    cfg = get_preset("spectrum", "released")
    embed_dim, features = state["data_embed.weight"].shape
    cfg.update(embed_dim=int(embed_dim), max_len=int(state["position_embed.weight"].shape[0]))
    layers = {int(k.split(".")[1]) for k in state if k.startswith("blocks.")}
    cfg["num_layers"] = len(layers)
    window = int(hparams.get("slice_section_length", features - 2))
    if window != features - 2:
        raise ValueError(f"data_embed takes {features} features but slice_section_length is "
                         f"{window}; expected window + 2")
    cfg["window"] = window
    cfg["stride"] = window - int(hparams.get("slice_overlap", window - cfg["stride"]))
    heads = num_heads if num_heads is not None else hparams.get("num_heads")
    if heads is None:
        if embed_dim != 768:
            raise ValueError("the checkpoint does not record num_heads; pass num_heads=")
        heads = 6
    cfg["num_heads"] = int(heads)
    if "dropout" in hparams:
        cfg["dropout"] = float(hparams["dropout"])
    if "mask_num_chunks" in hparams:
        cfg["mask_runs"] = int(hparams["mask_num_chunks"])
    if "mask_chunk_width" in hparams:
        cfg["mask_run_length"] = int(hparams["mask_chunk_width"])
    if "blocks.0.mlp.encoder.weight" in state:
        cfg["mlp_ratio"] = state["blocks.0.mlp.encoder.weight"].shape[0] / embed_dim
    return cfg


def convert_specformer(state, hparams, *, num_heads=None, prefix=""):
    """Map a released ``specformer.ckpt`` state dict onto `SpectrumEncoder`.

    Returns
    -------
    class_name, config, state_dict
    """
    sub = _strip(state, prefix) if prefix else dict(state)
    cfg = _backbone_config(sub, hparams, num_heads)
    with torch.device("meta"):
        model = SpectrumEncoder(**cfg)
    check_state_dict(model, sub, source="specformer checkpoint")
    return "SpectrumEncoder", cfg, sub


def convert_spectrum_side(state, hparams, *, prefix="spectrum_encoder.", num_heads=None,
                          pooling_heads=4, residual=True):
    """Map the spectrum side of a released ``astroclip.ckpt`` onto `SpectrumEmbedder`.

    ``<prefix>backbone.*`` -> ``backbone.*``; ``<prefix>cross_attention.{query,
    multihead_attn, layernorm}.*`` -> ``pooling.*``; ``<prefix>mlp.*`` ->
    ``pooling.mlp.*``.  Keys outside ``prefix`` are ignored (other sides of
    the model); unknown keys inside it are an error.

    Returns
    -------
    class_name, config, state_dict
    """
    out = _side(state, prefix, [("backbone.", "backbone."), ("cross_attention.", "pooling."),
                                ("mlp.", "pooling.mlp.")], "spectrum")
    backbone = _backbone_config(_strip(out, "backbone."), hparams, num_heads)
    if "pooling.query" not in out:
        raise ValueError(f"missing key {prefix}cross_attention.query")
    d = int(out["pooling.query"].shape[-1])
    kw = out.get("pooling.multihead_attn.k_proj_weight",
                 out.get("pooling.multihead_attn.in_proj_weight"))
    input_dim = int(kw.shape[1]) if kw is not None else backbone["embed_dim"]
    if input_dim != backbone["embed_dim"]:
        raise ValueError(f"the pooling keys have width {input_dim} but the backbone is "
                         f"{backbone['embed_dim']} wide")
    enc = out.get("pooling.mlp.encoder.weight")
    mlp_ratio = int(enc.shape[0] // d) if enc is not None else 4
    cfg = dict(backbone=backbone,
               pooling=dict(embed_dim=d, input_dim=input_dim, num_heads=int(pooling_heads),
                            dropout=0.0, mlp_ratio=mlp_ratio, residual=bool(residual)))
    with torch.device("meta"):
        model = SpectrumEmbedder(**cfg)
    check_state_dict(model, out, source="spectrum side of the astroclip checkpoint")
    return "SpectrumEmbedder", dict(model.config), out


# ---------------------------------------------------------------- image side and whole model
def _vit_config(state, *, num_heads=None):
    """VisionTransformer kwargs from DINOv2-layout tensor shapes."""
    if "patch_embed.proj.weight" not in state:
        raise ValueError("missing key 'patch_embed.proj.weight': not a DINOv2 ViT state dict")
    d, c, p, _ = state["patch_embed.proj.weight"].shape
    n = state["pos_embed"].shape[1] - 1
    side = int(round(math.sqrt(n)))
    block_keys = [k.split(".") for k in state if k.startswith("blocks.")]
    chunked = any(len(parts) > 2 and parts[2].isdigit() for parts in block_keys)
    if chunked:
        idx = {int(parts[2]) for parts in block_keys}
        chunks = len({int(parts[1]) for parts in block_keys})
    else:
        idx = {int(parts[1]) for parts in block_keys}
        chunks = 0
    first = "blocks.0.0." if chunked else "blocks.0."
    if num_heads is None:
        if d % 64:
            raise ValueError(f"cannot infer the number of heads of a {d}-wide ViT; pass num_heads=")
        num_heads = d // 64
    return dict(img_size=side * p, patch_size=int(p), in_chans=int(c), embed_dim=int(d),
                depth=len(idx), num_heads=int(num_heads),
                mlp_ratio=state[first + "mlp.fc1.weight"].shape[0] / d,
                layerscale_init=1e-5 if first + "ls1.gamma" in state else None,
                block_chunks=chunks,
                num_register_tokens=int(state["register_tokens"].shape[1])
                if "register_tokens" in state else 0)


def convert_image_side(state, hparams, *, prefix="image_encoder.", num_heads=None,
                       pooling_heads=4):
    """Map the image side of a released ``astroclip.ckpt`` onto `ImageEncoder`.

    ``<prefix>backbone.*`` (DINOv2 names) -> ``backbone.*``;
    ``<prefix>cross_attention.*`` -> ``cross_attention.*``; ``<prefix>mlp.*`` ->
    ``cross_attention.mlp.*``.  The ViT's number of heads is ``embed_dim / 64``
    unless given (16 for the released ViT-L).

    Returns
    -------
    class_name, config, state_dict
    """
    out = _side(state, prefix, [("backbone.", "backbone."),
                                ("cross_attention.", "cross_attention."),
                                ("mlp.", "cross_attention.mlp.")], "image")
    backbone = _vit_config(_strip(out, "backbone."), num_heads=num_heads)
    # DINOv2 training heads are not part of the backbone
    out = {k: v for k, v in out.items()
           if not k.startswith(("backbone.head.", "backbone.dino_head.", "backbone.ibot_head."))}
    if "cross_attention.query" not in out:
        raise ValueError(f"missing key {prefix}cross_attention.query")
    d = int(out["cross_attention.query"].shape[-1])
    cfg = get_preset("image", "released")
    cfg.update(backbone="vit", backbone_kwargs=backbone, embed_dim=d,
               crop_size=backbone["img_size"], head_heads=int(pooling_heads), dropout=0.0)
    with torch.device("meta"):
        model = ImageEncoder(**cfg)
    check_state_dict(model, out, source="image side of the astroclip checkpoint")
    return "ImageEncoder", dict(model.config), out


_DINO_HEADS = ("dino_head.", "ibot_head.")


def convert_astrodino(state, hparams, *, num_heads=None):
    """Map a released ``astrodino.ckpt`` (DINOv2 ViT) onto a class-token `ImageEncoder`.

    The reference DINOv2 trainer saves ``{"teacher": model.teacher.state_dict()}``:
    the ViT under ``backbone.`` (DINOv2 names) and the training heads under
    ``dino_head.`` (and ``ibot_head.`` with a separate iBOT head);
    `astroclip.models.convert.read_checkpoint` hands the teacher dict here.  A
    bare ViT state dict, optionally with DDP's ``module.`` prefix (what DINOv2's
    ``load_pretrained_weights`` strips), is accepted too.  The training heads
    are dropped.

    The result embeds like the reference: centre crop, colour mapping, ViT,
    and the normalised class token (``embedding="class_token"``, width of the
    ViT); no randomly initialised tensor is involved.  For the alignment,
    `ImageEncoder.with_head` adds a fresh cross-attention head.

    Parameters
    ----------
    num_heads : int, optional
        Attention heads of the ViT (default ``width / 64``: 16 for the released
        ViT-L).

    Returns
    -------
    class_name, config, state_dict
    """
    sd = dict(state)
    if sd and all(k.startswith("module.") for k in sd):
        sd = _strip(sd, "module.")
    if any(k.startswith("backbone.") for k in sd):
        unknown = [k for k in sd if not k.startswith(("backbone.",) + _DINO_HEADS)]
        if unknown:
            raise CheckpointError(
                f"unexpected keys in the astrodino checkpoint: {_summary(unknown)}; "
                "expected the DINOv2 trainer's teacher dict (backbone.*, dino_head.*, "
                "ibot_head.*) or a bare ViT state dict")
        sd = _strip(sd, "backbone.")
    backbone = _vit_config(sd, num_heads=num_heads)
    cfg = dict(backbone="vit", backbone_kwargs=backbone, crop_size=backbone["img_size"],
               input_mapping="color_map", embedding="class_token")
    with torch.device("meta"):
        model = ImageEncoder(**cfg)
    full = {f"backbone.{k}": v for k, v in sd.items()}
    check_state_dict(model, full, source="astrodino checkpoint")
    return "ImageEncoder", dict(model.config), full


def convert_astroclip(state, hparams, *, num_heads=None, image_num_heads=None,
                      spectrum_num_heads=None, pooling_heads=4, logit_scale=None):
    """Map a whole released ``astroclip.ckpt`` onto `AstroCLIP`.

    Both sides are converted (`convert_image_side`,
    `convert_spectrum_side`).  The fixed logit scale is
    ``logit_scale``, else the ``logit_scale`` hyper-parameter, else 15.5 (a
    ``logit_scale`` / ``temperature`` tensor in the state dict is not used).

    Parameters
    ----------
    num_heads : int, optional
        Attention heads of both transformers, unless given separately (the
        ``--num-heads`` option of ``astroclip convert-weights``).
    image_num_heads, spectrum_num_heads : int, optional
        Attention heads of the ViT (default ``width / 64``: 16 for the released
        ViT-L) and of the spectrum transformer (default: from the
        hyper-parameters, 6 for width 768).
    pooling_heads : int, optional
        Heads of both cross-attention heads (4).

    Returns
    -------
    class_name, config, state_dict
    """
    image_num_heads = num_heads if image_num_heads is None else image_num_heads
    spectrum_num_heads = num_heads if spectrum_num_heads is None else spectrum_num_heads
    _, icfg, istate = convert_image_side(state, hparams, pooling_heads=pooling_heads,
                                         num_heads=image_num_heads)
    _, scfg, sstate = convert_spectrum_side(state, hparams, pooling_heads=pooling_heads,
                                            num_heads=spectrum_num_heads)
    known = ("image_encoder.", "spectrum_encoder.", "logit_scale", "temperature")
    unknown = [k for k in state if not k.startswith(known)]
    if unknown:
        raise ValueError(f"unexpected keys in the astroclip checkpoint: {_summary(unknown)}")
    if logit_scale is None:
        logit_scale = float(hparams.get("logit_scale", LOGIT_SCALE))
    cfg = dict(image=icfg, spectrum=scfg, logit_scale=float(logit_scale), norm_eps=NORM_EPS,
               freeze="paper")
    full = {f"image_encoder.{k}": v for k, v in istate.items()}
    full.update({f"spectrum_encoder.{k}": v for k, v in sstate.items()})
    with torch.device("meta"):
        model = AstroCLIP(**cfg)
    check_state_dict(model, full, source="astroclip checkpoint")
    return "AstroCLIP", dict(model.config), full


# ================================================================== reading + mapping
@dataclass
class Converted:
    """A released checkpoint mapped onto one of our classes (not yet built).

    Attributes
    ----------
    class_name : str
        Our class (a name of the factory's table, kind ``"class"``).
    config : dict
        Its constructor arguments.
    state_dict : dict
        Tensors under our names, float32.
    metadata : dict
        Provenance for ``config.json``: source file name, part, layout, the
        plain-data hyper-parameters, the classes named but not imported.
    """

    class_name: str
    config: dict
    state_dict: dict
    metadata: dict = field(default_factory=dict)


def _check_options(part, converter, options):
    """Refuse options the part's converter does not take (instead of a TypeError)."""
    params = list(inspect.signature(converter).parameters.values())[2:]
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return
    known = [p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise InputError(f"part {part!r} does not take {', '.join(unknown)}; its options are "
                         f"{', '.join(known) or 'none'}")


def _float32(state):
    """Half-precision tensors (mixed-precision training) widened to float32."""
    return {k: v.float() if v.dtype in (torch.float16, torch.bfloat16) else v
            for k, v in state.items()}


def convert_checkpoint(path, converter, *, part="", **options):
    """Read a released checkpoint safely and map it with ``converter``.

    Parameters
    ----------
    path : path
        ``specformer.ckpt``, ``astroclip.ckpt``, ``astrodino.ckpt`` or a bare
        state dict (any layout of `CHECKPOINT_LAYOUTS`).
    converter : callable
        One of the ``convert_*`` functions of this module.
    part : str, optional
        The part's name, for messages and the provenance.
    **options
        Passed to the converter; one it does not take is an
        `~astroclip.exceptions.InputError`.

    Returns
    -------
    `Converted`

    Examples
    --------
    >>> from astroclip.models.convert import convert_checkpoint, convert_specformer
    >>> conv = convert_checkpoint("specformer.ckpt", convert_specformer)  # doctest: +SKIP
    """
    _check_options(part, converter, options)
    ckpt = read_checkpoint(path)
    hparams = ckpt.hyper_parameters
    name, config, state = converter(_float32(ckpt.state_dict), hparams, **options)
    return Converted(name, config, state,
                     {"converted_from": Path(path).name, "part": part,
                      "source_layout": ckpt.layout,
                      "source_hyper_parameters": _jsonable(hparams),
                      "source_objects_not_imported": ckpt.not_imported})
