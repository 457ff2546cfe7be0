"""DESI coadd files -> spectra on the DESI grid, and the join with redshift catalogues.

A DESI coadd FITS file (``coadd-*.fits``) holds, for each fibre, the spectra of
the three spectrograph arms B, R, Z (``{B,R,Z}_WAVELENGTH``, ``_FLUX``,
``_IVAR``, ``_MASK`` HDUs) and a ``FIBERMAP`` table of identifiers and
photometry.  `read_desi_coadd` reads them with `astropy.io.fits` into one
`~specutils.SpectrumList` of arms per file and puts them on the 7781-pixel grid
with `astroclip.inputs.spectra.prepare_spectra`, which combines the arms by
inverse-variance weighting where they overlap (as it does for the SpectrumList
that ``SpectrumList.read(path, format="DESI coadd")`` returns), and flags sky
fibres.  `join_redshifts` adds the redshift-fitter
columns (``Z``, ``ZWARN``, ``SPECTYPE``) by ``TARGETID``.

A data release is read file by file: `desi_coadd_paths` lists the coadd files
of directories or glob patterns (sorted, so the order is the same on every
machine and every shard of a job array), and `iter_desi_coadds` yields the
spectra of one file at a time (each file read once, memory bounded by the
largest file), which is what `astroclip.embed_catalog` does with a directory
of coadds.  FITS data are big-endian: every array read is converted to native
byte order (a copy, never a view of the file's bytes).
"""

import glob
import os
import warnings

import numpy as np
import astropy.units as u
from astropy.io import fits
from astropy.nddata import InverseVariance
from astropy.io.fits.verify import VerifyError
from astropy.table import MaskedColumn, Table
from astropy.utils.exceptions import AstropyUserWarning

from . import grid
from ..exceptions import DataFileError, InputError
from .spectra import PreparedSpectra, prepare_spectra

__all__ = ["read_desi_coadd", "iter_desi_coadds", "desi_coadd_paths", "join_redshifts",
           "DESI_COADD_HDUS", "DESI_COADD_PATTERN"]

#: HDUs a DESI coadd file must have for `read_desi_coadd`.
DESI_COADD_HDUS = ("FIBERMAP",) + tuple(f"{arm}_{kind}" for arm in grid.DESI_ARMS
                                        for kind in ("WAVELENGTH", "FLUX", "IVAR", "MASK"))

#: File names that `desi_coadd_paths` picks up in a directory (searched recursively).
DESI_COADD_PATTERN = "coadd-*.fits*"


def _native(data, dtype=None):
    """A native-byte-order copy of FITS data (big-endian on disk); never a view of the file."""
    data = np.asarray(data)
    if dtype is None:
        dtype = data.dtype.newbyteorder("=")
    return np.array(data, dtype=dtype, copy=True)


# The DESI data model's units, used only when a file's header has no BUNIT.
_DATA_MODEL_UNITS = {"WAVELENGTH": u.AA, "FLUX": grid.FLUX_UNIT}


def _header_unit(header, kind, path, hdu_name):
    bunit = header.get("BUNIT")
    if bunit is None:
        return _DATA_MODEL_UNITS[kind]
    try:
        return u.Unit(bunit, format="fits")
    except ValueError:
        try:
            return u.Unit(bunit)
        except ValueError:
            raise InputError(f"{path}: HDU {hdu_name} has an unreadable BUNIT {bunit!r}; "
                             "fix the header (DESI writes '10**-17 erg/(s cm2 Angstrom)' and "
                             "'Angstrom')") from None


def _read_one(path, *, checksum):
    """Read the arrays of one coadd file, with clear errors for bad files."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"DESI coadd file not found: {path}; check the path")
    size = os.path.getsize(path)
    with warnings.catch_warnings():
        # truncation and checksum problems are warnings in astropy: make them errors
        warnings.simplefilter("error", AstropyUserWarning)
        try:
            with fits.open(path, memmap=False) as hdul:
                names = [h.name for h in hdul]
                missing = [n for n in DESI_COADD_HDUS if n not in names]
                if missing:
                    raise InputError(
                        f"{path} ({size} bytes) is not a complete DESI coadd file: HDUs "
                        f"{', '.join(missing)} are missing (found {', '.join(names)}); the "
                        "file may be truncated (download it again) or be another kind of "
                        "file (a DESI coadd has FIBERMAP and B/R/Z _WAVELENGTH, _FLUX, "
                        "_IVAR, _MASK)")
                if checksum:
                    # the DATASUM of the HDUs used (fits.open(checksum=True) would also
                    # check all the others, several times slower)
                    bad = [n for n in DESI_COADD_HDUS if hdul[n].verify_datasum() == 0]
                    if bad:
                        raise DataFileError(f"checksum (DATASUM) mismatch in HDU(s) "
                                            f"{', '.join(bad)}")
                fibermap = Table(hdul["FIBERMAP"].data)
                for name in fibermap.colnames:
                    col = fibermap[name]
                    if col.dtype.byteorder not in ("=", "|"):
                        fibermap[name] = col.astype(col.dtype.newbyteorder("="))
                arms = {}
                for arm in grid.DESI_ARMS:
                    wave_hdu = hdul[f"{arm}_WAVELENGTH"]
                    flux_hdu = hdul[f"{arm}_FLUX"]
                    arms[arm] = dict(
                        wave=_native(wave_hdu.data, np.float64),
                        wave_unit=_header_unit(wave_hdu.header, "WAVELENGTH", path,
                                               wave_hdu.name),
                        flux=None if flux_hdu.data is None else _native(flux_hdu.data),
                        flux_unit=_header_unit(flux_hdu.header, "FLUX", path, flux_hdu.name),
                        ivar=(None if hdul[f"{arm}_IVAR"].data is None
                              else _native(hdul[f"{arm}_IVAR"].data)),
                        mask=(None if hdul[f"{arm}_MASK"].data is None
                              else _native(hdul[f"{arm}_MASK"].data)),
                    )
        except (OSError, AstropyUserWarning, TypeError, VerifyError) as err:
            raise DataFileError(f"cannot read DESI coadd file {path} ({size} bytes): {err}. The "
                                "file is truncated or corrupt: download it again") from err
    n_fib = len(fibermap)
    for arm, d in arms.items():
        shape = (n_fib, d["wave"].size)
        for key in ("flux", "ivar", "mask"):
            if d[key] is None or d[key].shape != shape:
                got = None if d[key] is None else d[key].shape
                raise InputError(f"{path}: {arm}_{key.upper()} has shape {got}, expected "
                                 f"{shape} (fibres x {arm} pixels); the file is corrupt or "
                                 "not a DESI coadd")
    if "TARGETID" not in fibermap.colnames:
        raise InputError(f"{path}: FIBERMAP has no TARGETID column; not a DESI coadd file")
    if "OBJTYPE" not in fibermap.colnames:
        raise InputError(f"{path}: FIBERMAP has no OBJTYPE column, so sky fibres cannot be "
                         "flagged; not a DESI coadd file")
    return fibermap, arms


def read_desi_coadd(paths, *, targetids=None, missing="raise", columns=None,
                    min_coverage=0.5, on_invalid="flag", checksum=True, progress=None):
    """Read DESI coadd FITS files onto the DESI grid, arms combined, with the FIBERMAP.

    Parameters
    ----------
    paths : str, path-like, or list of them
        One or many ``coadd-*.fits`` files, directories or glob patterns (see
        `desi_coadd_paths`); their spectra are stacked in order.  For a whole
        release, stream the files with `iter_desi_coadds` instead.
    targetids : array-like of int, optional
        Keep only the fibres with these ``TARGETID`` (all fibres by default),
        in file order.
    missing : {"raise", "ignore"}, optional
        What to do when some ``targetids`` are in none of the files.
    columns : list of str, optional
        FIBERMAP columns to keep (all by default; ``TARGETID`` and ``OBJTYPE``
        are always kept).
    min_coverage, on_invalid, progress
        As in `~astroclip.inputs.spectra.prepare_spectra`; here ``on_invalid``
        defaults to ``"flag"`` because coadds routinely hold fibres without data
        (unassigned or broken fibres), which are kept with ``VALID = False``.
    checksum : bool, optional
        Verify the ``DATASUM`` checksums of the HDUs read (catches corrupt data).

    Returns
    -------
    `~astroclip.inputs.spectra.PreparedSpectra`
        ``flux`` and ``ivar`` float32 ``(N, 7781)``: each arm resampled to the
        grid (pixels with ``MASK != 0`` or ``IVAR == 0`` carry no weight) and the
        arms combined by inverse-variance weighting where they overlap.
        ``meta`` holds the FIBERMAP columns (``TARGETID``, ``TARGET_RA``,
        ``TARGET_DEC``, ``FLUX_G/R/Z``, ``OBJTYPE``, ...), ``FILENAME`` and
        ``FILE_ROW``, ``IS_SKY`` (``OBJTYPE == "SKY"``), ``IS_TARGET`` (a science
        target: ``OBJTYPE == "TGT"`` and ``TARGETID > 0``; sky and unassigned
        fibres are never targets, hence never galaxies) and the quality columns
        of `~astroclip.inputs.spectra.prepare_spectra` (``COVERAGE``,
        ``N_MASKED``, ``VALID``, ``PROBLEM``).

    Raises
    ------
    FileNotFoundError
        A path does not exist.
    OSError
        A file is truncated or corrupt (unreadable, bad checksum).
    ValueError
        A file is not a DESI coadd (missing HDUs or columns, inconsistent shapes),
        or requested ``targetids`` are missing and ``missing="raise"``.

    Examples
    --------
    >>> import os, specutils
    >>> from astroclip.inputs.desi import read_desi_coadd
    >>> path = os.path.join(os.path.dirname(specutils.__file__), "io", "default_loaders",
    ...                     "tests", "desi_test_data", "coadd-sv3-dark-26065.fits")
    >>> spectra = read_desi_coadd(path)  # doctest: +IGNORE_WARNINGS
    >>> spectra.flux.shape
    (5, 7781)
    >>> print(spectra.meta["TARGETID", "OBJTYPE", "IS_SKY", "IS_TARGET", "VALID"])
         TARGETID      OBJTYPE IS_SKY IS_TARGET VALID
    ------------------ ------- ------ --------- -----
              -2713437          False     False False
              -2713415          False     False False
     39627866878511337     TGT  False      True  True
    616088619186127404     SKY   True     False False
     39627866878514741     TGT  False      True  True
    """
    if missing not in ("raise", "ignore"):
        raise InputError(f"missing must be 'raise' or 'ignore', not {missing!r}")
    if isinstance(paths, (str, bytes, os.PathLike)):
        paths = [paths]
    paths = list(paths)
    if not paths:
        raise InputError("no DESI coadd file given (empty list of paths)")
    paths = desi_coadd_paths(paths)  # directories and glob patterns -> files
    wanted = None if targetids is None else np.unique(np.asarray(targetids, dtype=np.int64))
    found = set()
    groups = []
    for path in paths:
        fibermap, arms = _read_one(path, checksum=checksum)
        tid = np.asarray(fibermap["TARGETID"], dtype=np.int64)
        rows = np.arange(len(fibermap)) if wanted is None else np.flatnonzero(
            np.isin(tid, wanted))
        if wanted is not None:
            found.update(tid[rows].tolist())
        if rows.size == 0:
            continue
        name = os.path.basename(os.fspath(path))
        meta = fibermap[rows]
        if columns is not None:
            keep = ["TARGETID", "OBJTYPE"] + [c for c in columns
                                              if c not in ("TARGETID", "OBJTYPE")]
            absent = [c for c in keep if c not in meta.colnames]
            if absent:
                raise InputError(f"{path}: FIBERMAP has no column(s) {', '.join(absent)}")
            meta = meta[keep]
        meta = Table(meta, copy=True)
        meta.meta.clear()
        objtype = np.char.strip(np.asarray(meta["OBJTYPE"]).astype(str))
        meta["FILENAME"] = np.full(len(meta), name)
        meta["FILE_ROW"] = rows.astype(np.int64)
        meta["IS_SKY"] = objtype == "SKY"
        meta["IS_TARGET"] = (objtype == "TGT") & (np.asarray(meta["TARGETID"]) > 0)
        groups.append(_arms(arms, rows, meta, name))
    if wanted is not None:
        absent = np.setdiff1d(wanted, np.fromiter(found, dtype=np.int64, count=len(found)))
        if absent.size and missing == "raise":
            shown = ", ".join(str(t) for t in absent[:10])
            raise InputError(f"{absent.size} of {wanted.size} requested TARGETIDs are in none "
                             f"of the {len(paths)} file(s) (e.g. {shown}); check the files, "
                             "or pass missing='ignore' to read those that are there")
    if not groups:
        raise InputError("none of the requested TARGETIDs is in the given file(s)")
    prepared = prepare_spectra(groups, min_coverage=min_coverage, on_invalid=on_invalid,
                               progress=progress)
    del prepared.meta["ITEM"], prepared.meta["ITEM_ROW"]  # FILENAME and FILE_ROW say it
    return prepared


def desi_coadd_paths(sources, *, pattern=DESI_COADD_PATTERN):
    """The DESI coadd files of files, directories and glob patterns, in a fixed order.

    Parameters
    ----------
    sources : str, path-like, or list of them
        Coadd files (kept as given, in order), directories (every file matching
        ``pattern`` below them, e.g. a healpix tree
        ``healpix/main/dark/*/*/coadd-main-dark-*.fits``) or glob patterns
        (``"dr1/healpix/**/coadd-*.fits"``, recursive).  Files found in a
        directory or by a pattern are sorted by path, so every process of a run
        (every shard of a job array) sees the same order.
    pattern : str, optional
        File names picked up in directories.

    Returns
    -------
    list of `pathlib.Path`

    Raises
    ------
    FileNotFoundError
        A file that does not exist, or a directory or pattern that matches nothing.

    Examples
    --------
    >>> import os, specutils
    >>> from astroclip.inputs.desi import desi_coadd_paths
    >>> folder = os.path.join(os.path.dirname(specutils.__file__), "io", "default_loaders",
    ...                       "tests", "desi_test_data")
    >>> [p.name for p in desi_coadd_paths(folder)]
    ['coadd-5-169-thru20210419.fits', 'coadd-sv3-dark-26065.fits']
    """
    from pathlib import Path

    if isinstance(sources, (str, bytes, os.PathLike)):
        sources = [sources]
    out = []
    for source in sources:
        text = os.fsdecode(os.fspath(source))
        if os.path.isdir(text):
            found = sorted(Path(text).rglob(pattern))
            where = f"directory {text} holds no file matching {pattern!r}"
        elif glob.has_magic(text) and not os.path.exists(text):
            found = sorted(Path(p) for p in glob.glob(text, recursive=True))
            where = f"pattern {text!r} matches no file"
        else:
            if not os.path.exists(text):
                raise FileNotFoundError(f"DESI coadd file not found: {text}; check the path")
            out.append(Path(text))
            continue
        found = [p for p in found if p.is_file()]
        if not found:
            raise FileNotFoundError(f"the {where}; check the path (DESI coadd files are "
                                    "named coadd-*.fits)")
        out.extend(found)
    if not out:
        raise InputError("no DESI coadd file given (empty list of paths)")
    return out


def iter_desi_coadds(sources, *, pattern=DESI_COADD_PATTERN, progress=None, **read_kwargs):
    """Yield the spectra of many DESI coadd files, one file at a time.

    Each file is opened and read once, converted to native byte order and put
    on the DESI grid (`read_desi_coadd`); only one file's arrays are held at a
    time, so a whole data release streams through bounded memory.

    Parameters
    ----------
    sources : str, path-like, or list of them
        Files, directories or glob patterns (see `desi_coadd_paths`).
    pattern : str, optional
        File names picked up in directories.
    progress : bool, optional
        A progress bar over the files.
    **read_kwargs
        Passed to `read_desi_coadd` (``targetids``, ``columns``,
        ``min_coverage``, ``on_invalid``, ``checksum``); with ``targetids``,
        ``missing`` is ``"ignore"`` per file (a file may hold none of them).

    Yields
    ------
    path : `pathlib.Path`
        The file.
    spectra : `~astroclip.inputs.spectra.PreparedSpectra`
        Its spectra (files without any selected fibre are skipped).

    Examples
    --------
    >>> import os, specutils
    >>> from astroclip.inputs.desi import iter_desi_coadds
    >>> folder = os.path.join(os.path.dirname(specutils.__file__), "io", "default_loaders",
    ...                       "tests", "desi_test_data")
    >>> for path, spectra in iter_desi_coadds(folder):  # doctest: +IGNORE_WARNINGS
    ...     print(path.name, spectra.flux.shape)
    coadd-5-169-thru20210419.fits (5, 7781)
    coadd-sv3-dark-26065.fits (5, 7781)
    """
    from .._progress import progress_bar

    paths = desi_coadd_paths(sources, pattern=pattern)
    if "targetids" in read_kwargs:
        read_kwargs.setdefault("missing", "ignore")
    bar = progress_bar(total=len(paths), desc="reading DESI coadds", unit="file",
                       progress=progress)
    for path in paths:
        try:
            spectra = read_desi_coadd(path, progress=False, **read_kwargs)
        except InputError as exc:
            if "targetids" in read_kwargs and "none of the requested" in str(exc):
                bar.update(1)
                continue
            raise
        bar.update(1)
        yield path, spectra
    bar.close()


def _arms(arms, rows, meta, name):
    """The arms of the fibres ``rows`` of one file as a `~specutils.SpectrumList`."""
    from specutils import Spectrum, SpectrumList

    out = SpectrumList()
    for k, (arm, d) in enumerate(arms.items()):
        out.append(Spectrum(flux=u.Quantity(d["flux"][rows], d["flux_unit"]),
                            spectral_axis=u.Quantity(d["wave"], d["wave_unit"]),
                            uncertainty=InverseVariance(d["ivar"][rows],
                                                        unit=d["flux_unit"] ** -2),
                            mask=d["mask"][rows] != 0,
                            meta={"band": arm, "filename": name,
                                  **({"fibermap": meta} if k == 0 else {})}))
    return out


def _read_redshift_catalog(path):
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"redshift catalogue not found: {path}")
    try:
        with fits.open(path, memmap=False) as hdul:
            names = [h.name for h in hdul]
            for name in ("REDSHIFTS", "ZCATALOG", "ZBEST"):
                if name in names:
                    return Table(hdul[name].data)
            for hdu in hdul:
                if isinstance(hdu, fits.BinTableHDU):
                    return Table(hdu.data)
    except OSError as err:
        raise DataFileError(f"cannot read redshift catalogue {path}: {err}; the file is "
                            "truncated or corrupt") from err
    raise InputError(f"{path} has no table HDU (expected REDSHIFTS or ZCATALOG)")


def join_redshifts(data, redshift_catalog, *, columns=("Z", "ZWARN", "SPECTYPE"),
                   key="TARGETID"):
    """Add redshift-catalogue columns to spectra or a table, matched by TARGETID.

    Every row of ``data`` is kept, in order.  Rows without a match get masked
    values and ``HAS_REDSHIFT = False``; their number is stored in
    ``meta["N_UNMATCHED"]`` of the result and reported in a warning.

    Parameters
    ----------
    data : `~astroclip.inputs.spectra.PreparedSpectra` or `~astropy.table.Table`
        Must have a ``TARGETID`` column (e.g. from `read_desi_coadd`).
    redshift_catalog : `~astropy.table.Table` or path
        A redrock ``redrock-*.fits`` (``REDSHIFTS`` HDU) or a ``zall``/``zpix``
        catalogue (``ZCATALOG``), or any table with ``TARGETID`` and ``columns``.
        When a TARGETID appears more than once, the rows with ``ZCAT_PRIMARY``
        are used if that column exists; otherwise duplicates are an error.
    columns : sequence of str, optional
        Catalogue columns to add.
    key : str, optional
        The identifier column of both tables.

    Returns
    -------
    same type as ``data``
        With the ``columns``, ``HAS_REDSHIFT`` and, when ``data`` has
        ``IS_TARGET``, ``IS_GALAXY`` (a matched science target with
        ``SPECTYPE == "GALAXY"``; sky fibres are never galaxies).

    Examples
    --------
    >>> from astropy.table import Table
    >>> from astroclip.inputs.desi import join_redshifts
    >>> fibres = Table({"TARGETID": [10, 11, 12]})
    >>> zcat = Table({"TARGETID": [12, 10], "Z": [0.3, 0.1], "ZWARN": [0, 4],
    ...               "SPECTYPE": ["GALAXY", "QSO"]})
    >>> joined = join_redshifts(fibres, zcat)  # doctest: +IGNORE_WARNINGS
    >>> print(joined)
    TARGETID  Z  ZWARN SPECTYPE HAS_REDSHIFT
    -------- --- ----- -------- ------------
          10 0.1     4      QSO         True
          11  --    --       --        False
          12 0.3     0   GALAXY         True
    >>> joined.meta["N_UNMATCHED"]
    1
    """
    prepared = data if isinstance(data, PreparedSpectra) else None
    table = data.meta if prepared is not None else data
    if not isinstance(table, Table):
        raise TypeError("data must be a PreparedSpectra or an astropy Table, not "
                        f"{type(data).__name__}")
    if isinstance(redshift_catalog, Table):
        zcat = redshift_catalog
    else:
        zcat = _read_redshift_catalog(redshift_catalog)
    columns = list(columns)
    if key not in table.colnames:
        raise KeyError(f"the spectra/table have no {key!r} column (columns: "
                       f"{', '.join(table.colnames[:20])}); add one (e.g. meta={{'{key}': "
                       "...}} in prepare_spectra) or pass key=")
    if key not in zcat.colnames:
        raise KeyError(f"the redshift catalogue has no {key!r} column (columns: "
                       f"{', '.join(zcat.colnames[:20])}); pass key= to name its identifier")
    absent = [c for c in columns if c not in zcat.colnames]
    if absent:
        raise KeyError(f"the redshift catalogue has no column(s) {', '.join(absent)} "
                       f"(columns: {', '.join(zcat.colnames[:20])}); pass columns=")
    clash = [c for c in columns + ["HAS_REDSHIFT"] if c in table.colnames]
    if clash:
        raise InputError(f"the table already has column(s) {', '.join(clash)}; remove or "
                         "rename them before joining")
    cat_ids = np.asarray(zcat[key], dtype=np.int64)
    if "ZCAT_PRIMARY" in zcat.colnames and np.unique(cat_ids).size != cat_ids.size:
        primary = np.asarray(zcat["ZCAT_PRIMARY"], dtype=bool)
        zcat, cat_ids = zcat[primary], cat_ids[primary]
    uniq, counts = np.unique(cat_ids, return_counts=True)
    if np.any(counts > 1):
        dup = uniq[counts > 1]
        raise InputError(f"the redshift catalogue has {dup.size} {key}s appearing more than "
                         f"once (e.g. {', '.join(str(d) for d in dup[:5])}); keep one row per "
                         f"{key} (e.g. the ZCAT_PRIMARY rows) before joining")
    order = np.argsort(cat_ids)
    sorted_ids = cat_ids[order]
    ids = np.asarray(table[key], dtype=np.int64)
    pos = np.clip(np.searchsorted(sorted_ids, ids), 0, max(sorted_ids.size - 1, 0))
    matched = (sorted_ids.size > 0) & (sorted_ids[pos] == ids) if sorted_ids.size else \
        np.zeros(ids.size, bool)
    source = order[pos] if sorted_ids.size else np.zeros(ids.size, np.intp)
    result = table.copy(copy_data=True)
    for name in columns:
        values = np.asarray(zcat[name])
        picked = values[source] if values.size else np.zeros(ids.size, values.dtype)
        result[name] = MaskedColumn(picked, mask=~matched, unit=zcat[name].unit,
                                    description=getattr(zcat[name], "description", None))
    result["HAS_REDSHIFT"] = matched
    if "IS_TARGET" in result.colnames and "SPECTYPE" in columns:
        spectype = np.char.strip(np.asarray(result["SPECTYPE"].filled("")).astype(str))
        result["IS_GALAXY"] = (np.asarray(result["IS_TARGET"], dtype=bool) & matched
                               & (spectype == "GALAXY"))
    n_unmatched = int((~matched).sum())
    result.meta["N_UNMATCHED"] = n_unmatched
    if n_unmatched:
        warnings.warn(f"{n_unmatched} of {len(result)} rows have no {key} match in the "
                      f"redshift catalogue; they are kept with masked {', '.join(columns)} "
                      "and HAS_REDSHIFT = False", AstropyUserWarning, stacklevel=2)
    if prepared is not None:
        return PreparedSpectra(prepared.flux, prepared.ivar, result)
    return result
