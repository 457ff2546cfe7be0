"""The model factory: every model name resolves here, through one table.

A *model name* is one of five kinds (`KINDS`); four are entries of the static
table `MODELS`, the fifth is a folder of the local model directory:

``"preset"``
    An architecture of `astroclip.models.presets` (the one place where sizes
    are declared), named ``<family>-<preset>``: ``"spectrum-small"``,
    ``"image-resnet-small"``, ``"clip-small"`` ...  Built with random weights
    (or the weights of ``pretrained=``).  Where the family is known (the
    ``family=`` argument: a training stage's ``preset=``, `align`'s
    ``spectrum_model=``), the bare preset name works too: ``"small"``.
``"class"``
    A model class, named as in ``config.json`` (``"SpectrumEncoder"``,
    ``"ImageEncoder"``, ``"AstroCLIP"`` ...), built from the keyword
    arguments given.  Classes are named ``"module:attribute"`` and imported
    only when one is built: no model module registers itself.
``"released"``
    A released AstroCLIP checkpoint (``"astroclip-released"``,
    ``"specformer-released"``, ``"astrodino-released"``): downloaded once,
    its sha256 checked, converted once into our format in the local model
    directory (`fetch_released`), then loaded from there.
``"part"``
    A converter of released checkpoints (``"specformer"``, ``"astroclip"``,
    ``"astroclip-image"``, ``"astroclip-spectrum"``, ``"astrodino"``;
    `astroclip.models.convert`): ``create_model(part, pretrained=FILE)``.
``"local"``
    A trained model copied into the local model directory with
    `register_model` (or any model folder given by path).

`create_model` builds any of them, `list_models` lists them, `model_path`
gives the folder of a trained one; an unknown name is a
`~astroclip.exceptions.ModelNotFoundError` listing the closest names.  The
design follows open_clip's ``factory.py`` (``create_model``,
``list_models``) and ``pretrained.py`` (one table of released weights).

Examples
--------
>>> from astroclip.models.factory import create_model, list_models
>>> model = create_model("spectrum-small", num_layers=1)
>>> type(model).__name__, model.config["num_layers"]
('SpectrumEncoder', 1)
>>> "clip-small" in list_models(kind="preset")["name"]
True
"""

import difflib
import importlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from astropy.table import Table

from .._io import atomic_path
from ..exceptions import InputError, ModelFormatError, ModelNotFoundError
from . import presets as _presets
from . import store
from .weights import (CONFIG_FILE, WEIGHTS_FILE, check_state_dict, is_model_folder,
                      read_model_config, read_state_dict, save_model)

__all__ = ["KINDS", "ModelEntry", "MODELS", "create_model", "list_models", "model_kind",
           "model_config", "model_path", "register_model", "fetch_released",
           "convert_released_checkpoint", "model_dir"]

#: The kinds of model name (see the module documentation).
KINDS = ("preset", "class", "released", "part", "local")

model_dir = store.model_dir


@dataclass(frozen=True)
class ModelEntry:
    """One named model of the table `MODELS`.

    Attributes
    ----------
    name : str
        The name given to `create_model`.
    kind : {"preset", "class", "released", "part"}
        What the name stands for (`KINDS`).
    family : str
        ``"spectrum"``, ``"image"``, ``"clip"`` or ``"head"``.
    description : str
        One line for `list_models`.
    target : str
        ``"module:attribute"``: the class (kinds ``"preset"`` and ``"class"``)
        or the converter (kind ``"part"``).
    preset : str
        Kind ``"preset"``: the key in the family's presets.
    part : str
        Kind ``"released"``: the part converted from the checkpoint.
    repo_id, filename, revision, sha256, url : str
        Kind ``"released"``: where the checkpoint lives on the Hugging Face
        hub, its pinned checksum (None: the hub's LFS record is used) and a
        direct address overriding the hub's (also ``file://`` for mirrors).
    """

    name: str
    kind: str
    family: str
    description: str
    target: str = ""
    preset: str = ""
    part: str = ""
    repo_id: str = ""
    filename: str = ""
    revision: str = "main"
    sha256: str | None = None
    url: str | None = None

    @property
    def download_url(self):
        """Address of a released checkpoint."""
        if self.url:
            return self.url
        return f"{store.HF_ENDPOINT}/{self.repo_id}/resolve/{self.revision}/{self.filename}"


# ------------------------------------------------------------------ the table
_CLASSES = {
    "SpectrumEncoder": ("spectrum", "astroclip.models.spectrum:SpectrumEncoder",
                        "spectrum transformer (masked-filling pretraining); embeds with the "
                        "mean of its output tokens"),
    "SpectrumEmbedder": ("spectrum", "astroclip.models.spectrum:SpectrumEmbedder",
                         "spectrum transformer + cross-attention pooling head"),
    "ImageEncoder": ("image", "astroclip.models.image:ImageEncoder",
                     "image backbone (ResNet or ViT) + embedding head"),
    "AstroCLIP": ("clip", "astroclip.models.clip:AstroCLIP",
                  "aligned image and spectrum encoders"),
    "CrossAttentionHead": ("head", "astroclip.models.heads:CrossAttentionHead",
                           "cross-attention pooling head"),
    "MLP": ("head", "astroclip.models.heads:MLP", "multi-layer perceptron"),
}

#: family -> (presets of `astroclip.models.presets`, the class they configure)
_PRESET_FAMILIES = {"spectrum": (_presets.SPECTRUM_PRESETS, "SpectrumEncoder"),
                    "image": (_presets.IMAGE_PRESETS, "ImageEncoder"),
                    "clip": (_presets.CLIP_PRESETS, "AstroCLIP")}

_PARTS = {
    "specformer": ("spectrum", "astroclip.models.convert:convert_specformer",
                   "specformer.ckpt: the pretrained spectrum transformer"),
    "astroclip-spectrum": ("spectrum", "astroclip.models.convert:convert_spectrum_side",
                           "astroclip.ckpt, spectrum side: transformer + pooling head"),
    "astroclip-image": ("image", "astroclip.models.convert:convert_image_side",
                        "astroclip.ckpt, image side: DINOv2 ViT + cross-attention head"),
    "astrodino": ("image", "astroclip.models.convert:convert_astrodino",
                  "astrodino.ckpt: the DINOv2 ViT image backbone (class-token embedding)"),
    "astroclip": ("clip", "astroclip.models.convert:convert_astroclip",
                  "astroclip.ckpt: the whole aligned model (image and spectrum sides)"),
}

_RELEASED = [
    dict(name="astroclip-released", family="clip", repo_id="polymathic-ai/astroclip",
         filename="astroclip.ckpt", part="astroclip",
         description="Released AstroCLIP: DINOv2 ViT-L image encoder + SpecFormer, aligned, "
                     "1024-d embeddings"),
    dict(name="specformer-released", family="spectrum", repo_id="polymathic-ai/specformer",
         filename="specformer.ckpt", part="specformer",
         description="Released SpecFormer spectrum transformer (masked-filling pretraining); "
                     "spectrum embedding: the mean of its output tokens, 768-d, not in the "
                     "AstroCLIP space"),
    dict(name="astrodino-released", family="image", repo_id="polymathic-ai/astrodino",
         filename="astrodino.ckpt", part="astrodino",
         description="Released AstroDINO image ViT-L/12 (DINOv2 pretraining); image "
                     "embedding: its class token, 1024-d, not in the AstroCLIP space"),
]


def _preset_description(family, key, cfg):
    if family == "spectrum":
        return (f"spectrum transformer '{key}': width {cfg['embed_dim']}, {cfg['num_layers']} "
                f"layers, {cfg['num_heads']} heads, windows of {cfg['window']}")
    if family == "image":
        return (f"image encoder '{key}': {cfg['backbone']}, {cfg['embed_dim']}-d, "
                f"{cfg['crop_size']} px crops, {cfg['input_mapping']} input")
    return (f"aligned model '{key}': image '{cfg['image']}', spectrum "
            f"'{cfg['spectrum']['backbone']}', {cfg['spectrum']['pooling']['embed_dim']}-d")


def _table():
    table = {}
    for family, (presets, cls) in _PRESET_FAMILIES.items():
        for key, cfg in presets.items():
            name = f"{family}-{key}"
            table[name] = ModelEntry(name, "preset", family, _preset_description(family, key, cfg),
                                     target=_CLASSES[cls][1], preset=key)
    for name, (family, target, desc) in _CLASSES.items():
        table[name] = ModelEntry(name, "class", family, desc, target=target)
    for name, (family, target, desc) in _PARTS.items():
        table[name] = ModelEntry(name, "part", family, desc, target=target)
    for kw in _RELEASED:
        table[kw["name"]] = ModelEntry(kind="released", **kw)
    return table


#: The one table of model names: presets, classes, checkpoint parts, released models.
MODELS = _table()


# ------------------------------------------------------------------ resolving names
def _resolve(target):
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def _all_names():
    return sorted(set(MODELS) | set(store.local_models()))


def _not_found(name, family=None):
    names = _all_names()
    text = str(name)
    close = []
    if family:  # the family's names first
        own = [n for n in names if n in MODELS and MODELS[n].family == family]
        close = difflib.get_close_matches(f"{family}-{text}", own, n=4, cutoff=0.5)
    close += [c for c in difflib.get_close_matches(text, names, n=4, cutoff=0.5)
              if c not in close]
    close = close[:4]
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    what = f"{family} model" if family else "model"
    article = "an" if str(family)[:1] in "aeiou" else "a"
    presets = (f"{article} {family} preset ({', '.join(_presets_of(family))}), " if family in
               _PRESET_FAMILIES else "")
    return ModelNotFoundError(
        f"unknown {what} {text!r}: not {presets}a model folder, a checkpoint file or a known "
        f"name{hint} "
        "(astroclip.list_models() lists the names: presets, classes, released models, "
        "checkpoint parts and the models registered in "
        f"{store.model_dir()}; register a trained model with astroclip.register_model)")


def _presets_of(family):
    return sorted(_PRESET_FAMILIES[family][0])


def _lookup(name, family=None):
    """``(kind, entry or path)`` of a model name; see `model_kind`."""
    if isinstance(name, ModelEntry):
        return name.kind, name
    if not isinstance(name, (str, os.PathLike)):
        raise InputError(f"a model name is a string or a path, got {type(name).__name__}")
    path = Path(os.fspath(name)).expanduser()
    if path.name == CONFIG_FILE and path.is_file():
        path = path.parent
    if is_model_folder(path):
        return "local", path
    if path.is_dir():
        raise ModelFormatError(f"{path} is a folder but not a model: it needs {CONFIG_FILE} "
                               f"and {WEIGHTS_FILE} (as written by "
                               "astroclip.models.weights.save_model)")
    text = os.fspath(name)
    if text in MODELS:
        return MODELS[text].kind, MODELS[text]
    if family is not None and f"{family}-{text}" in MODELS:
        entry = MODELS[f"{family}-{text}"]
        if entry.kind == "preset":
            return "preset", entry
    local = store.model_dir() / text
    if is_model_folder(local):
        return "local", local
    if path.is_file():
        return "file", path
    if not isinstance(name, str) or os.sep in text or (os.altsep and os.altsep in text):
        raise ModelNotFoundError(f"no model folder at {path}: it does not exist (a model "
                                 f"folder holds {CONFIG_FILE} and {WEIGHTS_FILE}, as written by "
                                 "save_model or a training command)")
    raise _not_found(name, family)


def model_kind(name, *, family=None):
    """What a model name stands for.

    Parameters
    ----------
    name : str or path
        A name of `list_models`, a model folder or a checkpoint file.
    family : str, optional
        ``"spectrum"``, ``"image"`` or ``"clip"``: lets a bare preset name
        (``"small"``) stand for that family's preset.

    Returns
    -------
    str
        One of `KINDS`, or ``"file"`` for a checkpoint file.

    Raises
    ------
    ModelNotFoundError
        An unknown name (the message lists the closest ones).

    Examples
    --------
    >>> from astroclip.models.factory import model_kind
    >>> model_kind("small", family="clip"), model_kind("AstroCLIP")
    ('preset', 'class')
    """
    return _lookup(name, family)[0]


def model_config(name, *, family=None, **overrides):
    """Constructor arguments of an architecture preset, with ``overrides``.

    Parameters
    ----------
    name : str
        A preset (``"spectrum-small"``, or ``"small"`` with ``family=``).
    family : {"spectrum", "image", "clip"}, optional
        Lets a bare preset name stand for that family's preset.
    **overrides
        Arguments replacing the preset's.

    Returns
    -------
    dict
        A fresh copy, safe to modify.

    Raises
    ------
    ModelNotFoundError
        An unknown name.
    InputError
        A name that is not a preset (a trained model, a class ...).

    Examples
    --------
    >>> from astroclip.models.factory import model_config
    >>> model_config("small", family="spectrum", num_layers=1)["num_layers"]
    1
    """
    kind, found = _lookup(name, family)
    if kind != "preset":
        what = f"model {kind}" if kind != "file" else "file"
        raise InputError(f"{name!r} is a {what}, not an architecture preset; presets: "
                         + ", ".join(e.name for e in MODELS.values() if e.kind == "preset"
                                     and (family is None or e.family == family)))
    if family is not None and found.family != family:
        raise InputError(f"{name!r} is a {found.family} preset, not a {family} one")
    cfg = _presets.get_preset(found.family, found.preset)
    cfg.update(overrides)
    return cfg


def model_path(name, *, download=True, progress=True):
    """The folder holding trained model ``name`` in our format.

    Parameters
    ----------
    name : str or path
        A model folder, a name registered in the local model directory, or a
        released model (fetched and converted on first use).
    download : bool, optional
        Allow downloading a released model that is not available locally.
    progress : bool, optional
        Show the download progress.

    Raises
    ------
    ModelNotFoundError
        Unknown name (the message lists the closest known ones).
    InputError
        A preset, class or checkpoint part: these have no trained weights
        (build one with `create_model`).
    DataFileError
        A released model that is neither local nor downloadable.

    Examples
    --------
    >>> from astroclip.models.factory import model_path
    >>> model_path("astroclip-released")  # doctest: +SKIP
    """
    kind, found = _lookup(name)
    if kind == "local":
        return found
    if kind == "released":
        local = store.model_dir() / found.name
        if is_model_folder(local):
            return local
        if not download and not store.is_cached(found):
            raise store.offline_error(found, "download disabled")
        return fetch_released(found.name, progress=progress)
    if kind == "file":
        raise InputError(f"{found} is a checkpoint file, not a model folder: convert it with "
                         "`astroclip convert-weights` (or create_model(PART, pretrained=FILE), "
                         "parts: " + ", ".join(sorted(_PARTS)) + ")")
    raise InputError(f"{name!r} is a model {kind} ({found.description}), not a trained model: "
                     f"create_model({str(name)!r}) builds it with random weights; load_model "
                     "and the embedding functions need a trained model (list_models(kind="
                     "'released') or kind='local')")


# ------------------------------------------------------------------ building
def _instantiate(target, config, *, device=None):
    cls = _resolve(target)
    build = cls.from_config if hasattr(cls, "from_config") else (lambda c: cls(**c))
    if device is None:
        return build(config)
    with torch.device(device):
        return build(config)


def _class_entry(name, source):
    entry = MODELS.get(name)
    if entry is None or entry.kind != "class":
        known = sorted(k for k, e in MODELS.items() if e.kind == "class")
        raise ModelFormatError(f"{source} names model class {name!r}, which this astroclip "
                               f"does not know (known classes: {known}); the folder was not "
                               "written by astroclip's save_model, or by a newer astroclip")
    return entry


def _build_loaded(class_name, config, state, *, source):
    """Build a module of the table and fill it with ``state`` (strictly checked).

    Built on the meta device (no wasted initialisation) and the tensors are
    assigned; a module with tensors outside its state dict (non-persistent
    buffers) is built normally instead.
    """
    target = _class_entry(class_name, source).target
    model = _instantiate(target, config, device="meta")
    check_state_dict(model, state, source=source)
    model.load_state_dict(state, strict=True, assign=True)
    if any(t.is_meta for t in list(model.parameters()) + list(model.buffers())):
        model = _instantiate(target, config)
        model.load_state_dict(state, strict=True)
    return model


def _load_folder(path):
    doc = read_model_config(path)
    _class_entry(doc["class"], Path(path) / CONFIG_FILE)
    state = read_state_dict(path)
    try:
        return _build_loaded(doc["class"], doc["config"], state,
                             source=str(Path(path) / WEIGHTS_FILE))
    except (ModelFormatError, TypeError, ValueError, RuntimeError) as exc:
        raise ModelFormatError(f"the weights in {path} do not match the model described by its "
                               f"{CONFIG_FILE} ({exc}); copy the model folder again or write it "
                               "anew with save_model") from exc


def _convert(part, checkpoint, options):
    from .convert import convert_checkpoint

    entry = MODELS[part]
    converted = convert_checkpoint(checkpoint, _resolve(entry.target), part=part, **options)
    model = _build_loaded(converted.class_name, converted.config, converted.state_dict,
                          source=str(checkpoint))
    return model, converted.metadata


def _load_image_backbone(model, path):
    """A torchvision / MoCo v2 ResNet or DINOv2 ViT checkpoint into an ImageEncoder's backbone."""
    from .image import extract_backbone_state_dict, load_backbone_weights

    sd = extract_backbone_state_dict(path)
    own = model.backbone.state_dict()
    head = {k for k in own if k.startswith("fc.")}
    with_head = bool(head) and all(k in sd and sd[k].shape == own[k].shape for k in head)
    if head and not with_head:
        warnings.warn(f"{Path(path).name}: its classifier/projection head does not fit the "
                      "image head of this architecture; the head starts from a fresh "
                      "initialisation")
    load_backbone_weights(model.backbone, sd, include_head=with_head)


def _load_pretrained(model, pretrained, family):
    """Weights of ``pretrained`` (trained model or checkpoint file) into built ``model``."""
    kind, found = _lookup(pretrained)
    if kind in ("local", "released"):
        folder = model_path(pretrained)
        state = read_state_dict(folder)
        check_state_dict(model, state, source=str(folder))
        model.load_state_dict(state, strict=True)
    elif kind == "file" and family == "image":
        _load_image_backbone(model, found)
    elif kind == "file" and family in ("spectrum", "clip"):
        part = "specformer" if family == "spectrum" else "astroclip"
        from .convert import convert_checkpoint

        converted = convert_checkpoint(found, _resolve(MODELS[part].target), part=part)
        check_state_dict(model, converted.state_dict, source=str(found))
        model.load_state_dict(converted.state_dict, strict=True)
    else:
        raise InputError(f"pretrained={pretrained!r} is a model {kind}, which holds no weights; "
                         "give a trained model (folder or name) or a checkpoint file")
    return model


def create_model(name, *, pretrained=None, family=None, device="cpu", download=True,
                 **overrides):
    """Build a model from any name of the table, a model folder or a registered name.

    Parameters
    ----------
    name : str or path
        A name of `list_models` (preset, class, released model, checkpoint
        part, registered model) or a model folder.
    pretrained : str or path, optional
        Weights: for a preset or a class, a trained model (folder or name,
        same architecture) or a checkpoint file (a torchvision / MoCo v2 /
        DINOv2 backbone for image presets, ``specformer.ckpt`` for spectrum
        presets, ``astroclip.ckpt`` for CLIP presets); for a checkpoint part,
        the checkpoint file (required); for a released model, its checkpoint
        already on disk (instead of a download).
    family : {"spectrum", "image", "clip"}, optional
        Lets a bare preset name stand for that family's (``"small"`` with
        ``family="spectrum"`` is ``"spectrum-small"``).
    device : str or `torch.device`, optional
        Where the weights go.
    download : bool, optional
        Allow downloading a released model.
    **overrides
        Constructor arguments replacing the preset's (or, for a class, all of
        them); for a checkpoint part, options of its converter (``num_heads=``).

    Returns
    -------
    `torch.nn.Module`
        In evaluation mode (``.train()`` to train it).

    Raises
    ------
    ModelNotFoundError
        An unknown name (the message lists the closest known names).
    InputError
        Options that do not fit the kind of name (overrides of a trained
        model, a part without its checkpoint ...).
    ModelFormatError
        A damaged model folder, or weights that do not fit the architecture.

    Examples
    --------
    >>> from astroclip.models.factory import create_model
    >>> create_model("clip-small").embed_dim
    128
    >>> create_model("MLP", in_features=4, hidden_features=(8,), out_features=2).config[
    ...     "out_features"]
    2
    >>> create_model("small", family="image")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    astroclip.exceptions.ModelNotFoundError: unknown image model 'small': ...
    """
    kind, found = _lookup(name, family)
    if kind in ("local", "released", "file") and overrides:
        raise InputError(f"{name!r} is a trained model (or checkpoint file): its architecture "
                         f"is fixed, so {', '.join(sorted(overrides))} cannot be changed; "
                         "overrides apply to presets and classes")
    if kind == "local":
        if pretrained is not None:
            raise InputError(f"{name!r} is a trained model: it brings its weights, so "
                             "pretrained= is not used with it")
        model = _load_folder(found)
    elif kind == "released":
        folder = store.model_dir() / found.name
        if pretrained is not None:
            folder = fetch_released(found.name, checkpoint=pretrained)
        elif not is_model_folder(folder):
            folder = model_path(found.name, download=download)
        model = _load_folder(folder)
    elif kind == "part":
        if pretrained is None:
            released = [e.name for e in MODELS.values() if e.kind == "released"
                        and e.part == found.name]
            raise InputError(f"{name!r} converts a released checkpoint: pass the file as "
                             "pretrained=" + (f", or use the released model {released[0]!r}"
                                              if released else ""))
        model, _ = _convert(found.name, pretrained, overrides)
    elif kind == "file":
        raise InputError(f"{found} is a checkpoint file: give it as pretrained= with a part "
                         f"({', '.join(sorted(_PARTS))}) or a preset of its architecture")
    else:
        if kind == "preset":
            config = _presets.get_preset(found.family, found.preset)
            config.update(overrides)
        else:
            config = dict(overrides)
        try:
            model = _instantiate(found.target, config)
        except TypeError as exc:
            raise InputError(f"{name!r} cannot be built with {sorted(config)}: {exc}") from None
        if pretrained is not None:
            _load_pretrained(model, pretrained, found.family)
    return model.to(device).eval()


# ------------------------------------------------------------------ listing, registering
def list_models(*, kind=None, family=None):
    """The model names: presets, classes, released models, checkpoint parts, local models.

    Parameters
    ----------
    kind : str or sequence of str, optional
        Only these kinds (`KINDS`).
    family : str, optional
        Only this family (``"spectrum"``, ``"image"``, ``"clip"``, ``"head"``).

    Returns
    -------
    `~astropy.table.Table`
        Columns ``name``, ``kind``, ``family``, ``source`` (``astroclip``: built
        in; ``released``; ``local``), ``available`` (usable without a
        download or a checkpoint file), ``path`` (the folder, the download
        address, or the ``module:attribute`` built) and ``description``.

    Examples
    --------
    >>> from astroclip import list_models
    >>> t = list_models()
    >>> "astroclip-released" in t["name"] and "spectrum-small" in t["name"]
    True
    >>> sorted(set(map(str, list_models(kind="part")["family"])))
    ['clip', 'image', 'spectrum']
    """
    kinds = set(KINDS if kind is None else [kind] if isinstance(kind, str) else kind)
    unknown = kinds - set(KINDS)
    if unknown:
        raise InputError(f"unknown kind(s) {sorted(unknown)}; choose among {list(KINDS)}")
    rows = []
    if "local" in kinds:
        for name, p in store.local_models().items():
            if name in MODELS:
                continue
            try:
                cfg = read_model_config(p)
            except (ModelFormatError, OSError) as exc:  # one broken folder: listed, unusable
                rows.append((name, "local", "", "local", False, str(p), f"unusable: {exc}"))
                continue
            meta = cfg.get("metadata") if isinstance(cfg.get("metadata"), dict) else {}
            desc = meta.get("description", cfg.get("class", ""))
            rows.append((name, "local", str(cfg.get("family", "")), "local", True, str(p),
                         str(desc)))
    for entry in MODELS.values():
        if entry.kind not in kinds:
            continue
        if entry.kind == "released":
            local = store.model_dir() / entry.name
            avail = is_model_folder(local)
            rows.append((entry.name, "released", entry.family, "released", avail,
                         str(local) if avail else entry.download_url, entry.description))
        else:
            rows.append((entry.name, entry.kind, entry.family, "astroclip",
                         entry.kind != "part", entry.target, entry.description))
    if family is not None:
        rows = [r for r in rows if r[2] == family]
    return Table(rows=rows or None,
                 names=("name", "kind", "family", "source", "available", "path", "description"),
                 dtype=(str, str, str, str, bool, str, str))


def register_model(path, name, *, overwrite=False):
    """Copy a model folder into the local model directory under ``name``.

    The name is checked before anything is written; the copy is made beside
    the destination and moved into place, so a failed copy leaves an older
    model of that name intact.  Only a model folder (``config.json`` +
    ``model.safetensors``) is ever replaced.

    Raises
    ------
    InputError
        ``name`` is not a plain folder name, or is a name of the table
        (preset, class, part, released model).
    ModelFormatError
        ``path`` is not a model folder.
    FileExistsError
        A model called ``name`` exists and ``overwrite`` is False.
    DataFileError
        ``name`` exists in the model directory but is not a model folder.

    Examples
    --------
    >>> from astroclip import register_model
    >>> register_model("run/model", "my-mock-model")  # doctest: +SKIP
    """
    name = store.check_model_name(name)
    src = Path(path)
    if not is_model_folder(src):
        raise ModelFormatError(f"{src} is not a model folder ({CONFIG_FILE} + {WEIGHTS_FILE}); "
                               "give the folder written by save_model or a training command")
    if name in MODELS:
        entry = MODELS[name]
        kind = "released model" if entry.kind == "released" else f"model {entry.kind}"
        raise InputError(f"{name!r} is the name of a {kind}; choose another name")
    return store.copy_model_folder(src, name, overwrite=overwrite)


def _write_json(path, data):
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(data, indent=2))


def fetch_released(name, *, checkpoint=None, progress=True, overwrite=False):
    """Download (or take), verify and convert a released checkpoint.

    Parameters
    ----------
    name : str
        A released model (``list_models(kind="released")``).
    checkpoint : path, optional
        A checkpoint file already on disk (no download); it is verified
        against the pinned sha256 when one is known.
    progress : bool, optional
        Show the download progress.
    overwrite : bool, optional
        Convert again even when the converted model exists.

    Returns
    -------
    `pathlib.Path`
        The converted model folder in `model_dir`.

    Raises
    ------
    ModelNotFoundError
        Not a released model.
    DataFileError
        Offline and not cached: the message says what to download and where.
    CheckpointError
        Checksum mismatch, or a checkpoint that cannot be converted.

    Examples
    --------
    >>> from astroclip.models.factory import fetch_released
    >>> fetch_released("astroclip-released")  # doctest: +SKIP
    """
    entry = MODELS.get(name)
    if entry is None or entry.kind != "released":
        known = sorted(k for k, e in MODELS.items() if e.kind == "released")
        close = difflib.get_close_matches(str(name), known, n=3, cutoff=0.5)
        raise ModelNotFoundError(f"unknown released model {name!r}"
                                 + (f"; did you mean {', '.join(map(repr, close))}?" if close
                                    else "") + f"; released models: {known}")
    target = store.model_dir() / entry.name
    if is_model_folder(target) and not overwrite:
        return target
    path, digest = store.download_checkpoint(entry, checkpoint=checkpoint, progress=progress)
    convert_released_checkpoint(path, out=target, part=entry.part, overwrite=True)
    _write_json(target / "source.json", {"name": entry.name, "url": entry.download_url,
                                         "checkpoint_sha256": digest})
    return target


def convert_released_checkpoint(path, *, out, part="specformer", overwrite=False, **options):
    """Convert a released AstroCLIP checkpoint into our safetensors + JSON format.

    The file is read by `astroclip.models.convert.read_checkpoint`: nothing
    from it is imported or run, in any of the layouts the reference code writes
    (Lightning checkpoints, whose hyper-parameters may hold pickled modules,
    and the DINOv2 trainer's ``{"teacher": state_dict}``); the tensors are
    mapped by the part's converter (`astroclip.models.convert`).

    Parameters
    ----------
    path : path
        ``specformer.ckpt``, ``astroclip.ckpt`` or ``astrodino.ckpt``.
    out : path
        Output model folder.
    part : str, optional
        Which model to extract (``list_models(kind="part")``): ``"specformer"``,
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
        The output folder; load it with `create_model` or `astroclip.load_model`.
        Its ``config.json`` metadata records the source file, part, layout, the
        plain-data hyper-parameters and the classes the file named but that
        were not imported.

    Raises
    ------
    ModelNotFoundError
        Unknown part.
    InputError
        An option the part does not take.
    ModelFormatError
        A file that is not a checkpoint in a known layout
        (`~astroclip.exceptions.CheckpointError`); missing, unexpected or
        mis-shaped tensors.

    Examples
    --------
    >>> from astroclip.models.factory import convert_released_checkpoint
    >>> convert_released_checkpoint("specformer.ckpt", out="specformer/")  # doctest: +SKIP
    """
    from .._io import check_output_path

    entry = MODELS.get(part)
    if entry is None or entry.kind != "part":
        raise ModelNotFoundError(f"unknown part {part!r}; available: " + "; ".join(
            f"{e.name} ({e.description})" for e in sorted(MODELS.values(), key=lambda e: e.name)
            if e.kind == "part"))
    check_output_path(Path(out) / CONFIG_FILE, overwrite=overwrite)
    model, metadata = _convert(part, path, options)
    return save_model(model, out, overwrite=overwrite, metadata=metadata)
