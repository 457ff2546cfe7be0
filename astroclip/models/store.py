"""The local model directory: where trained and converted models live, and downloads.

Trained models are folders in our format (`astroclip.models.weights`).
`model_dir` is the directory that holds the models known by name
(``$ASTROCLIP_MODEL_DIR``, else ``<astropy cache dir>/astroclip/models``);
`copy_model_folder` puts a folder there atomically (what
`astroclip.models.factory.register_model` does after checking the name) and
`download_checkpoint` fetches a released checkpoint into the astropy download
cache (or through ``huggingface_hub`` when installed) and checks its sha256.
Which names exist, and what they are, is the factory's table
(`astroclip.models.factory`); this module only stores files.
"""

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from astropy.utils.data import download_file, is_url_in_cache

from ..exceptions import CheckpointError, DataFileError, InputError
from .weights import is_model_folder

__all__ = ["HF_ENDPOINT", "model_dir", "local_models", "sha256_file", "check_model_name",
           "copy_model_folder", "download_checkpoint", "is_cached", "offline_error"]

#: The Hugging Face hub address (``$HF_ENDPOINT`` for a mirror).
HF_ENDPOINT = os.environ.get("HF_ENDPOINT", "https://huggingface.co")


def model_dir():
    """The local model directory (created on first use).

    ``$ASTROCLIP_MODEL_DIR`` when set, else ``<astropy cache>/astroclip/models``.

    Examples
    --------
    >>> from astroclip.models.store import model_dir
    >>> model_dir().is_dir()
    True
    """
    env = os.environ.get("ASTROCLIP_MODEL_DIR")
    if env:
        path = Path(env)
    else:
        from astropy.config import get_cache_dir
        path = Path(get_cache_dir()) / "astroclip" / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def local_models():
    """``{name: folder}`` of the model folders in `model_dir` (hidden names skipped).

    Examples
    --------
    >>> from astroclip.models.store import local_models
    >>> isinstance(local_models(), dict)
    True
    """
    return {p.name: p for p in sorted(model_dir().iterdir())
            if not p.name.startswith(".") and is_model_folder(p)}


def sha256_file(path, *, chunk=1 << 20):
    """Hex sha256 of a file, read in chunks.

    Examples
    --------
    >>> import tempfile
    >>> from astroclip.models.store import sha256_file
    >>> with tempfile.NamedTemporaryFile() as f:
    ...     sha256_file(f.name)[:12]
    'e3b0c44298fc'
    """
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def check_model_name(name):
    """Refuse names that are not one plain folder inside the model directory.

    Examples
    --------
    >>> from astroclip.models.store import check_model_name
    >>> check_model_name("my-model")
    'my-model'
    """
    text = name if isinstance(name, str) else None
    if (not text or text in (".", "..") or text.startswith(".") or text != text.strip()
            or any(c in text for c in "/\\\0") or os.path.isabs(text)):
        raise InputError(f"model name {name!r} cannot be used: give a plain folder name such "
                         "as 'my-model' (letters, digits, '-', '_', '.'; not empty, no path "
                         "separator, not starting with '.')")
    return text


def copy_model_folder(src, name, *, overwrite=False):
    """Copy model folder ``src`` to ``model_dir() / name``, atomically.

    The copy is made beside the destination and moved into place, so a failed
    copy leaves an older model of that name intact.  Only a model folder is
    ever replaced.  ``name`` must have passed `check_model_name`.

    Examples
    --------
    >>> from astroclip.models.store import copy_model_folder
    >>> copy_model_folder("run/model", "my-model")  # doctest: +SKIP
    """
    root = model_dir().resolve()
    dst = root / name
    if dst.exists() or dst.is_symlink():
        if not overwrite:
            raise FileExistsError(f"a model named {name!r} exists in {root}; "
                                  "pass overwrite=True to replace it")
        if dst.is_symlink() or not is_model_folder(dst):
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


def _hub_sha256(url):
    """The hub's LFS record of a file's sha256 (its linked ETag), or None."""
    if url.startswith("file://"):
        return None
    try:
        req = urllib.request.Request(url, method="HEAD")
        with urllib.request.urlopen(req, timeout=30) as resp:
            etag = resp.headers.get("X-Linked-Etag") or resp.headers.get("ETag") or ""
    except (urllib.error.URLError, OSError):
        return None
    etag = etag.strip('"').removeprefix("W/").strip('"')
    return etag if len(etag) == 64 else None


def offline_error(entry, exc):
    """The error for a released model that is neither converted nor downloadable."""
    target = model_dir() / entry.name
    return DataFileError(
        f"model {entry.name!r} is not available locally and its checkpoint could not be "
        f"downloaded ({exc}). On a machine with network access, download "
        f"{entry.download_url} and then either run "
        f"`astroclip convert-weights CHECKPOINT --part {entry.part} --out {target}` "
        f"or call astroclip.models.factory.fetch_released({entry.name!r}, checkpoint=PATH)")


def is_cached(entry):
    """Whether the checkpoint of released ``entry`` is in the astropy download cache."""
    return is_url_in_cache(entry.download_url, pkgname="astroclip")


def download_checkpoint(entry, *, checkpoint=None, progress=True):
    """The checkpoint file of released ``entry`` (downloaded once), its sha256 checked.

    Parameters
    ----------
    entry : `astroclip.models.factory.ModelEntry`
        A released model (``kind="released"``).
    checkpoint : path, optional
        A checkpoint already on disk (no download); checked against the pinned
        sha256 when one is known.
    progress : bool, optional
        Show the download progress.

    Returns
    -------
    path, sha256

    Raises
    ------
    DataFileError
        Offline and not cached: the message says what to download and where.
    CheckpointError
        Checksum mismatch.

    Examples
    --------
    >>> from astroclip.models.factory import MODELS
    >>> from astroclip.models.store import download_checkpoint
    >>> download_checkpoint(MODELS["specformer-released"])  # doctest: +SKIP
    """
    if checkpoint is None:
        try:
            try:
                from huggingface_hub import hf_hub_download
            except ImportError:
                hf_hub_download = None
            if hf_hub_download is not None and entry.url is None:
                checkpoint = hf_hub_download(entry.repo_id, entry.filename,
                                             revision=entry.revision)
            else:
                checkpoint = download_file(entry.download_url, cache=True,
                                           show_progress=progress, pkgname="astroclip")
        except (urllib.error.URLError, OSError) as exc:
            raise offline_error(entry, exc) from exc
        except Exception as exc:  # huggingface_hub's offline errors
            if type(exc).__module__.startswith("huggingface_hub"):
                raise offline_error(entry, exc) from exc
            raise
        expected = entry.sha256 or _hub_sha256(entry.download_url)
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
    return Path(checkpoint), digest
