"""What users touch: embeddings of spectra, images and whole catalogues.

Every function takes what the input layer takes (specutils spectra, DESI coadd
files, NDData/FITS cutouts, Quantities and arrays with units, astropy Tables, our
paired HDF5 files), runs the model in batches under `torch.inference_mode`, and
returns float32 numpy arrays or astropy Table columns whose ``meta`` records
the model name, the package version and the weights' sha256.
"""

import contextlib
import copy
import hashlib
import json
import os
import warnings
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from astropy.table import Table

from . import __version__
from ._arrays import rows_text
from ._config import conf
from ._device import resolve_device
from ._io import atomic_path, check_free_space, check_output_path, disk_errors, file_identity
from ._optional import require
from ._progress import progress_bar, progress_enabled
from .exceptions import (AstroclipError, AstroclipWarning, DataFileError, InputError,
                         ModelFormatError, NonFiniteError, ResumeMismatchError)
from .data.embeddings import embeddings_format, shard_meta, write_embeddings
from .inputs import grid
from .models.factory import create_model, model_path
from .models.store import sha256_file
from .models.weights import CONFIG_FILE, WEIGHTS_FILE

__all__ = ["load_model", "embed_spectrum", "embed_image", "embed_catalog",
           "model_info", "shard_chunks"]

_MODEL_CACHE = OrderedDict()
_MODEL_CACHE_SIZE = 4


# ----------------------------------------------------------------------------- models
def load_model(model=None, *, device="auto", download=True):
    """Load a model by name or path, ready for inference.

    Parameters
    ----------
    model : str, path or `torch.nn.Module`, optional
        A trained model: a registered or released name (see
        `~astroclip.models.factory.list_models`),
        a model folder written by astroclip, or an already loaded module.
        Default: ``astroclip.conf.default_model``.  Names are resolved by the
        model factory (`astroclip.models.factory`); an architecture preset
        has no trained weights: build one with
        `~astroclip.models.factory.create_model`.
    device : str, optional
        ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda:1"`` ...
    download : bool, optional
        Allow downloading released weights that are not cached.

    Returns
    -------
    `torch.nn.Module`
        In eval mode on ``device``; ``model_info(module)`` gives its name,
        version and weights hash.  Each call returns a module of its own
        (a copy of the cached one): changing it (``.half()``, fine-tuning,
        ``.train()``) changes neither later calls nor the embedding functions.
        The cache is keyed by the folder and the size and modification time of
        its ``model.safetensors`` and ``config.json``, so edited files are read
        again.  A module passed in is returned itself, moved to ``device`` and
        in eval mode.

    Raises
    ------
    ModelNotFoundError
        Unknown model name (a `LookupError` and a `ValueError`); the message
        lists the closest known names.
    InputError
        A preset, class or checkpoint part (no trained weights).
    ModelFormatError
        A damaged model folder, or weights that do not match the architecture
        (a `ValueError`).
    DataFileError
        Released weights that are neither cached nor downloadable (an `OSError`).

    Examples
    --------
    >>> import astroclip
    >>> model = astroclip.load_model("quickstart-report/model")  # doctest: +SKIP
    """
    if isinstance(model, torch.nn.Module):
        return model.to(resolve_device(device)).eval()
    return copy.deepcopy(_shared_model(model, device=device, download=download))


def _file_key(path):
    st = os.stat(path)
    return st.st_mtime_ns, st.st_size


def _shared_model(model=None, *, device="auto", download=True):
    """The cached module of a model (never handed to users; the embedding functions use it)."""
    dev = resolve_device(device)
    if isinstance(model, torch.nn.Module):
        return model.to(dev).eval()
    name = conf.default_model if model is None else model
    path = model_path(name, download=download)
    key = (str(path.resolve()), _file_key(path / WEIGHTS_FILE), _file_key(path / CONFIG_FILE),
           str(dev))
    if key in _MODEL_CACHE:
        _MODEL_CACHE.move_to_end(key)
        return _MODEL_CACHE[key]
    try:
        module = create_model(path, device=dev)
    except AstroclipError:
        raise
    except (RuntimeError, KeyError, ValueError, TypeError) as exc:
        raise ModelFormatError(f"the weights in {path} do not match the model described by its "
                               f"config.json ({exc}); copy the model folder again or write it "
                               "anew with save_model") from exc
    module._astroclip_info = {"model": str(name), "path": str(path),
                              "astroclip_version": __version__,
                              "weights_sha256": sha256_file(path / WEIGHTS_FILE)}
    _MODEL_CACHE[key] = module
    while len(_MODEL_CACHE) > _MODEL_CACHE_SIZE:
        _MODEL_CACHE.popitem(last=False)
    return module


def model_info(model):
    """Name, version and weights hash of a model loaded with `load_model`."""
    info = getattr(model, "_astroclip_info", None)
    if info is None:
        info = {"model": type(model).__name__, "path": "", "astroclip_version": __version__,
                "weights_sha256": ""}
    return dict(info)


def _encoder(model, modality):
    """The callable turning a batch tensor of ``modality`` into ``(B, d)`` embeddings.

    Every model class that embeds defines ``encode_<modality>``: `AstroCLIP`
    both, `SpectrumEmbedder` (pooling head) and `SpectrumEncoder` (mean of
    its output tokens) spectra, `ImageEncoder` (head or class token) images.
    """
    method = getattr(model, f"encode_{modality}", None)
    if callable(method):
        return method
    other = "image" if modality == "spectrum" else "spectrum"
    can = (f"; it embeds {other} data (embed_{other})"
           if callable(getattr(model, f"encode_{other}", None)) else "")
    raise InputError(f"model {model_info(model)['model']!r} ({type(model).__name__}) cannot "
                     f"embed {modality} data: it has no encode_{modality} method{can}. Use an "
                     "aligned AstroCLIP model, or a spectrum (SpectrumEncoder, SpectrumEmbedder) "
                     "or image (ImageEncoder) model for that modality")


def _check_embedding(emb, n, fn):
    if emb.ndim != 2 or emb.shape[0] != n:
        owner = getattr(fn, "__self__", fn)
        raise InputError(f"{type(owner).__name__} returned an output of shape "
                         f"{tuple(emb.shape)} for a batch of {n}; an embedding must be "
                         "(batch, d): give the model an encode_spectrum / encode_image method "
                         "that pools its output")


def _rows_text(rows):
    """'row 3' or 'rows 3, 10, 11, ...'."""
    return f"row{'s' if len(rows) > 1 else ''} {rows_text(rows)}"


def _check_finite(block, *, first_row, desc, source, produced):
    """NonFiniteError naming the rows of ``block`` that hold NaN or infinite values."""
    bad = ~np.isfinite(block.reshape(len(block), -1)).all(axis=1)
    if not bad.any():
        return
    rows = np.flatnonzero(bad) + first_row
    where = f" of {source}" if source else ""
    if produced:
        raise NonFiniteError(
            f"the model returned NaN or infinite embeddings for {_rows_text(rows)}{where} "
            f"({desc}) although the inputs are finite: the model's weights or the scale of "
            "these inputs (e.g. fluxes near 1e25) are at fault; check the inputs, or load the "
            "model again (load_model checks the weights)")
    fix = ("prepare them with astroclip.prepare_spectra (bad pixels get flux 0 and ivar 0)"
           if "spectr" in desc else "fill them with astroclip.prepare_images (it fills and "
           "counts non-finite pixels)")
    raise NonFiniteError(f"{_rows_text(rows)}{where} ({desc}) hold NaN or infinite values; {fix}"
                         + (f", or rebuild {source}" if source else ""))


def _run_batches(fn, array, *, batch_size, device, progress, desc, first_row=0, source=None):
    """Embed ``array`` in batches: finite inputs in, finite float32 embeddings out.

    Inputs are converted to native-byte-order float32 (FITS data are big-endian);
    non-finite inputs or outputs raise `NonFiniteError` naming the rows
    (counted from ``first_row``, in ``source`` when given).
    """
    n = len(array)
    if n == 0:
        raise InputError(f"nothing to embed: the input holds no {desc}")
    out = None
    bar = progress_bar(total=n, desc=f"embedding {desc}", unit=desc.split()[0],
                       progress=progress, min_total=batch_size, leave=False)
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            block = np.ascontiguousarray(array[start:start + batch_size], dtype=np.float32)
            _check_finite(block, first_row=first_row + start, desc=desc, source=source,
                          produced=False)
            emb = fn(torch.from_numpy(block).to(device)).float().cpu().numpy()
            _check_embedding(emb, len(block), fn)
            _check_finite(emb, first_row=first_row + start, desc=desc, source=source,
                          produced=True)
            if out is None:
                out = np.empty((n, emb.shape[1]), dtype=np.float32)
            out[start:start + len(emb)] = emb
            bar.update(len(emb))
    bar.close()
    return out


def _options(device, batch_size, progress):
    batch_size = int(conf.batch_size if batch_size is None else batch_size)
    if batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, got {batch_size}")
    device = conf.device if device is None else device
    return device, batch_size, progress_enabled(progress)


def _finish(embeddings, meta, model, *, normalize, as_table, modality):
    if normalize:
        norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
        embeddings = embeddings / np.maximum(norms, 1e-12)
    if not as_table:
        return embeddings.astype(np.float32, copy=False)
    table = Table(meta, copy=True) if meta is not None and len(meta.colnames) else Table()
    table[f"{modality}_embedding"] = embeddings.astype(np.float32, copy=False)
    table.meta.update({f"{modality}_{k}": v for k, v in model_info(model).items()})
    return table


# ----------------------------------------------------------------------------- inputs
def _is_pathlike(x):
    return isinstance(x, (str, os.PathLike))


def _paths(x):
    if _is_pathlike(x):
        return [Path(x)]
    if isinstance(x, (list, tuple)) and x and all(_is_pathlike(p) for p in x):
        return [Path(p) for p in x]
    return None


def _table_column(table, names, what):
    for name in names:
        if name in table.colnames:
            return table[name]
    raise InputError(f"the Table has no {what} column; expected one of {list(names)} "
                     f"(columns: {table.colnames})")


def _spectra_input(spectra, prepare_kwargs):
    from .inputs.spectra import PreparedSpectra, prepare_spectra

    if isinstance(spectra, PreparedSpectra):
        return spectra
    paths = _paths(spectra)
    if paths is not None:
        suffixes = {p.suffix.lower() for p in paths}
        if suffixes <= {".h5", ".hdf5"}:
            from .data.paired import read_paired_dataset
            tables, fluxes, ivars = [], [], []
            for p in paths:
                t, arrays = read_paired_dataset(p, fields=("flux", "ivar"))
                tables.append(t)
                fluxes.append(arrays["flux"])
                ivars.append(arrays["ivar"])
            from astropy.table import vstack
            table = vstack(tables) if len(tables) > 1 else tables[0]
            ivar = np.concatenate(ivars)
            table["VALID"], table["PROBLEM"] = _ivar_flags(ivar)
            return PreparedSpectra(np.concatenate(fluxes), ivar, table)
        from .inputs.desi import read_desi_coadd
        return read_desi_coadd([str(p) for p in paths], **prepare_kwargs)
    if isinstance(spectra, Table):
        flux = _table_column(spectra, ("flux", "FLUX", "spectrum", "SPECTRUM"), "flux")
        ivar = None
        for name in ("ivar", "IVAR", "spectrum_ivar"):
            if name in spectra.colnames:
                ivar = spectra[name]
        unit = flux.unit
        if unit is None:
            raise InputError("the Table's flux column has no unit; set it, e.g. "
                             "table['flux'].unit = '1e-17 erg/(s cm2 Angstrom)'")
        wave = prepare_kwargs.pop("wavelength", None)
        if wave is None:
            if flux.shape[-1] != grid.N_PIXELS:
                raise InputError(f"the Table's flux has {flux.shape[-1]} pixels; pass "
                                 "wavelength= for spectra that are not on the DESI grid")
            wave = grid.wavelength_grid()
        meta = spectra[[c for c in spectra.colnames if spectra[c].ndim == 1]]
        # masked entries of masked columns are bad pixels (Column.quantity drops the mask)
        bad = [np.ma.getmaskarray(c) for c in (flux, ivar) if np.ma.isMaskedArray(c)]
        if bad:
            given = prepare_kwargs.pop("mask", None)
            prepare_kwargs["mask"] = np.logical_or.reduce(
                bad + ([np.asarray(given, dtype=bool)] if given is not None else []))
        ivar_arg = None if ivar is None else np.asarray(np.ma.getdata(ivar))
        return prepare_spectra(flux.quantity if hasattr(flux, "quantity") else flux,
                               wavelength=wave, ivar=ivar_arg, meta=meta, **prepare_kwargs)
    return prepare_spectra(spectra, **prepare_kwargs)


def _images_input(images, prepare_kwargs):
    from .inputs.images import PreparedImages, prepare_images

    if isinstance(images, PreparedImages):
        return images
    paths = _paths(images)
    if paths is not None and {p.suffix.lower() for p in paths} <= {".h5", ".hdf5"}:
        from astropy.table import vstack

        from .data.paired import read_paired_dataset
        tables, arrays = [], []
        for p in paths:
            t, a = read_paired_dataset(p, fields=("image",))
            tables.append(t)
            arrays.append(a["image"])
        return PreparedImages(np.concatenate(arrays),
                              vstack(tables) if len(tables) > 1 else tables[0])
    if isinstance(images, Table):
        col = _table_column(images, ("image", "IMAGE", "images", "cutout"), "image")
        meta = images[[c for c in images.colnames if images[c].ndim == 1]]
        data = col.quantity if getattr(col, "unit", None) is not None else np.asarray(col)
        prepared = prepare_images(data, **prepare_kwargs)
        for name in meta.colnames:
            if name not in prepared.meta.colnames:
                prepared.meta[name] = meta[name]
        return prepared
    return prepare_images(images, **prepare_kwargs)


# ----------------------------------------------------------------------------- embeddings
def embed_spectrum(spectra, *, model=None, device=None, batch_size=None, progress=None,
                   normalize=False, as_table=False, **prepare_kwargs):
    """Embed galaxy spectra into the model's embedding space.

    Parameters
    ----------
    spectra : Spectrum, SpectrumList, list, Quantity, array, Table, path(s) or ``PreparedSpectra``
        Anything `astroclip.prepare_spectra` accepts; DESI coadd FITS path(s)
        (read with `astroclip.read_desi_coadd`); paired HDF5 file(s) of any
        single-file layout of `astroclip.data.layouts` (ours, the paper's); or a
        Table with a ``flux`` column (with a unit; optionally ``ivar``) on the
        DESI grid.
    model : str, path or `torch.nn.Module`, optional
        See `load_model`.
    device : str, optional
        Default ``astroclip.conf.device`` (``"auto"``).
    batch_size : int, optional
        Default ``astroclip.conf.batch_size``.  Results do not depend on it.
    progress : bool, optional
        Progress bar; default ``astroclip.conf.progress``.
    normalize : bool, optional
        Return unit-length embeddings (cosine similarity = dot product).
    as_table : bool, optional
        Return a Table: the input's metadata columns plus ``spectrum_embedding``;
        ``meta`` records model name, version and weights sha256.
    **prepare_kwargs
        Passed to `astroclip.prepare_spectra` (e.g. ``wavelength=``,
        ``flux_unit=``, ``min_coverage=``).

    Returns
    -------
    `numpy.ndarray` or `~astropy.table.Table`
        float32 ``(N, d)`` embeddings, one row per spectrum.

    Examples
    --------
    >>> from astroclip import embed_spectrum
    >>> emb = embed_spectrum("coadd-sv3-dark-26065.fits",
    ...                      model="quickstart-report/model")  # doctest: +SKIP
    """
    device, batch_size, progress = _options(device, batch_size, progress)
    net = _shared_model(model, device=device)
    encode = _encoder(net, "spectrum")  # a model that cannot embed spectra fails before any work
    prepared = _spectra_input(spectra, prepare_kwargs)
    dev = next(net.parameters()).device
    emb = _run_batches(encode, prepared.flux, batch_size=batch_size,
                       device=dev, progress=progress, desc="spectra")
    if not as_table and "VALID" in prepared.meta.colnames:
        valid, problem = _meta_flags(prepared.meta)
        _warn_unusable(valid, problem, len(valid), "spectra",
                       "Pass as_table=True to get the VALID and PROBLEM columns, or leave "
                       "these rows out.")
    return _finish(emb, prepared.meta, net, normalize=normalize, as_table=as_table,
                   modality="spectrum")


def embed_image(images, *, model=None, device=None, batch_size=None, progress=None,
                normalize=False, as_table=False, **prepare_kwargs):
    """Embed g, r, z galaxy images into the model's embedding space.

    Parameters
    ----------
    images : NDData, CCDData, list, FITS paths, HDU, Quantity, array, Table or ``PreparedImages``
        Anything `astroclip.prepare_images` accepts (arrays need ``bands=`` and
        ``unit=``); paired HDF5 file(s) (as in `embed_spectrum`); or a Table with an
        ``image`` column.
    model, device, batch_size, progress, normalize, as_table
        As in `embed_spectrum`; the Table column is ``image_embedding``.
    **prepare_kwargs
        Passed to `astroclip.prepare_images` (e.g. ``bands=``, ``unit=``, ``center=``).

    Returns
    -------
    `numpy.ndarray` or `~astropy.table.Table`
        float32 ``(N, d)`` embeddings.

    Examples
    --------
    >>> import numpy as np
    >>> from astroclip import embed_image
    >>> cutouts = np.zeros((2, 3, 152, 152), dtype=np.float32)
    >>> emb = embed_image(cutouts, bands="grz", unit="nanomaggy",
    ...                   model="quickstart-report/model")  # doctest: +SKIP
    """
    device, batch_size, progress = _options(device, batch_size, progress)
    net = _shared_model(model, device=device)
    encode = _encoder(net, "image")  # a model that cannot embed images fails before any work
    prepared = _images_input(images, prepare_kwargs)
    dev = next(net.parameters()).device
    emb = _run_batches(encode, prepared.images, batch_size=batch_size,
                       device=dev, progress=progress, desc="images")
    return _finish(emb, prepared.meta, net, normalize=normalize, as_table=as_table,
                   modality="image")


# ----------------------------------------------------------------------------- catalogues
_MODALITIES = {"spectrum": ("spectrum",), "image": ("image",), "both": ("spectrum", "image")}


def _split_kwargs(prepare_kwargs):
    """Share the input-layer options between `prepare_spectra` and `prepare_images`."""
    import inspect

    from .inputs.images import prepare_images
    from .inputs.spectra import prepare_spectra

    spec = set(inspect.signature(prepare_spectra).parameters)
    imag = set(inspect.signature(prepare_images).parameters)
    unknown = set(prepare_kwargs) - spec - imag
    if unknown:
        raise TypeError(f"unknown input options {sorted(unknown)}; see prepare_spectra and "
                        "prepare_images for the accepted ones")
    return ({k: v for k, v in prepare_kwargs.items() if k in spec},
            {k: v for k, v in prepare_kwargs.items() if k in imag})


class _Chunks:
    """A catalogue cut into row chunks that can be read independently (for resume)."""

    def __init__(self, source, modalities, chunk_size, prepare_kwargs):
        from .inputs.images import PreparedImages
        from .inputs.spectra import PreparedSpectra

        self.modalities = modalities
        self.prepare_kwargs = prepare_kwargs
        paths = _paths(source)
        if paths is not None and {p.suffix.lower() for p in paths} <= {".h5", ".hdf5"} \
                and not any(p.is_dir() for p in paths):
            from .data.layouts import open_layout
            self.kind = "hdf5"
            self.files = [(p, open_layout(p).n) for p in paths]
            self.bounds = [(i, s, min(s + chunk_size, n)) for i, (p, n) in enumerate(self.files)
                           for s in range(0, n, chunk_size)]
            self.description = [str(p) for p in paths]
            self.identity = {"kind": "hdf5", "files": [{**file_identity(p), "rows": n}
                                                       for p, n in self.files]}
            self.rows = sum(n for _, n in self.files)
        elif paths is not None:
            if modalities != ("spectrum",):
                raise InputError("DESI coadd files hold spectra only: use modality='spectrum'")
            from .inputs.desi import desi_coadd_paths
            self.kind = "desi"
            self.rows = None  # known only once every file is read
            self.files = paths = desi_coadd_paths(paths)
            self.bounds = [(i, 0, None) for i in range(len(paths))]
            self.description = [str(p) for p in paths]
            self.identity = {"kind": "desi", "files": [file_identity(p) for p in paths]}
        else:
            self.kind = "memory"
            data = source if isinstance(source, dict) else {modalities[0]: source}
            unknown = set(data) - {"spectrum", "image"}
            if unknown:
                raise InputError(f"unknown keys {sorted(unknown)} in the input dict; use "
                                 "'spectrum' and/or 'image'")
            missing = set(modalities) - set(data)
            if missing:
                raise InputError(f"modality {sorted(missing)} requested but the input holds "
                                 f"only {sorted(data)}")
            self.prepared = {}
            spec_kwargs, image_kwargs = _split_kwargs(prepare_kwargs)
            if "spectrum" in modalities:
                sp = data["spectrum"]
                self.prepared["spectrum"] = (sp if isinstance(sp, PreparedSpectra)
                                             else _spectra_input(sp, spec_kwargs))
            if "image" in modalities:
                im = data["image"]
                self.prepared["image"] = (im if isinstance(im, PreparedImages)
                                          else _images_input(im, image_kwargs))
            lengths = {len(v) for v in self.prepared.values()}
            if len(lengths) != 1:
                raise InputError(f"spectra and images differ in length: "
                                 f"{ {k: len(v) for k, v in self.prepared.items()} }")
            n = self.rows = lengths.pop()
            self.bounds = [(0, s, min(s + chunk_size, n)) for s in range(0, n, chunk_size)]
            self.description = ["in-memory input", n]
            self.identity = {"kind": "memory", "rows": n, "sha256": self._content_sha256()}

    def _content_sha256(self):
        """sha256 of the model-ready in-memory arrays (and identifiers), to recognise them."""
        h = hashlib.sha256()
        for modality in sorted(self.prepared):
            prepared = self.prepared[modality]
            arrays = ([prepared.flux, prepared.ivar] if modality == "spectrum"
                      else [prepared.images])
            for name in ("TARGETID", "targetid"):
                if name in prepared.meta.colnames:
                    arrays.append(np.asarray(prepared.meta[name], dtype=np.int64))
            for a in arrays:
                a = np.ascontiguousarray(a)
                h.update(f"{modality}{a.dtype.str}{a.shape}".encode())
                h.update(memoryview(a).cast("B"))
        return h.hexdigest()

    def __len__(self):
        return len(self.bounds)

    def where(self, i):
        """``(file or None, first row in it)`` of chunk ``i``, for messages."""
        f, start, _ = self.bounds[i]
        if self.kind == "hdf5":
            return str(self.files[f][0]), start
        if self.kind == "desi":
            return str(self.files[f]), 0
        return None, start

    def read(self, i):
        """``(ids, {modality: model-ready float32 array}, flags)`` of chunk ``i``.

        ``flags`` is ``(valid, problem)`` for the spectra (None without spectra).
        """
        f, start, stop = self.bounds[i]
        if self.kind == "hdf5":
            from .data.paired import read_paired_dataset
            fields = (["flux", "ivar"] if "spectrum" in self.modalities else []) + \
                     (["image"] if "image" in self.modalities else [])
            table, arrays = read_paired_dataset(self.files[f][0], fields=fields,
                                                rows=slice(start, stop))
            out, flags = {}, None
            if "spectrum" in self.modalities:
                out["spectrum"] = arrays["flux"]
                flags = _ivar_flags(arrays["ivar"])
            if "image" in self.modalities:
                out["image"] = arrays["image"]
            return np.asarray(table["targetid"], dtype=np.int64), out, flags
        if self.kind == "desi":
            from .inputs.desi import read_desi_coadd
            prepared = read_desi_coadd([str(self.files[f])], **self.prepare_kwargs)
            ids = (np.asarray(prepared.meta["TARGETID"], dtype=np.int64)
                   if "TARGETID" in prepared.meta.colnames else np.full(len(prepared), -1))
            return ids, {"spectrum": prepared.flux}, _meta_flags(prepared.meta)
        out, ids, flags = {}, None, None
        for modality, prepared in self.prepared.items():
            values = prepared.flux if modality == "spectrum" else prepared.images
            out[modality] = values[start:stop]
            meta = prepared.meta
            for name in ("TARGETID", "targetid"):
                if ids is None and name in meta.colnames:
                    ids = np.asarray(meta[name][start:stop], dtype=np.int64)
            if modality == "spectrum":
                flags = _meta_flags(meta[start:stop]) if "VALID" in meta.colnames else \
                    _ivar_flags(prepared.ivar[start:stop])
        if ids is None:
            ids = np.arange(start, stop, dtype=np.int64)
        return ids, out, flags


_NO_PIXEL = "no valid pixel (all masked or ivar = 0)"


def _ivar_flags(ivar):
    """``(valid, problem)`` of spectra from their inverse variance alone."""
    valid = np.asarray(ivar > 0).any(axis=1)
    return valid, np.where(valid, "", _NO_PIXEL)


def _meta_flags(meta):
    """``(valid, problem)`` from a PreparedSpectra table; DESI non-targets are not valid."""
    n = len(meta)
    valid = (np.asarray(meta["VALID"], dtype=bool) if "VALID" in meta.colnames
             else np.ones(n, bool))
    problem = (np.asarray(meta["PROBLEM"], dtype=str) if "PROBLEM" in meta.colnames
               else np.full(n, ""))
    if "IS_TARGET" in meta.colnames:
        target = np.asarray(meta["IS_TARGET"], dtype=bool)
        sky = (np.asarray(meta["IS_SKY"], dtype=bool) if "IS_SKY" in meta.colnames
               else np.zeros(n, bool))
        why = np.where(sky, "sky fibre (OBJTYPE SKY)", "not a science target (unassigned "
                       "fibre or TARGETID <= 0)")
        problem = np.array([p if t else ("; ".join(x for x in (p, w) if x))
                            for p, t, w in zip(problem, target, why)], dtype=str)
        valid = valid & target
    return valid, problem


def _warn_unusable(valid, problem, n, what, advice):
    bad = np.flatnonzero(~np.asarray(valid, dtype=bool))
    if bad.size:
        listed = "; ".join(f"row {i}: {problem[i]}" for i in bad[:3])
        warnings.warn(f"{bad.size} of {n} {what} are unusable ({listed}"
                      f"{' ...' if bad.size > 3 else ''}); their embeddings carry no "
                      f"information about a galaxy. {advice}", AstroclipWarning, stacklevel=3)


def _chunk_column(parts, chunks, key):
    """Concatenation of one array of the chunk files ``chunks`` (indices, or their number),
    or None when the chunks lack it."""
    pieces = []
    for i in (range(chunks) if isinstance(chunks, int) else chunks):
        with np.load(parts / f"chunk_{i:07d}.npz") as z:
            if key not in z.files:
                return None
            pieces.append(z[key])
    return np.concatenate(pieces) if pieces else None


def _chunk_blocks(parts, chunks, key):
    """The ``key`` array of the chunk files ``chunks`` (indices, or their number), one at a time."""
    for i in (range(chunks) if isinstance(chunks, int) else chunks):
        with np.load(parts / f"chunk_{i:07d}.npz") as z:
            yield z[key]


def _write_output(parts, out, fmt, modalities, info, chunks, *, shard=None):
    """Assemble the chunks (indices ``chunks``) into ``out`` (atomically; the chunks stay).

    ``shard``: metadata of a shard file (`astroclip.data.embeddings.shard_meta`);
    the file then also holds the ``chunk`` column.
    """
    ids = _chunk_column(parts, chunks, "targetid")
    ids = np.zeros(0, np.int64) if ids is None else ids
    chunk = None
    if shard is not None:
        sizes = [len(block) for block in _chunk_blocks(parts, chunks, "targetid")]
        chunk = np.repeat(np.asarray(list(chunks), dtype=np.int64), sizes)
        info = {**info, **shard}
    write_embeddings(out, ids, {m: _chunk_blocks(parts, chunks, m) for m in modalities},
                     valid=_chunk_column(parts, chunks, "valid"),
                     problem=_chunk_column(parts, chunks, "problem"), meta=info, format=fmt,
                     chunk=chunk)


#: File that marks a ``<out>.parts`` folder as made by `embed_catalog`.
_PARTS_MARKER = ".astroclip-parts"


def _our_part_files(parts):
    """The files of ``parts`` that embed_catalog writes (chunks, manifest, temporaries)."""
    names = ("manifest.json", _PARTS_MARKER)
    return [p for p in parts.iterdir() if p.is_file() and (
        p.name in names or (p.name.startswith("chunk_") and p.suffix == ".npz")
        or (p.name.startswith((".chunk_", ".manifest.json.")) and p.name.endswith(".tmp")))]


#: ``format`` of the manifest of a ``<out>.parts`` folder.
_PARTS_FORMAT = "astroclip-embed-parts"

_MADE_BY_LABELS = {"model": "model", "modalities": "modality",
                   "chunk_size": "chunk_size", "n_chunks": "number of chunks",
                   "input": "input", "options": "input options", "shard": "shard"}


def _model_identity(net, info):
    """The weights and configuration sha256 of a model (hashing the tensors of a bare module)."""
    weights = info.get("weights_sha256") or ""
    if not weights:
        h = hashlib.sha256()
        for name, tensor in net.state_dict().items():
            h.update(name.encode())
            h.update(tensor.detach().to("cpu").contiguous().numpy().tobytes())
        weights = h.hexdigest()
    config = json.dumps(getattr(net, "config", None), sort_keys=True, default=repr)
    return {"weights_sha256": weights,
            "config_sha256": hashlib.sha256(config.encode()).hexdigest()}


def _run_identity(net, info, chunks, modalities, chunk_size, prepare_kwargs):
    """What made a run's chunks: model, modalities, chunking, input and input options."""
    return {"model": _model_identity(net, info), "modalities": list(modalities),
            "chunk_size": int(chunk_size), "n_chunks": len(chunks), "input": chunks.identity,
            "options": json.loads(json.dumps(prepare_kwargs, sort_keys=True, default=repr))}


def _comparable(made_by):
    """``made_by`` without the file paths (a moved, unchanged input file is the same input)."""
    out = json.loads(json.dumps(made_by))
    for f in out.get("input", {}).get("files", []):
        f.pop("path", None)
    return out


def _describe_input(identity):
    if identity.get("kind") == "memory":
        return (f"in-memory input of {identity.get('rows')} rows, content sha256 "
                f"{str(identity.get('sha256'))[:16]}...")
    files = identity.get("files", [])
    return ", ".join(f"{f.get('path', '?')} ({f.get('size')} bytes, mtime_ns {f.get('mtime_ns')})"
                     for f in files[:3]) + (" ..." if len(files) > 3 else "")


def _mismatch(where, earlier, now):
    """ResumeMismatchError listing what differs between two ``made_by`` records."""
    a, b = _comparable(earlier), _comparable(now)
    parts = []
    for key, label in _MADE_BY_LABELS.items():
        old, new = a.get(key), b.get(key)
        if old == new:
            continue
        if key == "input":
            parts.append(f"input: earlier {_describe_input(earlier.get(key) or {})}, now "
                         f"{_describe_input(now.get(key) or {})}")
        elif key == "model":
            old = old or {}
            if old.get("weights_sha256") != new["weights_sha256"]:
                parts.append(f"model weights: earlier sha256 {old.get('weights_sha256')}, now "
                             f"{new['weights_sha256']}")
            if old.get("config_sha256") != new["config_sha256"]:
                parts.append("model configuration (config.json)")
        else:
            parts.append(f"{label}: earlier {old}, now {new}")
    detail = "; ".join(parts) or "nothing recorded about the earlier run"
    return ResumeMismatchError(
        f"{where} holds the work of an earlier, unfinished run that differs from this one "
        f"({detail}). Chunks of two runs are never mixed: pass resume=False (astroclip embed "
        "--restart) to start over, or choose another out")


def _resumable_chunks(parts, made_by, n_chunks):
    """Indices of the finished chunks of ``parts``, after checking they were made like this run."""
    manifest_path = parts / "manifest.json"
    if manifest_path.exists():
        try:
            previous = json.loads(manifest_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataFileError(f"{manifest_path} is not readable JSON ({exc}); pass "
                                "resume=False (astroclip embed --restart) to start over") from None
        earlier = previous.get("made_by") if isinstance(previous, dict) else None
        if not isinstance(earlier, dict) or _comparable(earlier) != _comparable(made_by):
            raise _mismatch(parts, earlier if isinstance(earlier, dict) else {}, made_by)
    done = set()
    for i in range(n_chunks):
        path = parts / f"chunk_{i:07d}.npz"
        if not path.exists():
            continue
        try:
            with np.load(path, allow_pickle=False) as z:
                stamp = str(z["_made_by"]) if "_made_by" in z.files else "{}"
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise DataFileError(f"{path} is unreadable ({exc}); delete it to embed that chunk "
                                "again, or pass resume=False to start over") from None
        earlier = json.loads(stamp)
        if earlier != _comparable(made_by):
            raise _mismatch(path, earlier, made_by)
        done.add(i)
    return done


def _claim_parts(parts):
    """Create ``parts`` (marked as ours), or check that an existing one is ours."""
    if parts.exists():
        if not parts.is_dir() or (not (parts / _PARTS_MARKER).is_file() and any(parts.iterdir())):
            raise DataFileError(f"{parts} exists but was not made by astroclip.embed_catalog "
                                f"(no {_PARTS_MARKER} file in it), so it was left untouched; "
                                "move it away or choose another out")
    parts.mkdir(parents=True, exist_ok=True)
    (parts / _PARTS_MARKER).touch()


@contextlib.contextmanager
def _parts_lock(parts, out):
    """Hold an exclusive lock on ``parts`` (POSIX): one embed_catalog run per output at a time."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no lock
        yield
        return
    fh = open(parts / _PARTS_MARKER, "a")
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise DataFileError(f"{parts} is in use by another embed_catalog run writing {out}; "
                                "wait for it to finish (or stop it) and run again: it resumes "
                                "from the finished chunks") from None
        yield
    finally:
        fh.close()


def _clear_parts(parts):
    """Remove the chunks and manifest of an earlier run (nothing else)."""
    for p in _our_part_files(parts):
        if p.name != _PARTS_MARKER:
            p.unlink()


def _remove_parts(parts):
    """Remove our files from ``parts``, then the folder if nothing else is left in it."""
    for p in _our_part_files(parts):
        p.unlink()
    others = sorted(p.name for p in parts.iterdir())
    if others:
        warnings.warn(f"{parts} was kept: it holds files that astroclip did not write "
                      f"({', '.join(others[:5])}); the output is complete, remove the folder "
                      "yourself", AstroclipWarning, stacklevel=3)
    else:
        parts.rmdir()


def embed_catalog(source, *, out, modality="both", model=None, chunk_size=4096, format=None,
                  device=None, batch_size=None, progress=None, overwrite=False, resume=True,
                  shard=None, **prepare_kwargs):
    """Embed an arbitrarily large catalogue into a file, in resumable chunks.

    Each chunk of ``chunk_size`` rows is embedded and written atomically to
    ``<out>.parts/``; an interrupted run (killed, crashed, out of time, full
    disk) picks up at the first missing chunk with no lost or duplicated rows.
    When all chunks exist they are assembled into ``out`` (atomically) and
    astroclip's files are removed from the parts folder (and the folder, when
    nothing else is in it).  The manifest and every chunk record what made
    them (weights and configuration sha256 of the model, identity of the input
    files or hash of the in-memory input, chunking, input options); resuming
    with any of them changed is refused.  The parts folder is locked while a
    run uses it.

    Parameters
    ----------
    source : path(s), dict or array-like
        Paired HDF5 file(s) (spectra and/or images; any single-file layout of
        `astroclip.data.layouts`, read through its registry); DESI coadd
        FITS files (spectra, one chunk per file); or in-memory input: anything
        `embed_spectrum` / `embed_image` take, or ``{"spectrum": ..., "image": ...}``.
    out : path
        Output file: ``.h5``/``.hdf5`` (streamed, any size), ``.fits`` or
        ``.parquet`` (assembled in memory through astropy).
    modality : {"both", "spectrum", "image"}, optional
        Which embeddings to compute.
    model, device, batch_size, progress
        As in `embed_spectrum`.
    chunk_size : int, optional
        Rows per resumable chunk.
    format : {"hdf5", "fits", "parquet"}, optional
        Default from the suffix of ``out``.
    overwrite : bool, optional
        Replace an existing ``out``.
    resume : bool, optional
        Reuse the chunks of an interrupted run made the same way (default);
        False removes them and starts afresh.
    shard : tuple ``(i, n)`` or str ``"i/n"``, optional
        Embed only shard ``i`` (counted from 0) of ``n``, e.g. one task of a
        SLURM job array (``--array=0-<n-1>``, ``shard=(SLURM_ARRAY_TASK_ID, n)``).
        The catalogue is cut into chunks exactly as without ``shard`` and shard
        ``i`` takes the contiguous block of chunks ``shard_chunks(n_chunks, i, n)``
        (see `shard_chunks`), so every shard reads one contiguous range of the
        input and the merge is a concatenation in input order.  ``out`` is then a
        shard file (name one per shard, e.g. ``emb-3.h5``): an embeddings file
        with a ``chunk`` column and metadata naming the shard, the model, the
        options and the input; each shard resumes on its own from
        ``<out>.parts``.  Join the shards with
        `astroclip.data.embeddings.merge_embeddings` (``astroclip merge``).
    **prepare_kwargs
        Passed to the input layer.

    Returns
    -------
    `pathlib.Path`
        ``out``.  Its columns/datasets: ``targetid`` (or the row number for inputs
        without identifiers), ``spectrum_embedding`` / ``image_embedding`` and,
        with spectra, ``valid`` (False for spectra without usable pixels and
        for DESI sky or unassigned fibres, which are kept, with a warning
        counting them) and ``problem`` (why); its metadata records model name,
        version and weights hash.

    Raises
    ------
    FileExistsError
        ``out`` exists and ``overwrite`` is False.
    InputError
        Unknown modality or format, bad options, a bad ``shard`` or more shards
        than chunks (a `ValueError`).
    ResumeMismatchError
        ``<out>.parts`` holds chunks of a run made with another model, input,
        options or shard (a `ValueError`); the message says what differs.
    DataFileError
        ``<out>.parts`` exists but was not made by astroclip, is used by
        another run, holds an unreadable chunk, or the disk is full (an
        `OSError`); nothing written before is lost.
    NonFiniteError
        Inputs or embeddings with NaN or infinite values (rows named).

    Examples
    --------
    >>> from astroclip import embed_catalog
    >>> embed_catalog("survey.h5", out="embeddings.h5",
    ...               model="quickstart-report/model")  # doctest: +SKIP

    Shard 2 of 8 of a job array, then the merge (after all shards finished):

    >>> embed_catalog("coadds/", out="emb-2.h5", shard=(2, 8))  # doctest: +SKIP
    >>> from astroclip.data.embeddings import merge_embeddings
    >>> merge_embeddings([f"emb-{i}.h5" for i in range(8)], out="emb.h5")  # doctest: +SKIP
    """
    shard = _parse_shard(shard)
    if modality not in _MODALITIES:
        raise InputError(f"unknown modality {modality!r}; choose among {sorted(_MODALITIES)}")
    modalities = _MODALITIES[modality]
    out = Path(out)
    fmt = embeddings_format(out, format)
    check_output_path(out, overwrite=overwrite)
    if fmt == "parquet":
        require("pyarrow", purpose="writing Parquet (or write .h5 or .fits)")
    if int(chunk_size) < 1:
        raise InputError(f"chunk_size must be a positive integer, got {chunk_size}")
    device, batch_size, progress = _options(device, batch_size, progress)
    net = _shared_model(model, device=device)
    dev = next(net.parameters()).device
    encoders = {m: _encoder(net, m) for m in modalities}
    chunks = _Chunks(source, modalities, int(chunk_size), prepare_kwargs)
    info = model_info(net)
    made_by = _run_identity(net, info, chunks, modalities, chunk_size, prepare_kwargs)
    selected = range(len(chunks))
    shard_info = None
    if shard is not None:
        selected = shard_chunks(len(chunks), *shard)
        if not len(selected):
            raise InputError(f"shard {shard[0]}/{shard[1]} holds no rows: the catalogue has only "
                             f"{len(chunks)} chunk(s) of chunk_size={chunk_size}; use at most "
                             f"{len(chunks)} shards or a smaller chunk_size")
        shard_info = shard_meta(_comparable(made_by), shard, input_rows=chunks.rows)
        made_by["shard"] = list(shard)
    parts = out.with_name(out.name + ".parts")
    _claim_parts(parts)
    with _parts_lock(parts, out):
        if not resume:
            _clear_parts(parts)
        done = _resumable_chunks(parts, made_by, len(chunks))
        if not (parts / "manifest.json").exists():
            manifest = {"format": _PARTS_FORMAT, "format_version": 1, "model_info": info,
                        "source": [str(d) for d in chunks.description], "made_by": made_by}
            with atomic_path(parts / "manifest.json") as tmp:
                Path(tmp).write_text(json.dumps(manifest, indent=1))
        _embed_chunks(chunks, parts, done, encoders, made_by, batch_size=batch_size, device=dev,
                      progress=progress, selected=selected)
        check_output_path(out, overwrite=overwrite)  # written by someone else meanwhile?
        _write_output(parts, out, fmt, modalities, {**info, "modality": modality}, selected,
                      shard=shard_info)
        if "spectrum" in modalities:
            valid = _chunk_column(parts, selected, "valid")
            problem = _chunk_column(parts, selected, "problem")
            _warn_unusable(valid, problem, len(valid), f"rows of {chunks.description[0]}"
                           + (" ..." if len(chunks.description) > 2 else ""),
                           f"They are kept, flagged valid = False in {out} (column problem "
                           "says why): select the rows with valid == True.")
        _remove_parts(parts)
    return out


def _embed_chunk(chunks, i, encoders, stamp, *, batch_size, device):
    """The content of chunk file ``i``: identifiers, embeddings, flags and the stamp."""
    ids, arrays, flags = chunks.read(i)
    result = {"targetid": ids, "_made_by": stamp}
    if flags is not None:
        result["valid"], result["problem"] = flags
    source, first_row = chunks.where(i)
    for m, encoder in encoders.items():
        result[m] = _run_batches(encoder, arrays[m], batch_size=batch_size, device=device,
                                 progress=False, desc=f"{m} rows", first_row=first_row,
                                 source=source)
    return result


def _save_chunk(parts, i, result):
    """Write chunk file ``i`` atomically, after a free-space check."""
    chunk_path = parts / f"chunk_{i:07d}.npz"
    check_free_space(chunk_path, sum(np.asarray(v).nbytes for v in result.values()))
    with disk_errors(chunk_path), atomic_path(chunk_path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **result)
    return chunk_path


def _chunk_stamp(made_by):
    return np.array(json.dumps(_comparable(made_by), sort_keys=True))


def _embed_chunks(chunks, parts, done, encoders, made_by, *, batch_size, device, progress,
                  selected=None):
    """Embed and write every chunk of ``selected`` (default all) not in ``done``."""
    stamp = _chunk_stamp(made_by)
    selected = range(len(chunks)) if selected is None else selected
    bar = progress_bar(total=len(selected), initial=len(done & set(selected)),
                       desc="embedding catalogue", unit="chunk", progress=progress)
    for i in selected:
        if i in done:
            continue
        _save_chunk(parts, i, _embed_chunk(chunks, i, encoders, stamp, batch_size=batch_size,
                                           device=device))
        bar.update(1)
    bar.close()


def _parse_shard(shard):
    """``(i, n)`` from ``(i, n)`` or ``"i/n"`` (None stays None), checked."""
    if shard is None:
        return None
    try:
        i, n = (int(v) for v in (shard.split("/") if isinstance(shard, str) else shard))
    except (TypeError, ValueError):
        raise InputError(f"shard must be (i, n) or 'i/n' with integers, e.g. (0, 8) or '0/8'; "
                         f"got {shard!r}") from None
    if n < 1 or not 0 <= i < n:
        raise InputError(f"shard {i}/{n}: the shard index counts from 0 and must be below the "
                         f"number of shards (0 <= i < n, n >= 1); for a SLURM job array use "
                         f"--array=0-{max(n - 1, 0)}")
    return i, n


def shard_chunks(n_chunks, i, n):
    """The chunks of shard ``i`` of ``n``: a contiguous block, in input order.

    Shard ``i`` takes chunks ``floor(i * C / n)`` to ``floor((i + 1) * C / n)``
    (excluded) of the ``C`` chunks of the catalogue: every chunk is in exactly
    one shard, shards differ by at most one chunk, each reads one contiguous
    range of the input (one range of files), and concatenating the shards in
    order gives the single-process order.  Contiguous blocks rather than
    ``chunk % n``: with one DESI coadd file per chunk a shard opens only its own
    files in order, and the merge is a concatenation.

    Parameters
    ----------
    n_chunks : int
        Number of chunks of the whole catalogue.
    i, n : int
        Shard index (from 0) and number of shards.

    Returns
    -------
    range
        The chunk indices of shard ``i``.

    Examples
    --------
    >>> from astroclip.api import shard_chunks
    >>> [list(shard_chunks(7, i, 3)) for i in range(3)]
    [[0, 1], [2, 3], [4, 5, 6]]
    """
    return range(i * n_chunks // n, (i + 1) * n_chunks // n)
