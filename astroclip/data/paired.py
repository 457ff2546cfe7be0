"""The paired image-spectrum training-set file: writing it, and reading any paired file.

One file holds N galaxies, each with an identifier, a sky position, a
spectrum (flux and inverse variance on the DESI grid of
`astroclip.inputs.grid`), a g, r, z image in nanomaggies, optional
catalogue labels and a train/val/test split; its layout is described in
`astroclip.data.layouts.astroclip` (format ``"astroclip-paired"``).

`PairedDatasetWriter` builds such a file chunk by chunk (every row dataset is
chunked along the rows, compressed and grown by `PairedDatasetWriter.append`,
so that building a large set never holds it in memory).  `read_paired_dataset`
loads (part of) a paired file of any single-file layout of
`astroclip.data.layouts` (ours or the paper's) into memory;
`astroclip.data.datasets.PairedDataset` reads them lazily for training.
"""

import os
import contextlib
import tempfile
from pathlib import Path

import numpy as np
import astropy.units as u
from astropy.table import Table

from ..inputs import grid
from .._io import check_free_space, check_output_path, disk_errors
from ..exceptions import InputError
from .hdf5 import SPLIT_NAMES, split_codes
from .layouts import open_layout
from .layouts._base import ARRAY_FIELDS
from .layouts.astroclip import FORMAT, FORMAT_VERSION

__all__ = ["PairedDatasetWriter", "read_paired_dataset"]

_ROW_CHUNK_1D = 4096


def _as_array(value, name, unit, equivalencies=None):
    """Quantity -> numpy in ``unit``; plain arrays are taken as already in ``unit``."""
    if isinstance(value, u.Quantity):
        try:
            return np.asarray(value.to_value(unit, equivalencies=equivalencies or []))
        except u.UnitConversionError as exc:
            raise u.UnitConversionError(
                f"{name} is in {value.unit}, which cannot be converted to {unit} ({exc}); "
                f"prepare it first (astroclip.prepare_spectra / prepare_images)") from None
    if getattr(value, "unit", None) is not None:  # e.g. an astropy Column with a unit
        return _as_array(u.Quantity(value), name, unit, equivalencies)
    return np.asarray(value)


class _IdSet:
    """Identifiers seen so far, for duplicate checks in O(n log n) overall.

    A sorted array plus a small sorted buffer merged into it when it grows, so
    that appending many small chunks stays cheap and memory is 8 bytes per row.
    """

    def __init__(self):
        self._main = np.empty(0, np.int64)
        self._recent = np.empty(0, np.int64)

    @staticmethod
    def _member(sorted_ids, ids):
        if sorted_ids.size == 0:
            return np.zeros(ids.shape, bool)
        pos = np.minimum(np.searchsorted(sorted_ids, ids), sorted_ids.size - 1)
        return sorted_ids[pos] == ids

    def seen(self, ids):
        """Which of ``ids`` were added before."""
        return self._member(self._main, ids) | self._member(self._recent, ids)

    def add(self, ids):
        self._recent = np.union1d(self._recent, ids)
        if self._recent.size > max(4096, self._main.size // 8):
            self._main = np.union1d(self._main, self._recent)
            self._recent = np.empty(0, np.int64)


class PairedDatasetWriter:
    """Write a paired training-set file chunk by chunk.

    The file is built under a temporary name in the destination directory and
    renamed to ``path`` only when the writer is closed without error, so an
    interrupted build never leaves a half-written file under the final name.

    Parameters
    ----------
    path : str or path-like
        Destination file.
    overwrite : bool, optional
        Replace an existing ``path`` (refused by default).
    label_names : sequence of str, optional
        Catalogue columns stored under ``labels/`` (e.g. ``("Z", "LOG_MSTAR")``);
        every `append` must give exactly these.
    image_size : int, optional
        Side of the stored images (152 by default, `astroclip.inputs.grid.IMAGE_SIZE`).
    chunk_rows : int, optional
        Rows per HDF5 chunk of the spectrum datasets (4: 125 kB chunks, cheap to
        decompress for one random item).
    image_chunk_rows : int, optional
        Rows per HDF5 chunk of the images; 1 (one 277 kB image per chunk) makes
        shuffled, one-item-at-a-time reads cheap.
    compression : {"lzf", "gzip", None}, optional
        HDF5 compression filter of the spectra and catalogue columns ("lzf": fast,
        the default; inverse variances shrink about 50-fold).
    compression_opts : int, optional
        gzip level (1-9) when ``compression="gzip"``.
    image_compression : {None, "lzf", "gzip"}, optional
        Compression filter of the images, off by default: sky-noise-dominated float32
        cutouts do not compress (lzf: 0 %, gzip-1 with shuffle: 7-14 %) while it slows
        writing about tenfold and random reads several-fold
        (``benchmarks/bench_hdf5_write.py``).
    attrs : dict, optional
        Extra root attributes (provenance, e.g. ``{"source": "DESI EDR"}``).

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from astroclip.data.paired import PairedDatasetWriter, read_paired_dataset
    >>> path = os.path.join(tempfile.mkdtemp(), "pairs.h5")
    >>> n = 2
    >>> with PairedDatasetWriter(path, label_names=["Z"], image_size=8) as writer:
    ...     writer.append(targetid=[1, 2], ra=[10.0, 11.0], dec=[0.0, 1.0],
    ...                   flux=np.zeros((n, 7781)), ivar=np.ones((n, 7781)),
    ...                   image=np.zeros((n, 3, 8, 8)), split="train", labels={"Z": [0.1, 0.2]})
    >>> table, arrays = read_paired_dataset(path)
    >>> table["targetid", "Z"].pprint()
    targetid  Z
    -------- ---
           1 0.1
           2 0.2
    >>> arrays["image"].shape
    (2, 3, 8, 8)
    """

    def __init__(self, path, *, overwrite=False, label_names=(), image_size=grid.IMAGE_SIZE,
                 chunk_rows=4, image_chunk_rows=1, compression="lzf", compression_opts=None,
                 image_compression=None, attrs=None):
        self.path = Path(path)
        self.overwrite = bool(overwrite)
        if isinstance(label_names, str):
            label_names = (label_names,)
        self.label_names = tuple(str(name) for name in label_names)
        bad = [name for name in self.label_names if not name or "/" in name]
        if bad or len(set(self.label_names)) != len(self.label_names):
            raise InputError(f"label_names must be distinct non-empty names without '/', "
                             f"got {list(label_names)}")
        self.image_size = int(image_size)
        if self.image_size < 1:
            raise InputError(f"image_size must be positive, got {image_size}")
        self.chunk_rows = int(chunk_rows)
        self.image_chunk_rows = int(image_chunk_rows)
        if self.chunk_rows < 1 or self.image_chunk_rows < 1:
            raise InputError(f"chunk_rows and image_chunk_rows must be >= 1, got {chunk_rows} "
                             f"and {image_chunk_rows}")
        for name, value in (("compression", compression),
                            ("image_compression", image_compression)):
            if value not in ("lzf", "gzip", None):
                raise InputError(f"{name} must be 'lzf', 'gzip' or None, got {value!r}")
        self.compression = compression
        self.image_compression = image_compression
        self.compression_opts = compression_opts
        self.attrs = dict(attrs or {})
        self.n_rows = 0
        self._file = None
        self._tmp = None
        self._label_units = {}
        self._ids = _IdSet()

    # -- context manager -------------------------------------------------
    def __enter__(self):
        self.open()
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False

    def open(self):
        """Create the temporary file and its empty datasets (called by ``with``)."""
        import h5py

        if self._file is not None:
            raise RuntimeError("this writer is already open")
        check_output_path(self.path, overwrite=self.overwrite)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp",
                                   dir=self.path.parent)
        os.close(fd)
        self._tmp = tmp
        s = self.image_size
        image_chunk_bytes = self.image_chunk_rows * 3 * s * s * 4
        # a chunk cache big enough for a couple of image chunks, so that appends not
        # aligned to chunk boundaries are assembled in memory, not re-compressed
        self._file = h5py.File(tmp, "w", rdcc_nbytes=max(2 * image_chunk_bytes + (1 << 20),
                                                         4 << 20), rdcc_nslots=10007)
        f = self._file
        f.attrs["format"] = FORMAT
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["bands"] = ",".join(grid.BANDS)
        f.attrs["flux_unit"] = grid.FLUX_UNIT.to_string()
        f.attrs["image_unit"] = "nanomaggy"
        f.attrs["pixel_scale_arcsec"] = grid.PIXEL_SCALE.to_value(u.arcsec)
        f.attrs["wavelength_start"] = grid.WAVE_MIN
        f.attrs["wavelength_step"] = grid.WAVE_STEP
        for key, value in self.attrs.items():
            f.attrs[key] = value
        c = self.chunk_rows

        def make(name, shape, dtype, chunk, compression=self.compression):
            opts = dict(compression=compression)
            if compression == "gzip" and self.compression_opts is not None:
                opts["compression_opts"] = int(self.compression_opts)
            return f.create_dataset(name, shape=(0,) + shape, maxshape=(None,) + shape,
                                    dtype=dtype, chunks=(chunk,) + shape, **opts)

        make("targetid", (), np.int64, _ROW_CHUNK_1D)
        make("ra", (), np.float64, _ROW_CHUNK_1D).attrs["unit"] = "deg"
        make("dec", (), np.float64, _ROW_CHUNK_1D).attrs["unit"] = "deg"
        make("spectrum/flux", (grid.N_PIXELS,), np.float32, c).attrs["unit"] = \
            grid.FLUX_UNIT.to_string()
        make("spectrum/ivar", (grid.N_PIXELS,), np.float32, c).attrs["unit"] = \
            grid.IVAR_UNIT.to_string()
        make("image", (3, s, s), np.float32, self.image_chunk_rows,
             compression=self.image_compression).attrs["unit"] = "nanomaggy"
        split = make("split", (), np.int8, _ROW_CHUNK_1D)
        split.attrs["split_names"] = ",".join(SPLIT_NAMES)
        f.create_group("labels")
        f.attrs["label_names"] = ",".join(self.label_names)
        for name in self.label_names:
            make(f"labels/{name}", (), np.float64, _ROW_CHUNK_1D)
        return self

    def close(self):
        """Flush the file and move it to its final name."""
        if self._file is None:
            return
        try:
            self._file.attrs["n_rows"] = self.n_rows
            self._file.close()
            self._file = None
            # someone may have created the file meanwhile
            check_output_path(self.path, overwrite=self.overwrite)
            os.replace(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise
        self._tmp = None

    def abort(self):
        """Discard the temporary file (called by ``with`` on an exception)."""
        if self._file is not None:
            with contextlib.suppress(Exception):
                self._file.close()
            self._file = None
        if self._tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.remove(self._tmp)
            self._tmp = None

    def __del__(self):  # pragma: no cover - safety net for writers never closed
        with contextlib.suppress(Exception):
            self.abort()

    # -- appending ---------------------------------------------------------
    def _labels(self, labels, n):
        if labels is None:
            labels = {}
        if isinstance(labels, Table):
            labels = {name: labels[name] for name in labels.colnames}
        given = set(labels)
        missing = [name for name in self.label_names if name not in given]
        extra = sorted(given - set(self.label_names))
        if missing or extra:
            raise InputError(
                f"labels must give exactly the label columns {list(self.label_names)} declared "
                f"in PairedDatasetWriter(label_names=...); missing {missing}, unexpected {extra}")
        out = {}
        for name in self.label_names:
            col = labels[name]
            mask = None
            if isinstance(col, u.Quantity):
                unit, values = col.unit, col.value
            else:
                unit = getattr(col, "unit", None)  # astropy Column
                unit = None if unit is None else u.Unit(unit)
                if np.ma.isMaskedArray(col):
                    mask = np.ma.getmaskarray(col)
                values = np.ma.getdata(col)
            stored = self._label_units.setdefault(name, unit)
            if (stored is None) != (unit is None):
                raise u.UnitsError(f"label {name!r} has unit {unit} but {stored} in an earlier "
                                   "append; give every chunk the same kind of column")
            if unit is not None and unit != stored:
                try:
                    values = (np.asarray(values, dtype=np.float64) * unit).to_value(stored)
                except u.UnitConversionError:
                    raise u.UnitConversionError(
                        f"label {name!r} is in {unit}, not convertible to {stored} used in an "
                        "earlier append") from None
            try:
                values = np.asarray(values, dtype=np.float64).reshape(-1)
            except (TypeError, ValueError):
                raise TypeError(f"label {name!r} must be numeric (stored as float64)") from None
            if mask is not None and np.any(mask):
                values = values.copy()
                values[np.asarray(mask).reshape(-1)] = np.nan  # documented: NaN = missing
            if values.shape != (n,):
                raise InputError(f"label {name!r} has {values.size} values for {n} rows")
            out[name] = values
        return out

    def append(self, *, targetid, ra, dec, flux, ivar, image, split, labels=None):
        """Append a chunk of rows.

        Parameters
        ----------
        targetid : array-like of int, shape (n,)
            Identifiers (DESI TARGETID), stored as int64.
        ra, dec : array-like or `~astropy.units.Quantity`, shape (n,)
            Sky position; plain numbers are degrees; NaN marks an unknown position
            (e.g. rows converted from the paper's file, which has none).
        flux, ivar : array-like or `~astropy.units.Quantity`, shape (n, 7781)
            Spectra on the DESI grid, as returned by `astroclip.prepare_spectra`;
            plain arrays are taken to be in 1e-17 erg/s/cm2/A (and its inverse
            square); ivar must be >= 0 and both finite.
        image : array-like or `~astropy.units.Quantity`, shape (n, 3, S, S)
            g, r, z images in nanomaggies (as returned by `astroclip.prepare_images`).
        split : str, int or array-like
            ``"train"``/``"val"``/``"test"`` or 0/1/2, one value for the chunk or one per row.
        labels : dict or `~astropy.table.Table`, optional
            One column per declared label name; masked entries are stored as NaN
            (which marks a missing label in the file).

        Raises
        ------
        ValueError
            On wrong shapes, non-finite values, negative ivar or bad labels;
            `~astroclip.exceptions.InputError` (a `ValueError`) for a targetid
            given twice (in the chunk or in an earlier append).  Nothing of a
            refused chunk is written.
        DataFileError
            (an `OSError`) The disk (or the file-size limit, ``ulimit -f``) has
            no room for the chunk: checked before writing, so the rows appended
            so far are intact and the writer can go on once there is room (or be
            closed).  A write that fails anyway raises it too; the file may then
            be damaged and is discarded when the writer's ``with`` block ends.
        astropy.units.UnitConversionError
            If a Quantity cannot be converted to the file's unit.
        """
        if self._file is None:
            raise RuntimeError("the writer is not open; use it as `with PairedDatasetWriter(...) "
                               "as writer:` (or call .open())")
        targetid_arr = np.asarray(targetid)
        if targetid_arr.ndim != 1:
            raise InputError(f"targetid must be 1-D (one per row), got shape {targetid_arr.shape}")
        n = targetid_arr.shape[0]
        if n == 0:
            return
        whole_floats = (np.issubdtype(targetid_arr.dtype, np.floating)
                        and np.all(np.isfinite(targetid_arr))
                        and np.all(targetid_arr == np.round(targetid_arr)))
        if not np.issubdtype(targetid_arr.dtype, np.integer) and not whole_floats:
            raise TypeError(f"targetid must be integers, got dtype {targetid_arr.dtype}")
        targetid_arr = targetid_arr.astype(np.int64)
        uniq, counts = np.unique(targetid_arr, return_counts=True)
        if np.any(counts > 1):
            dup = uniq[counts > 1]
            raise InputError(f"targetid values {dup[:5].tolist()} appear more than once in "
                             f"this chunk for {self.path}; every row needs a unique targetid")
        again = self._ids.seen(targetid_arr)
        if np.any(again):
            raise InputError(f"targetid values {targetid_arr[again][:5].tolist()} are already "
                             f"in {self.path} (appended earlier); every row needs a unique "
                             "targetid")

        coords = {}
        for name, value in (("ra", ra), ("dec", dec)):
            arr = _as_array(value, name, u.deg).astype(np.float64).reshape(-1)
            if arr.shape != (n,):
                raise InputError(f"{name} has {arr.size} values for {n} targetids")
            if np.any(np.isinf(arr)):
                raise InputError(f"{name} has infinite values; give positions in degrees "
                                 "(NaN marks an unknown position)")
            coords[name] = arr
        if np.any(np.isnan(coords["ra"]) != np.isnan(coords["dec"])):
            raise InputError("ra and dec must be both known or both NaN (unknown) in each row")
        if np.any(np.abs(coords["dec"]) > 90):
            raise InputError("dec must lie in [-90, 90] degrees; check that ra and dec are not "
                             "swapped and are in degrees")

        flux_arr = _as_array(flux, "flux", grid.FLUX_UNIT,
                             u.spectral_density(u.Quantity(grid.WAVELENGTH, u.AA)))
        ivar_arr = _as_array(ivar, "ivar", grid.IVAR_UNIT)
        for name, arr in (("flux", flux_arr), ("ivar", ivar_arr)):
            if arr.shape != (n, grid.N_PIXELS):
                raise InputError(
                    f"{name} has shape {arr.shape}; expected ({n}, {grid.N_PIXELS}) (one spectrum "
                    "per row on the DESI grid): put spectra on the grid with "
                    "astroclip.prepare_spectra first")
            if not np.all(np.isfinite(arr)):
                raise InputError(f"{name} has non-finite values; mark bad pixels with ivar=0 and "
                                 "flux=0 (astroclip.prepare_spectra does this)")
        if np.any(ivar_arr < 0):
            raise InputError("ivar has negative values; inverse variances must be >= 0")

        image_arr = _as_array(image, "image", grid.NANOMAGGY, grid.NANOMAGGY_EQUIVALENCY)
        s = self.image_size
        if image_arr.shape != (n, 3, s, s):
            raise InputError(
                f"image has shape {image_arr.shape}; expected ({n}, 3, {s}, {s}) (g, r, z "
                f"nanomaggies, {s}x{s} px): use astroclip.prepare_images(..., size={s}), or "
                f"PairedDatasetWriter(image_size=...) for another size")
        if not np.all(np.isfinite(image_arr)):
            raise InputError("image has non-finite pixels; fill them first "
                             "(astroclip.prepare_images fills and counts them)")

        split_arr = split_codes(split)
        if split_arr.ndim == 0:
            split_arr = np.full(n, split_arr, dtype=np.int8)
        if split_arr.shape != (n,):
            raise InputError(f"split has {split_arr.size} values for {n} rows; give one per "
                             "row or a single value")
        label_arr = self._labels(labels, n)

        f = self._file
        start, stop = self.n_rows, self.n_rows + n
        values = {"targetid": targetid_arr, "ra": coords["ra"], "dec": coords["dec"],
                  "spectrum/flux": flux_arr.astype(np.float32, copy=False),
                  "spectrum/ivar": ivar_arr.astype(np.float32, copy=False),
                  "image": image_arr.astype(np.float32, copy=False), "split": split_arr}
        values.update({f"labels/{k}": v for k, v in label_arr.items()})
        # the uncompressed size bounds what this chunk adds; refuse before writing anything
        check_free_space(self.path, sum(v.nbytes for v in values.values()), grows=self._tmp)
        with disk_errors(self.path):
            for name, arr in values.items():
                ds = f[name]
                ds.resize(stop, axis=0)
                ds[start:stop] = arr
        for name, unit in self._label_units.items():
            if unit is not None:
                f[f"labels/{name}"].attrs["unit"] = unit.to_string()
        self._ids.add(targetid_arr)
        self.n_rows = stop


def read_paired_dataset(path, *, split=None, fields=None, rows=None, layout="auto"):
    """Load (part of) a paired file into memory.

    Parameters
    ----------
    path : str or path-like
        A paired file of one of the single-file layouts of
        `astroclip.data.layouts`: written by `PairedDatasetWriter`, or the
        paper's file (``astroclip_desi.1.1.5.h5``, unit inverse variances).
    split : str, int or sequence, optional
        Keep only these splits (``"train"``, ``"val"``, ``"test"`` or 0, 1, 2).
    fields : sequence of str, optional
        Array fields to load among ``"flux"``, ``"ivar"``, ``"image"`` (all by
        default; ``[]`` loads only the table).
    rows : slice or array of int, optional
        Positions to keep within the selected split (e.g. ``slice(0, 1000)``).
    layout : str, optional
        ``"auto"`` (identify the file) or a layout name.

    Returns
    -------
    table : `~astropy.table.Table`
        ``targetid``, ``split`` (int8 code), one column per label and, when the
        file has them, ``ra``, ``dec`` (deg); ``meta`` holds the file attributes.
    arrays : dict of `numpy.ndarray`
        ``"flux"``, ``"ivar"`` (float32 (n, 7781)) and ``"image"`` (float32 (n, 3, S, S)),
        row-aligned with ``table``.

    Raises
    ------
    FileNotFoundError, OSError
        Missing, truncated or corrupt file.
    InputError
        A file of no known layout, missing required fields, unknown field names.

    Examples
    --------
    >>> from astroclip.data.paired import read_paired_dataset
    >>> table, arrays = read_paired_dataset("train.h5", split="test")  # doctest: +SKIP
    """
    if fields is None:
        fields = tuple(ARRAY_FIELDS)
    elif isinstance(fields, str):
        fields = (fields,)
    names = []
    for field in fields:
        key = {"spectrum/flux": "flux", "spectrum/ivar": "ivar"}.get(field, field)
        if key not in ARRAY_FIELDS:
            raise InputError(f"unknown field {field!r}; choose among {list(ARRAY_FIELDS)}")
        names.append(key)
    reader = open_layout(path, layout=layout)
    with reader.open() as files:
        index = np.arange(reader.n)
        if split is not None:
            codes = split_codes(split if not isinstance(split, str) else [split]).reshape(-1)
            index = index[np.isin(reader.split_codes(files), codes)]
        if rows is not None:
            index = np.atleast_1d(index[rows] if isinstance(rows, slice)
                                  else index[np.asarray(rows)])
        table = reader.read_table(files, index)
        table.meta.update(reader.meta)
        table.meta["split_names"] = list(SPLIT_NAMES)
        arrays = reader.read_rows(files, index, names)
    return table, arrays
