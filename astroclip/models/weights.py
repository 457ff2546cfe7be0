"""Model weights: our safetensors + JSON format, and conversion of released checkpoints.

Our format
----------
A model is a folder holding ``model.safetensors`` (the state dict, no pickle)
and ``config.json``::

    {"format": "astroclip-weights", "format_version": 1,
     "family": "spectrum", "class": "SpectrumEncoder",
     "config": {...constructor keyword arguments...},
     "astroclip_version": "...", "metadata": {...}}

`save_model` writes both atomically (weights first, the config last, so a
folder with a config is complete); `load_model` rebuilds the module from the
class registry `MODEL_CLASSES` and loads the tensors strictly.  A module is
saveable when it has a ``config`` attribute (JSON-able constructor arguments)
and its class is registered (`register_model_class`).

Released checkpoints
--------------------
`convert_released_checkpoint` reads a released checkpoint with
`astroclip.models.convert.read_checkpoint` (``torch.load(weights_only=True)``
first, then, for a Lightning checkpoint whose hyper-parameters pickle modules
of the reference code, a restricted unpickler that imports and calls nothing),
maps its tensors onto our modules (the names of the public reference code,
PolymathicAI/AstroCLIP), checks that every tensor lands somewhere with the
right shape and that nothing is missing, and writes our format.  Parts known
here:

- ``"specformer"``: ``specformer.ckpt`` -> `~astroclip.models.spectrum.SpectrumEncoder`
  (the names are ours already);
- ``"astroclip-spectrum"``: the spectrum side of ``astroclip.ckpt``
  (``spectrum_encoder.backbone.*``, ``spectrum_encoder.cross_attention.*``,
  ``spectrum_encoder.mlp.*``) -> `~astroclip.models.spectrum.SpectrumEmbedder`.

Extension point: other parts (the image side of ``astroclip.ckpt``,
``astrodino.ckpt``, the whole aligned model) are added with
`register_released_part` from the module that defines the target model, and
that module is listed in `RELEASED_PART_MODULES` so that it is imported before
a part is looked up.  A part converter is ``fn(state_dict, hparams, **options)
-> (class_name, config, state_dict)``; it can reuse `convert_spectrum_side` and
`check_state_dict`.
"""

import importlib
import json
from pathlib import Path

import torch

from .._io import atomic_path, check_output_path
from ..exceptions import InputError, ModelFormatError
from .convert import read_checkpoint
from .convert import read_released_checkpoint  # noqa: F401 - its historical import path

__all__ = [
    "FORMAT", "FORMAT_VERSION", "WEIGHTS_FILE", "CONFIG_FILE", "MODEL_CLASSES",
    "RELEASED_PARTS", "RELEASED_PART_MODULES", "register_model_class", "register_released_part",
    "save_model", "load_model", "read_model_config", "read_released_checkpoint",
    "check_state_dict", "convert_specformer", "convert_spectrum_side",
    "convert_released_checkpoint",
]

FORMAT = "astroclip-weights"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"

#: class name -> (family, "module:attribute") of modules `load_model` can build.
MODEL_CLASSES = {
    "SpectrumEncoder": ("spectrum", "astroclip.models.spectrum:SpectrumEncoder"),
    "SpectrumEmbedder": ("spectrum", "astroclip.models.spectrum:SpectrumEmbedder"),
    "CrossAttentionHead": ("head", "astroclip.models.heads:CrossAttentionHead"),
    "MLP": ("head", "astroclip.models.heads:MLP"),
    "ImageEncoder": ("image", "astroclip.models.image:ImageEncoder"),
    "AstroCLIP": ("clip", "astroclip.models.clip:AstroCLIP"),
}


def register_model_class(name, target, *, family):
    """Make a module class saveable/loadable.

    Parameters
    ----------
    name : str
        Class name written in ``config.json``.
    target : str
        ``"package.module:ClassName"``.
    family : str
        Model family (``"spectrum"``, ``"image"``, ``"clip"``, ...).
    """
    MODEL_CLASSES[name] = (family, target)


def _resolve(target):
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


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
        A registered class with a ``config`` attribute.
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
    >>> from astroclip.models.weights import save_model, load_model
    >>> folder = save_model(MLP(4, (8,), 2), tempfile.mkdtemp() + "/mlp")
    >>> load_model(folder).config["hidden_features"]
    [8]
    """
    from safetensors.torch import save_file

    name = type(model).__name__
    if name not in MODEL_CLASSES:
        raise ValueError(f"{name} is not a registered model class; register it with "
                         "astroclip.models.weights.register_model_class")
    config = getattr(model, "config", None)
    if not isinstance(config, dict):
        raise ValueError(f"{name} has no `config` dict of constructor arguments; it cannot "
                         "be saved in the astroclip format")
    out = Path(out)
    check_output_path(out / CONFIG_FILE, overwrite=overwrite)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    with atomic_path(out / WEIGHTS_FILE) as tmp:
        save_file(tensors, tmp, metadata={"format": "pt"})
    doc = {"format": FORMAT, "format_version": FORMAT_VERSION, "family": MODEL_CLASSES[name][0],
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


def _build(name, config, *, device=None):
    if name not in MODEL_CLASSES:
        raise ValueError(f"unknown model class {name!r}; known: {sorted(MODEL_CLASSES)}")
    cls = _resolve(MODEL_CLASSES[name][1])
    if device is None:
        return cls.from_config(config) if hasattr(cls, "from_config") else cls(**config)
    with torch.device(device):
        return cls.from_config(config) if hasattr(cls, "from_config") else cls(**config)


def _build_loaded(name, config, state, *, source):
    """Build a module and fill it with ``state`` (strictly checked).

    The module is first built on the meta device (no wasted initialisation)
    and the tensors are assigned; if it has tensors outside its state dict
    (non-persistent buffers), it is built normally instead.
    """
    model = _build(name, config, device="meta")
    check_state_dict(model, state, source=source)
    model.load_state_dict(state, strict=True, assign=True)
    if any(t.is_meta for t in list(model.parameters()) + list(model.buffers())):
        model = _build(name, config)
        model.load_state_dict(state, strict=True)
    return model


def load_model(path, *, device="cpu", eval=True):
    """Rebuild a module saved by `save_model`.

    Parameters
    ----------
    path : path
        Model folder (or its ``config.json``).
    device : str or `torch.device`, optional
        Where to put the weights.
    eval : bool, optional
        Return the module in evaluation mode.

    Returns
    -------
    `torch.nn.Module`
    """
    from safetensors.torch import load_file

    from safetensors import SafetensorError

    doc = read_model_config(path)
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
    state = _check_tensors(state, weights)
    model = _build_loaded(doc["class"], doc["config"], state, source=str(weights))
    model.to(device)
    return model.eval() if eval else model


# ------------------------------------------------------------------ released checkpoints
def _summary(keys, n=8):
    keys = sorted(keys)
    more = f" ... and {len(keys) - n} more" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def check_state_dict(model, state, *, source="checkpoint"):
    """Check that ``state`` fills ``model`` exactly: no missing, unexpected or mis-shaped tensor.

    Raises
    ------
    ValueError
        Naming the offending keys.
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
        raise ValueError(f"{source} does not match {type(model).__name__}: " + " | ".join(problems))


def _strip(state, prefix):
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _backbone_config(state, hparams, num_heads=None):
    """SpectrumEncoder config from released tensors (shapes) and hyper-parameters."""
    from .presets import get_preset

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
    from .spectrum import SpectrumEncoder

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
    from .spectrum import SpectrumEmbedder

    sub = _strip(state, prefix)
    if not sub:
        raise ValueError(f"no key starts with {prefix!r}: not an AstroCLIP checkpoint")
    out, unknown = {}, []
    for key, value in sub.items():
        if key.startswith("backbone."):
            out[key] = value
        elif key.startswith("cross_attention."):
            out["pooling." + key[len("cross_attention."):]] = value
        elif key.startswith("mlp."):
            out["pooling." + key] = value
        else:
            unknown.append(prefix + key)
    if unknown:
        raise ValueError(f"unexpected keys in the spectrum side: {_summary(unknown)}")
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


#: part name -> (description, converter or "module:function").
RELEASED_PARTS = {
    "specformer": ("specformer.ckpt: the pretrained spectrum transformer",
                   convert_specformer),
    "astroclip-spectrum": ("astroclip.ckpt, spectrum side: transformer + pooling head",
                           convert_spectrum_side),
}

#: Modules imported (when present) before a part is looked up; each may call
#: `register_released_part` at import time (e.g. the image models for the image
#: side of astroclip.ckpt and astrodino.ckpt).
RELEASED_PART_MODULES = ["astroclip.models.image", "astroclip.models.clip"]


def register_released_part(name, converter, *, description):
    """Add a released-checkpoint part to `convert_released_checkpoint`.

    Parameters
    ----------
    name : str
        Part name (``part=`` argument, ``--part`` option).
    converter : callable or str
        ``fn(state_dict, hparams, **options) -> (class_name, config,
        state_dict)`` or ``"module:function"``; ``class_name`` must be in
        `MODEL_CLASSES`.
    description : str
        One line shown in errors and ``--help``.
    """
    RELEASED_PARTS[name] = (description, converter)


def _load_part_modules():
    for module in RELEASED_PART_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise


def _check_options(part, converter, options):
    """Refuse options the part's converter does not take (instead of a TypeError)."""
    import inspect

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


def convert_released_checkpoint(path, *, out, part="specformer", overwrite=False, **options):
    """Convert a released AstroCLIP checkpoint into our safetensors + JSON format.

    The file is read by `astroclip.models.convert.read_checkpoint`: nothing
    from it is imported or run, in any of the layouts the reference code writes
    (Lightning checkpoints, whose hyper-parameters may hold pickled modules,
    and the DINOv2 trainer's ``{"teacher": state_dict}``).

    Parameters
    ----------
    path : path
        ``specformer.ckpt``, ``astroclip.ckpt`` or ``astrodino.ckpt``.
    out : path
        Output model folder.
    part : str, optional
        Which model to extract (`RELEASED_PARTS`): ``"specformer"``,
        ``"astroclip"``, ``"astroclip-image"``, ``"astroclip-spectrum"`` or
        ``"astrodino"``.
    overwrite : bool, optional
        Replace an existing model in ``out``.
    **options
        Passed to the part converter (e.g. ``num_heads=`` when the checkpoint
        does not record it); an option the part does not take is an
        `~astroclip.exceptions.InputError`.

    Returns
    -------
    `pathlib.Path`
        The output folder; load it with `load_model`.  Its ``config.json``
        metadata records the source file, part, layout, the plain-data
        hyper-parameters and the classes the file named but that were not
        imported.

    Raises
    ------
    ValueError
        Unknown part or option; a file that is not a checkpoint in a known
        layout (`~astroclip.exceptions.CheckpointError`); missing, unexpected
        or mis-shaped tensors.

    Examples
    --------
    >>> from astroclip.models.weights import convert_released_checkpoint
    >>> convert_released_checkpoint("specformer.ckpt", out="specformer/")  # doctest: +SKIP
    """
    _load_part_modules()
    if part not in RELEASED_PARTS:
        raise ValueError(f"unknown part {part!r}; available: "
                         + "; ".join(f"{k} ({v[0]})" for k, v in sorted(RELEASED_PARTS.items())))
    converter = RELEASED_PARTS[part][1]
    if isinstance(converter, str):
        converter = _resolve(converter)
    _check_options(part, converter, options)
    check_output_path(Path(out) / CONFIG_FILE, overwrite=overwrite)
    ckpt = read_checkpoint(path)
    hparams = ckpt.hyper_parameters
    name, config, new_state = converter(_float32(ckpt.state_dict), hparams, **options)
    model = _build_loaded(name, config, new_state, source=str(path))
    return save_model(model, out, overwrite=overwrite,
                      metadata={"converted_from": Path(path).name, "part": part,
                                "source_layout": ckpt.layout,
                                "source_hyper_parameters": _jsonable(hparams),
                                "source_objects_not_imported": ckpt.not_imported})
