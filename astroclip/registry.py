"""Named models: checkpoints trained with astroclip and the released AstroCLIP weights.

A *model name* resolves, in this order, to

1. a folder in our format (``config.json`` + ``model.safetensors``) given by path;
2. a folder of that name in the local model directory
   (``<astropy cache dir>/astroclip/models/<name>``, or ``ASTROCLIP_MODEL_DIR``),
   where `register_model` copies trained models and where released weights are
   converted to;
3. a released checkpoint (`RELEASED_MODELS`): downloaded once into the astropy
   download cache (or through ``huggingface_hub`` when it is installed), its
   sha256 checked against the hub's record (or a pinned value), converted once
   into our format in the local model directory, then loaded from there.

Offline, a released model that is not in the cache gives a clear error saying
which file to download and where to put it (or how to convert it with
``astroclip convert-weights``).
"""

import hashlib
import json
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from astropy.table import Table
from astropy.utils.data import download_file, is_url_in_cache

from ._io import atomic_path
from .exceptions import CheckpointError, DataFileError, InputError, ModelFormatError
from .models.weights import CONFIG_FILE, WEIGHTS_FILE, convert_released_checkpoint

__all__ = ["ReleasedModel", "RELEASED_MODELS", "model_dir", "resolve_model_path",
           "list_models", "register_model", "fetch_released", "sha256_file"]

HF_ENDPOINT = os.environ.get("HF_ENDPOINT", "https://huggingface.co")


@dataclass(frozen=True)
class ReleasedModel:
    """A model published as a PyTorch Lightning checkpoint.

    Attributes
    ----------
    name : str
        Registry name.
    repo_id, filename, revision : str
        Where the checkpoint lives on the Hugging Face hub.
    part : str
        Which part of the checkpoint to convert
        (`astroclip.models.weights.convert_released_checkpoint`).
    description : str
        One line for `list_models`.
    sha256 : str or None
        Pinned checksum; when None the hub's LFS record is used.
    url : str or None
        Direct URL overriding the hub address (also ``file://`` for mirrors).
    """

    name: str
    repo_id: str
    filename: str
    part: str
    description: str
    revision: str = "main"
    sha256: str | None = None
    url: str | None = None

    @property
    def download_url(self):
        """Address of the checkpoint file."""
        if self.url:
            return self.url
        return f"{HF_ENDPOINT}/{self.repo_id}/resolve/{self.revision}/{self.filename}"


#: The released AstroCLIP weights (MIT licence, ``method.md`` section 6).
RELEASED_MODELS = {
    m.name: m for m in [
        ReleasedModel(
            name="astroclip-released", repo_id="polymathic-ai/astroclip",
            filename="astroclip.ckpt", part="astroclip",
            description="Released AstroCLIP: DINOv2 ViT-L image encoder + SpecFormer, "
                        "aligned, 1024-d embeddings"),
        ReleasedModel(
            name="specformer-released", repo_id="polymathic-ai/specformer",
            filename="specformer.ckpt", part="specformer",
            description="Released SpecFormer spectrum transformer (masked-filling "
                        "pretraining); spectrum embedding: the mean of its output tokens, "
                        "768-d, not in the AstroCLIP space"),
        ReleasedModel(
            name="astrodino-released", repo_id="polymathic-ai/astrodino",
            filename="astrodino.ckpt", part="astrodino",
            description="Released AstroDINO image ViT-L/12 (DINOv2 pretraining); image "
                        "embedding: its class token, 1024-d, not in the AstroCLIP space"),
    ]
}


def model_dir():
    """The local model directory (created on first use).

    ``$ASTROCLIP_MODEL_DIR`` when set, else ``<astropy cache>/astroclip/models``.
    """
    env = os.environ.get("ASTROCLIP_MODEL_DIR")
    if env:
        path = Path(env)
    else:
        from astropy.config import get_cache_dir
        path = Path(get_cache_dir()) / "astroclip" / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def sha256_file(path, *, chunk=1 << 20):
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _is_model_folder(path):
    return (path / CONFIG_FILE).is_file() and (path / WEIGHTS_FILE).is_file()


def _expected_sha256(entry):
    """The checkpoint's sha256: pinned, or the hub's LFS record (its linked ETag)."""
    if entry.sha256:
        return entry.sha256
    if entry.download_url.startswith("file://"):
        return None
    try:
        req = urllib.request.Request(entry.download_url, method="HEAD")
        with urllib.request.urlopen(req, timeout=30) as resp:
            etag = resp.headers.get("X-Linked-Etag") or resp.headers.get("ETag") or ""
    except (urllib.error.URLError, OSError):
        return None
    etag = etag.strip('"').removeprefix("W/").strip('"')
    return etag if len(etag) == 64 else None


def _offline_error(entry, exc):
    target = model_dir() / entry.name
    return DataFileError(
        f"model {entry.name!r} is not available locally and its checkpoint could not be "
        f"downloaded ({exc}). On a machine with network access, download "
        f"{entry.download_url} and then either run "
        f"`astroclip convert-weights CHECKPOINT --part {entry.part} --out {target}` "
        f"or call astroclip.registry.fetch_released({entry.name!r}, checkpoint=PATH)")


def fetch_released(name, *, checkpoint=None, progress=True, overwrite=False):
    """Download (or take), verify and convert a released checkpoint.

    Parameters
    ----------
    name : str
        A key of `RELEASED_MODELS`.
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
    OSError
        Offline and not cached: the message says what to download and where.
    ValueError
        Checksum mismatch, or a checkpoint that cannot be converted.

    Examples
    --------
    >>> from astroclip.registry import fetch_released
    >>> fetch_released("astroclip-released")  # doctest: +SKIP
    """
    try:
        entry = RELEASED_MODELS[name]
    except KeyError:
        raise InputError(f"unknown released model {name!r}; known: "
                         f"{sorted(RELEASED_MODELS)}") from None
    target = model_dir() / entry.name
    if _is_model_folder(target) and not overwrite:
        return target
    if checkpoint is None:
        url = entry.download_url
        try:
            try:
                from huggingface_hub import hf_hub_download
            except ImportError:
                hf_hub_download = None
            if hf_hub_download is not None and entry.url is None:
                checkpoint = hf_hub_download(entry.repo_id, entry.filename,
                                             revision=entry.revision)
            else:
                checkpoint = download_file(url, cache=True, show_progress=progress,
                                           pkgname="astroclip")
        except (urllib.error.URLError, OSError) as exc:
            raise _offline_error(entry, exc) from exc
        except Exception as exc:  # huggingface_hub's offline errors
            if type(exc).__module__.startswith("huggingface_hub"):
                raise _offline_error(entry, exc) from exc
            raise
        expected = _expected_sha256(entry)
    else:
        checkpoint = Path(checkpoint)
        if not checkpoint.is_file():
            raise FileNotFoundError(f"checkpoint {checkpoint} does not exist")
        expected = entry.sha256
    digest = sha256_file(checkpoint)
    if expected is not None and digest != expected:
        raise CheckpointError(f"checksum mismatch for {entry.name}: {checkpoint} has sha256 "
                              f"{digest}, expected {expected}; the download is corrupt or the "
                              "release changed: delete the file and fetch it again")
    convert_released_checkpoint(checkpoint, out=target, part=entry.part, overwrite=True)
    _write_json(target / "source.json", {"name": entry.name, "url": entry.download_url,
                                         "checkpoint_sha256": digest})
    return target


def _write_json(path, data):
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(data, indent=2))


def resolve_model_path(name, *, download=True, progress=True):
    """The folder holding model ``name`` in our format.

    Parameters
    ----------
    name : str or path
        A model folder, the name of a model in `model_dir`, or a released model.
    download : bool, optional
        Allow downloading a released model that is not available locally.

    Raises
    ------
    ValueError
        Unknown name (the message lists the known ones).
    OSError
        A released model that is neither local nor downloadable.
    """
    path = Path(os.fspath(name)).expanduser()
    if _is_model_folder(path):
        return path
    if path.is_dir():
        raise ModelFormatError(f"{path} is a folder but not a model: it needs {CONFIG_FILE} "
                               f"and {WEIGHTS_FILE} (as written by "
                               "astroclip.models.weights.save_model)")
    local = model_dir() / str(name)
    if _is_model_folder(local):
        return local
    if str(name) in RELEASED_MODELS:
        entry = RELEASED_MODELS[str(name)]
        if not download and not is_url_in_cache(entry.download_url, pkgname="astroclip"):
            raise _offline_error(entry, "download disabled")
        return fetch_released(str(name), progress=progress)
    local = {p.name for p in model_dir().iterdir() if _is_model_folder(p)}
    known = sorted(set(RELEASED_MODELS) | local)
    raise InputError(f"unknown model {str(name)!r}: not a model folder and not a registered "
                     f"name; known models: {known}. Train one (astroclip align) or pass the "
                     "path of a model folder")


def _check_model_name(name):
    """Refuse names that are not one plain folder inside the model directory."""
    text = name if isinstance(name, str) else None
    if (not text or text in (".", "..") or text.startswith(".") or text != text.strip()
            or any(c in text for c in "/\\\0") or os.path.isabs(text)):
        raise InputError(f"model name {name!r} cannot be used: give a plain folder name such "
                         "as 'my-model' (letters, digits, '-', '_', '.'; not empty, no path "
                         "separator, not starting with '.')")
    return text


def register_model(path, name, *, overwrite=False):
    """Copy a model folder into the local model directory under ``name``.

    The name is checked before anything is written; the copy is made beside
    the destination and moved into place, so a failed copy leaves an older
    model of that name intact.  Only a model folder (``config.json`` +
    ``model.safetensors``) is ever replaced.

    Raises
    ------
    InputError
        ``name`` is not a plain folder name, or is the name of a released model.
    ModelFormatError
        ``path`` is not a model folder.
    FileExistsError
        A model called ``name`` exists and ``overwrite`` is False.
    DataFileError
        ``name`` exists in the model directory but is not a model folder.

    Examples
    --------
    >>> from astroclip.registry import register_model
    >>> register_model("run/model", "my-mock-model")  # doctest: +SKIP
    """
    name = _check_model_name(name)
    src = Path(path)
    if not _is_model_folder(src):
        raise ModelFormatError(f"{src} is not a model folder ({CONFIG_FILE} + {WEIGHTS_FILE}); "
                               "give the folder written by save_model or a training command")
    if name in RELEASED_MODELS:
        raise InputError(f"{name!r} is the name of a released model; choose another name")
    root = model_dir().resolve()
    dst = root / name
    if dst.exists() or dst.is_symlink():
        if not overwrite:
            raise FileExistsError(f"a model named {name!r} exists in {root}; "
                                  "pass overwrite=True to replace it")
        if dst.is_symlink() or not _is_model_folder(dst):
            raise DataFileError(f"{dst} exists but is not a model folder, so it was left "
                                "untouched; move it away or choose another name")
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=root))
    try:
        shutil.copytree(src, tmp, dirs_exist_ok=True)
        if dst.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".old", dir=root))
            os.replace(dst, old)
            os.replace(tmp, dst)
            shutil.rmtree(old)
        else:
            os.replace(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dst


def list_models():
    """The models available locally and remotely.

    Returns
    -------
    `~astropy.table.Table`
        Columns ``name``, ``source`` (``local`` or ``released``), ``available``
        (usable without a download), ``path`` and ``description``.

    Examples
    --------
    >>> from astroclip import list_models
    >>> t = list_models()
    >>> "astroclip-released" in t["name"]
    True
    """
    from .models.weights import read_model_config

    rows = []
    for p in sorted(model_dir().iterdir()):
        if _is_model_folder(p) and p.name not in RELEASED_MODELS and not p.name.startswith("."):
            try:
                cfg = read_model_config(p)
            except (ModelFormatError, OSError) as exc:  # one broken folder: listed, unusable
                rows.append((p.name, "local", False, str(p), f"unusable: {exc}"))
                continue
            meta = cfg.get("metadata") if isinstance(cfg.get("metadata"), dict) else {}
            desc = meta.get("description", cfg.get("class", ""))
            rows.append((p.name, "local", True, str(p), str(desc)))
    for entry in RELEASED_MODELS.values():
        local = model_dir() / entry.name
        avail = _is_model_folder(local)
        rows.append((entry.name, "released", avail,
                     str(local) if avail else entry.download_url, entry.description))
    return Table(rows=rows or None, names=("name", "source", "available", "path", "description"),
                 dtype=(str, str, bool, str, str))
