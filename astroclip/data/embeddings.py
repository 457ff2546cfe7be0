"""The embeddings file: one row per object, one embedding column per modality.

`astroclip.embed_catalog` (and ``astroclip embed``) write it with
`write_embeddings`; the evaluation (`astroclip.evaluation.evaluate_embeddings`),
the quickstart and ``astroclip search`` read it with `read_embeddings`.  Three
containers hold the same content (``format_version`` 1)::

    targetid               int64   (N,)   TARGETID, or the row number of inputs without one
    <modality>_embedding   float32 (N, D) one per modality ("spectrum", "image")
    valid                  bool    (N,)   with spectra: False for spectra without usable
                                          pixels and for DESI sky or unassigned fibres
    problem                str     (N,)   why a row is not valid ("" otherwise)
    metadata               format = "astroclip-embeddings", format_version = 1, and what
                           made the file: model, path, astroclip_version,
                           weights_sha256, modality

- HDF5 (``.h5``, ``.hdf5``): one dataset per column, the metadata as root
  attributes; written block by block, so any size fits;
- FITS (``.fits``): a binary table, the metadata as header keywords of at most
  8 characters (`FITS_KEYWORDS`: ``FORMAT``, ``FORMATV``, ``MODEL``,
  ``WTSHA256``...), given back under their long names by `read_embeddings`;
- Parquet (``.parquet``; writing needs pyarrow, reading pyarrow and pandas): a table
  with the metadata in its schema.
"""

from pathlib import Path

import numpy as np

from .._io import atomic_path, check_free_space, disk_errors
from .._optional import require
from ..exceptions import DataFileError, InputError

__all__ = ["FORMAT", "FORMAT_VERSION", "SUFFIXES", "FITS_KEYWORDS", "embeddings_format",
           "write_embeddings", "read_embeddings"]

#: The ``format`` metadata of an embeddings file.
FORMAT = "astroclip-embeddings"
#: Layout version written by this module (readers accept versions <= this one).
FORMAT_VERSION = 1
#: File suffix -> container.
SUFFIXES = {".h5": "hdf5", ".hdf5": "hdf5", ".fits": "fits", ".fit": "fits",
            ".parquet": "parquet"}
#: Metadata name -> FITS header keyword (FITS keywords have at most 8 characters).
FITS_KEYWORDS = {"format": "FORMAT", "format_version": "FORMATV", "model": "MODEL",
                 "path": "MODELDIR", "astroclip_version": "ACLIPVER",
                 "weights_sha256": "WTSHA256", "modality": "MODALITY"}

_SUFFIX = "_embedding"
_REWRITE = "write it again with `astroclip embed` (astroclip.embed_catalog)"


def embeddings_format(path, format=None):
    """The container of an embeddings file: ``format``, or the one named by the suffix.

    Parameters
    ----------
    path : str or path-like
        The file.
    format : {"hdf5", "fits", "parquet"}, optional
        Overrides the suffix.

    Returns
    -------
    str
        ``"hdf5"``, ``"fits"`` or ``"parquet"``.

    Raises
    ------
    InputError
        An unknown ``format``, or a suffix that names none of them.

    Examples
    --------
    >>> from astroclip.data.embeddings import embeddings_format
    >>> embeddings_format("survey-embeddings.parquet")
    'parquet'
    """
    fmt = format or SUFFIXES.get(Path(path).suffix.lower())
    if fmt not in ("hdf5", "fits", "parquet"):
        raise InputError(f"cannot tell the output format of {path}; use a .h5, .fits or "
                         ".parquet suffix or pass format='hdf5'|'fits'|'parquet'")
    return fmt


def _blocks(name, value):
    """``(width, iterator of (rows, D) float32 blocks)`` of an array or an iterable of blocks."""
    if hasattr(value, "shape"):
        value = [value]
    blocks = iter(value)
    first = next(blocks, None)
    if first is None:
        return 0, iter(())
    first = np.asarray(first)
    if first.ndim != 2:
        raise InputError(f"the {name} embeddings must be 2-D (objects, dimension); got a block "
                         f"of shape {first.shape}")

    def chain():
        yield first
        yield from blocks
    return first.shape[1], chain()


def write_embeddings(path, targetid, embeddings, *, valid=None, problem=None, meta=None,
                     format=None):
    """Write an embeddings file (atomically: nothing is left under ``path`` on failure).

    Parameters
    ----------
    path : str or path-like
        The file to write (replaced if it exists; check before calling).
    targetid : array-like of int (N,)
        One identifier per row.
    embeddings : dict of str -> array (N, D) or iterable of (n, D) blocks
        One entry per modality; blocks (e.g. read from chunk files one at a time)
        are streamed into HDF5 files and concatenated for FITS and Parquet.
    valid, problem : array-like (N,), optional
        Usability flag of each row and why it is not usable (give both or neither).
    meta : dict, optional
        What made the file (``model``, ``weights_sha256`` ...), stored as strings
        beside ``format`` and ``format_version``.
    format : {"hdf5", "fits", "parquet"}, optional
        Default from the suffix of ``path``.

    Returns
    -------
    `pathlib.Path`
        ``path``.

    Raises
    ------
    InputError
        Columns of different lengths, a bad ``format``.
    DataFileError
        (an `OSError`) The disk has no room for the file (checked first).

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from astroclip.data.embeddings import read_embeddings, write_embeddings
    >>> path = os.path.join(tempfile.mkdtemp(), "embeddings.h5")
    >>> _ = write_embeddings(path, [7, 8], {"spectrum": np.ones((2, 4), "f4")},
    ...                      meta={"model": "mine"})
    >>> ids, emb, meta = read_embeddings(path)
    >>> ids.tolist(), emb["spectrum"].shape, meta["format"], meta["model"]
    ([7, 8], (2, 4), 'astroclip-embeddings', 'mine')
    """
    path = Path(path)
    fmt = embeddings_format(path, format)
    if fmt == "parquet":
        require("pyarrow", purpose="writing Parquet (or write .h5 or .fits)")
    ids = np.asarray(targetid, dtype=np.int64).reshape(-1)
    if (valid is None) != (problem is None):
        raise InputError("give both valid and problem, or neither")
    flags = None
    if valid is not None:
        flags = (np.asarray(valid, dtype=bool).reshape(-1), np.asarray(problem, dtype=str))
        if flags[0].shape != ids.shape or flags[1].shape != ids.shape:
            raise InputError(f"valid and problem need one value per row ({ids.size})")
    info = {"format": FORMAT, "format_version": str(FORMAT_VERSION)}
    info.update({str(k): str(v) for k, v in (meta or {}).items()
                 if k not in ("format", "format_version")})
    columns = {m: _blocks(m, v) for m, v in embeddings.items()}
    width = sum(w * 4 for w, _ in columns.values())
    flag_bytes = 0 if flags is None else 1 + flags[1].dtype.itemsize
    check_free_space(path, ids.size * (8 + width + flag_bytes))
    with disk_errors(path):
        if fmt == "hdf5":
            _write_hdf5(path, ids, columns, flags, info)
        else:
            _write_table(path, ids, columns, flags, info, fmt)
    return path


def _write_hdf5(path, ids, columns, flags, info):
    import h5py

    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as h:
            h.attrs.update(info)
            h.create_dataset("targetid", data=ids)
            if flags is not None:
                h.create_dataset("valid", data=flags[0])
                h.create_dataset("problem", data=flags[1].astype(object),
                                 dtype=h5py.string_dtype())
            for modality, (dim, blocks) in columns.items():
                ds = h.create_dataset(f"{modality}{_SUFFIX}", shape=(ids.size, dim), dtype="f4",
                                      chunks=(min(4096, max(ids.size, 1)), max(dim, 1)))
                row = 0
                for block in blocks:
                    block = np.asarray(block, dtype=np.float32)
                    ds[row:row + len(block)] = block
                    row += len(block)
                _check_rows(modality, row, ids.size)


def _check_rows(modality, rows, n):
    if rows != n:
        raise InputError(f"the {modality} embeddings have {rows} rows for {n} targetids; give "
                         "one embedding per row")


def _write_table(path, ids, columns, flags, info, fmt):
    from astropy.table import Table

    table = Table({"targetid": ids})
    if flags is not None:
        table["valid"], table["problem"] = flags
    for modality, (dim, blocks) in columns.items():
        values = [np.asarray(b, dtype=np.float32) for b in blocks]
        values = np.concatenate(values) if values else np.zeros((0, dim), np.float32)
        _check_rows(modality, len(values), ids.size)
        table[f"{modality}{_SUFFIX}"] = values
    if fmt == "fits":
        info = {FITS_KEYWORDS.get(k, k.upper()[:8]): v for k, v in info.items()}
    table.meta.update(info)
    with atomic_path(path) as tmp:
        table.write(tmp, format="fits" if fmt == "fits" else "parquet", overwrite=True)


def _check_format(path, meta):
    """Refuse a file without our format name or of a newer format version."""
    fmt = meta.get("format")
    if fmt != FORMAT:
        raise InputError(f"{path} is not an embeddings file written by `astroclip embed` "
                         f"(format {fmt!r}, expected {FORMAT!r}); {_REWRITE}")
    try:
        version = int(meta.get("format_version", 0))
    except (TypeError, ValueError):
        version = -1
    if version < 1:
        raise DataFileError(f"{path} has an unreadable format_version "
                            f"{meta.get('format_version')!r}; {_REWRITE}")
    if version > FORMAT_VERSION:
        raise InputError(f"{path} has format_version {version}, newer than this astroclip "
                         f"reads ({FORMAT_VERSION}); upgrade astroclip")
    meta["format_version"] = version


def _plain(value):
    if isinstance(value, bytes):
        return value.decode()
    return value.item() if isinstance(value, np.generic) else value


def read_embeddings(path):
    """Read an embeddings file: ``(targetid, {modality: array}, meta)``.

    Parameters
    ----------
    path : str or path-like
        A file written by `write_embeddings` (``astroclip embed``).

    Returns
    -------
    targetid : `numpy.ndarray`
        int64 (N,).
    embeddings : dict of str -> `numpy.ndarray`
        float32 (N, D) per modality.
    meta : dict
        ``format``, ``format_version`` (int) and what made the file, under the
        same names for every container (FITS keywords are given back under
        their long names, see `FITS_KEYWORDS`).

    Raises
    ------
    FileNotFoundError
        No such file.
    DataFileError
        (an `OSError`) A file that cannot be read (truncated, corrupt, locked).
    InputError
        (a `ValueError`) A readable file that is not an embeddings file, or one
        written by a newer astroclip.

    Examples
    --------
    >>> from astroclip.data.embeddings import read_embeddings
    >>> ids, emb, meta = read_embeddings("embeddings.h5")  # doctest: +SKIP
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; write it with `astroclip embed`")
    if path.suffix.lower() in (".h5", ".hdf5"):
        ids, emb, meta = _read_hdf5(path)
    else:
        ids, emb, meta = _read_table(path)
    if not emb:
        raise InputError(f"{path} holds no '*{_SUFFIX}' column; {_REWRITE}")
    return ids, emb, meta


def _read_hdf5(path):
    from .hdf5 import open_hdf5

    with open_hdf5(path) as f:
        meta = {k: _plain(v) for k, v in f.attrs.items()}
        if "targetid" not in f:
            raise InputError(f"{path} is not an embeddings file written by `astroclip embed` "
                             f"(no 'targetid'); {_REWRITE}")
        _check_format(path, meta)
        ids = f["targetid"][:]
        emb = {k[:-len(_SUFFIX)]: f[k][:] for k in f if k.endswith(_SUFFIX)}
    return ids, emb, meta


def _read_table(path):
    from astropy.io.registry import IORegistryError
    from astropy.table import Table

    if path.suffix.lower() == ".parquet":
        require("pyarrow", purpose="reading Parquet")
        require("pandas", purpose="reading Parquet (astropy's Parquet reader uses it)")
    try:
        t = Table.read(path)
    except (OSError, ValueError, TypeError, IORegistryError) as exc:
        raise DataFileError(f"{path} cannot be read as a table ({str(exc).splitlines()[0]}); "
                            f"it is truncated, corrupt or not an embeddings file: "
                            f"{_REWRITE}") from None
    if "targetid" not in t.colnames:
        raise InputError(f"{path} is not an embeddings file written by `astroclip embed` "
                         f"(no 'targetid' column; columns: {t.colnames[:10]}); {_REWRITE}")
    long_names = {v: k for k, v in FITS_KEYWORDS.items()}
    meta = {long_names.get(k, k): _plain(v) for k, v in t.meta.items()}
    _check_format(path, meta)
    ids = np.asarray(t["targetid"])
    emb = {c[:-len(_SUFFIX)]: np.asarray(t[c]) for c in t.colnames if c.endswith(_SUFFIX)}
    return ids, emb, meta
