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

Shard files (``embed_catalog(..., shard=(i, n))``) and the per-rank part files
of `astroclip.distributed.embed_catalog_distributed` are embeddings files with
one more column and more metadata (`SHARD_KEYS`), which `merge_embeddings`
checks before joining them::

    chunk                  int64   (N,)   the chunk of the whole catalogue each row is in
    metadata               shard = "i/n", n_chunks, chunk_size, input_rows ("" when
                           unknown), model_config_sha256, input_sha256,
                           options_sha256, made_by_sha256

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

__all__ = ["FORMAT", "FORMAT_VERSION", "SUFFIXES", "FITS_KEYWORDS", "SHARD_KEYS",
           "embeddings_format", "write_embeddings", "read_embeddings", "shard_meta",
           "merge_embeddings"]

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
                 "weights_sha256": "WTSHA256", "modality": "MODALITY",
                 "shard": "SHARD", "n_chunks": "NCHUNKS", "chunk_size": "CHUNKSZ",
                 "input_rows": "INPROWS", "model_config_sha256": "CFGSHA",
                 "input_sha256": "INPSHA", "options_sha256": "OPTSHA",
                 "made_by_sha256": "MADESHA"}
#: Metadata of shard and part files that a merged file does not keep.
SHARD_KEYS = ("shard", "n_chunks", "chunk_size", "input_rows", "model_config_sha256",
              "input_sha256", "options_sha256", "made_by_sha256")

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
                     format=None, chunk=None):
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
    chunk : array-like of int (N,), optional
        The ``chunk`` column of shard and part files (see the module docstring).

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
    if chunk is not None:
        chunk = np.asarray(chunk, dtype=np.int64).reshape(-1)
        if chunk.shape != ids.shape:
            raise InputError(f"chunk needs one value per row ({ids.size})")
    info = {"format": FORMAT, "format_version": str(FORMAT_VERSION)}
    info.update({str(k): str(v) for k, v in (meta or {}).items()
                 if k not in ("format", "format_version")})
    columns = {m: _blocks(m, v) for m, v in embeddings.items()}
    width = sum(w * 4 for w, _ in columns.values())
    flag_bytes = 0 if flags is None else 1 + flags[1].dtype.itemsize
    check_free_space(path, ids.size * (8 + width + flag_bytes + (0 if chunk is None else 8)))
    with disk_errors(path):
        if fmt == "hdf5":
            _write_hdf5(path, ids, columns, flags, info, chunk)
        else:
            _write_table(path, ids, columns, flags, info, fmt, chunk)
    return path


def _write_hdf5(path, ids, columns, flags, info, chunk):
    import h5py

    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as h:
            h.attrs.update(info)
            h.create_dataset("targetid", data=ids)
            if chunk is not None:
                h.create_dataset("chunk", data=chunk)
            if flags is not None:
                h.create_dataset("valid", data=flags[0])
                h.create_dataset("problem", data=flags[1].astype(object),
                                 dtype=h5py.string_dtype())
            for modality, (dim, blocks) in columns.items():
                ds = h.create_dataset(f"{modality}{_SUFFIX}", shape=(ids.size, dim), dtype="f4",
                                      chunks=(min(4096, ids.size), dim) if ids.size and dim
                                      else None)
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


def _write_table(path, ids, columns, flags, info, fmt, chunk):
    from astropy.table import Table

    table = Table({"targetid": ids})
    if chunk is not None:
        table["chunk"] = chunk
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


# ----------------------------------------------------------------------------- shards
def _sha256_json(value):
    import hashlib
    import json

    return hashlib.sha256(json.dumps(value, sort_keys=True, default=repr).encode()).hexdigest()


def shard_meta(made_by, shard, *, input_rows=None):
    """The metadata (`SHARD_KEYS`) of a shard or part file, from what made its rows.

    Parameters
    ----------
    made_by : dict
        The identity of the run without file paths (what `astroclip.embed_catalog`
        records in its manifest): ``model`` (``weights_sha256``,
        ``config_sha256``), ``modalities``, ``chunk_size``, ``n_chunks``,
        ``input`` and ``options``.
    shard : tuple of int
        ``(i, n)``: shard or rank ``i`` of ``n``.
    input_rows : int, optional
        Rows of the whole catalogue, when known before reading it all.

    Returns
    -------
    dict of str -> str

    Examples
    --------
    >>> from astroclip.data.embeddings import shard_meta
    >>> made_by = {"model": {"weights_sha256": "ab", "config_sha256": "cd"},
    ...            "modalities": ["spectrum"], "chunk_size": 4, "n_chunks": 3,
    ...            "input": {"kind": "memory", "rows": 10, "sha256": "ef"}, "options": {}}
    >>> meta = shard_meta(made_by, (1, 3), input_rows=10)
    >>> meta["shard"], meta["n_chunks"], meta["input_rows"]
    ('1/3', '3', '10')
    """
    made_by = {k: v for k, v in made_by.items() if k != "shard"}
    return {"shard": f"{int(shard[0])}/{int(shard[1])}", "n_chunks": str(made_by["n_chunks"]),
            "chunk_size": str(made_by["chunk_size"]),
            "input_rows": "" if input_rows is None else str(int(input_rows)),
            "model_config_sha256": str(made_by["model"].get("config_sha256", "")),
            "input_sha256": _sha256_json(made_by["input"]),
            "options_sha256": _sha256_json(made_by["options"]),
            "made_by_sha256": _sha256_json(made_by)}


class _Part:
    """One shard or part file, read lazily (HDF5) or at once (FITS, Parquet)."""

    def __init__(self, path):
        from ..exceptions import MergeError

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"shard file {self.path} does not exist; run its shard "
                                    "(astroclip embed --shard i/n) or check the path")
        if self.path.suffix.lower() in (".h5", ".hdf5"):
            from .hdf5 import open_hdf5

            with open_hdf5(self.path) as f:
                meta = {k: _plain(v) for k, v in f.attrs.items()}
                if "targetid" not in f:
                    raise InputError(f"{self.path} is not an embeddings file written by "
                                     f"`astroclip embed` (no 'targetid'); {_REWRITE}")
                _check_format(self.path, meta)
                self.targetid = f["targetid"][:]
                self.chunk = f["chunk"][:] if "chunk" in f else None
                self.flags = ((f["valid"][:], f["problem"].asstr()[:]) if "valid" in f
                              else None)
                self.modalities = sorted(k[:-len(_SUFFIX)] for k in f if k.endswith(_SUFFIX))
                self.widths = {m: f[m + _SUFFIX].shape[1] for m in self.modalities}
            self._table = None
        else:
            from astropy.table import Table

            ids, emb, meta = _read_table(self.path)
            t = Table.read(self.path)
            self.targetid = ids
            self.chunk = np.asarray(t["chunk"]) if "chunk" in t.colnames else None
            self.flags = ((np.asarray(t["valid"], bool), np.asarray(t["problem"], str))
                          if "valid" in t.colnames else None)
            self.modalities = sorted(emb)
            self.widths = {m: v.shape[1] for m, v in emb.items()}
            self._table = emb
        self.meta = meta
        if self.chunk is None or "shard" not in meta:
            raise MergeError(f"{self.path} is not a shard file (no chunk column or shard "
                             "metadata): only files written by embed_catalog(..., shard=(i, n)) "
                             "(astroclip embed --shard i/n) or by the distributed embedding "
                             "can be merged")
        try:
            self.index, self.count = (int(v) for v in str(meta["shard"]).split("/"))
        except ValueError:
            raise DataFileError(f"{self.path} has an unreadable shard entry "
                                f"{meta['shard']!r}; run the shard again") from None

    def block(self, modality, start, stop):
        if self._table is not None:
            return self._table[modality][start:stop]
        from .hdf5 import open_hdf5

        with open_hdf5(self.path) as f:
            return f[modality + _SUFFIX][start:stop]

    def runs(self):
        """``{chunk: (start, stop)}`` of the rows of each chunk (rows of a chunk are together)."""
        from ..exceptions import MergeError

        out = {}
        if not self.chunk.size:
            return out
        edges = np.flatnonzero(np.diff(self.chunk)) + 1
        starts = np.concatenate([[0], edges])
        stops = np.concatenate([edges, [self.chunk.size]])
        for a, b in zip(starts, stops):
            c = int(self.chunk[a])
            if c in out:
                raise MergeError(f"{self.path}: the rows of chunk {c} are not together; the file "
                                 "was not written by astroclip: run this shard again")
            out[c] = (int(a), int(b))
        return out


#: Metadata compared between shards, with the words naming them in messages.
_IDENTITY = (("weights_sha256", "model weights (sha256)"),
             ("model_config_sha256", "model configuration (sha256)"),
             ("modality", "modality"), ("chunk_size", "chunk_size"),
             ("n_chunks", "number of chunks"), ("input_sha256", "input (files or content)"),
             ("options_sha256", "input options"), ("made_by_sha256", "run identity"))


def merge_embeddings(paths, out, *, format=None, overwrite=False):
    """Join shard (or per-rank part) files into one embeddings file, in input order.

    Every file is checked first: all were made by the same model (weights and
    configuration sha256), modality, chunking, input options and input, with
    the same number of shards; every shard ``0 .. n-1`` is given exactly once;
    every chunk of the catalogue is in exactly one shard (no row missing or
    duplicated) and, when the catalogue size is known, the rows add up to it.
    The output has the rows in the order of a single-process
    `astroclip.embed_catalog` run and the same metadata (the shard entries
    removed).  Memory: the identifiers and flags; the embeddings are streamed
    chunk by chunk into HDF5 output.

    Parameters
    ----------
    paths : sequence of path
        The shard files, in any order.
    out : path
        The merged file (``.h5``, ``.fits``, ``.parquet``), written atomically.
    format : {"hdf5", "fits", "parquet"}, optional
        Default from the suffix of ``out``.
    overwrite : bool, optional
        Replace an existing ``out``.

    Returns
    -------
    `pathlib.Path`
        ``out``.

    Raises
    ------
    MergeError
        (a `ValueError`) Shards made by another model, options or input, of
        different shard counts, a shard missing or given twice, a chunk missing
        or in two shards, a file that is not a shard file.
    FileNotFoundError
        A shard file does not exist.
    FileExistsError
        ``out`` exists and ``overwrite`` is False.

    Examples
    --------
    >>> from astroclip.data.embeddings import merge_embeddings
    >>> merge_embeddings([f"emb-{i}.h5" for i in range(8)], "emb.h5")  # doctest: +SKIP
    """
    from .._io import check_output_path
    from ..exceptions import MergeError

    out = Path(out)
    fmt = embeddings_format(out, format)
    check_output_path(out, overwrite=overwrite)
    paths = [Path(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
    if not paths:
        raise MergeError("no shard file given; pass the files written by the n shards")
    parts = [_Part(p) for p in paths]
    first = parts[0]
    counts = {p.count for p in parts}
    if len(counts) > 1:
        listed = ", ".join(f"{p.path.name}: {p.index}/{p.count}" for p in parts[:6])
        raise MergeError(f"the shard files come from runs of different shard counts ({listed}); "
                         "merge the shards of one job array")
    for p in parts[1:]:
        for key, label in _IDENTITY:  # (the model of an empty part file is checked too)
            if str(p.meta.get(key, "")) != str(first.meta.get(key, "")):
                raise MergeError(
                    f"{p.path} and {first.path} were not made the same way: their {label} "
                    f"differ ({str(first.meta.get(key, ''))[:16]} vs "
                    f"{str(p.meta.get(key, ''))[:16]}); every shard must be made by the same "
                    "model, options and input: run the odd shard again")
        if p.modalities != first.modalities and len(p.targetid) and len(first.targetid):
            raise MergeError(f"{p.path} holds {p.modalities} embeddings, {first.path} "
                             f"{first.modalities}; run the odd shard again")
    n = first.count
    by_index = {}
    for p in parts:
        if p.index in by_index:
            raise MergeError(f"shard {p.index}/{n} is given twice ({by_index[p.index].path} and "
                             f"{p.path}); give each shard file once")
        by_index[p.index] = p
    missing = sorted(set(range(n)) - set(by_index))
    if missing:
        shown = ", ".join(str(i) for i in missing[:10])
        raise MergeError(f"shard{'s' if len(missing) > 1 else ''} {shown} of {n} "
                         f"{'are' if len(missing) > 1 else 'is'} missing (given: "
                         f"{', '.join(str(i) for i in sorted(by_index))}); run "
                         f"embed_catalog(..., shard=({missing[0]}, {n})) (astroclip embed "
                         f"--shard {missing[0]}/{n}) and merge again")
    n_chunks = int(first.meta["n_chunks"])
    where = {}
    for i in range(n):
        p = by_index[i]
        for c, run in p.runs().items():
            if c in where:
                raise MergeError(f"duplicate rows: chunk {c} is in {where[c][0].path} and "
                                 f"{p.path}; the files are not the shards of one run")
            if not 0 <= c < n_chunks:
                raise MergeError(f"{p.path} holds chunk {c}, outside the {n_chunks} chunks of "
                                 "the catalogue; run this shard again")
            where[c] = (p, run)
    absent = sorted(set(range(n_chunks)) - set(where))
    if absent:
        raise MergeError(f"rows missing: chunk(s) {', '.join(str(c) for c in absent[:10])} of "
                         f"{n_chunks} are in no shard file; the shards are incomplete: run them "
                         "again (they resume)")
    total = sum(len(p.targetid) for p in parts)
    rows = str(first.meta.get("input_rows", ""))
    if rows and int(rows) != total:
        raise MergeError(f"the shards hold {total} rows, the catalogue {rows}; rows are missing "
                         "or duplicated: run the shards again")
    order = [where[c] for c in range(n_chunks)]
    ids = np.concatenate([p.targetid[a:b] for p, (a, b) in order])
    flags = None
    filled = [p for p in parts if len(p.targetid)]  # a rank without chunks has no columns
    if all(p.flags is not None for p in filled):
        flags = (np.concatenate([p.flags[0][a:b] for p, (a, b) in order]).astype(bool),
                 np.concatenate([np.asarray(p.flags[1][a:b], dtype=str) for p, (a, b) in order]))
    widths = {m: {p.widths[m] for p in parts if len(p.targetid)} for m in first.modalities}
    for m, w in widths.items():
        if len(w) > 1:
            raise MergeError(f"the {m} embeddings of the shards differ in width ({sorted(w)}); "
                             "run the odd shard again")

    def blocks(modality):
        for p, (a, b) in order:
            yield p.block(modality, a, b)

    meta = {k: v for k, v in first.meta.items()
            if k not in SHARD_KEYS and k not in ("format", "format_version")}
    return write_embeddings(out, ids, {m: blocks(m) for m in first.modalities},
                            valid=None if flags is None else flags[0],
                            problem=None if flags is None else flags[1], meta=meta, format=fmt)
