"""Spectra in any units -> flux and inverse variance on the DESI grid.

The models read spectra as float32 flux in ``1e-17 erg s^-1 cm^-2 Angstrom^-1``
on the DESI coadd grid (3600-9824 Angstrom in vacuum, 0.8 Angstrom, 7781
pixels, `astroclip.inputs.grid`) with an inverse variance of the same shape,
``ivar = 0`` meaning "no information" (and then ``flux = 0``).

`prepare_spectra` is the one entry point: it takes `specutils.Spectrum`
objects (1-D or 2-D flux), lists of them, the `~specutils.SpectrumList` of the
three arms of a DESI coadd (combined by inverse-variance weighting where they
overlap), astropy Quantities or plain numpy arrays with explicit units, converts
the spectral axis with ``u.spectral()`` and the flux with
``u.spectral_density`` at each pixel's wavelength, turns any astropy uncertainty
into an inverse variance, and resamples onto the grid with
`resample_flux_conserving`, a vectorised flux-conserving resampler (exact pixel
overlaps, one sparse matrix per input grid applied to the whole batch).
"""

from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import astropy.units as u
from astropy.nddata import (NDUncertainty, StdDevUncertainty, VarianceUncertainty,
                            InverseVariance)
from astropy.table import Table

from . import grid
from .._arrays import split_masked
from .._progress import progress_bar
from ..exceptions import InputError

__all__ = ["PreparedSpectra", "prepare_spectra", "resample_flux_conserving",
           "overlap_matrix", "edges_from_centres"]

#: Rows processed at a time (the batch is transposed chunk by chunk so that the
#: sparse products run over contiguous memory; 128-256 fits in cache).
_CHUNK = 64
#: Overlaps shorter than this fraction of the output pixel are rounding noise.
_OVERLAP_RTOL = 1e-8
#: Cache of overlap matrices, one per (input edges, output edges) pair.
_MATRIX_CACHE = OrderedDict()
_MATRIX_CACHE_SIZE = 32


# --------------------------------------------------------------------------------------
# The result
# --------------------------------------------------------------------------------------

@dataclass
class PreparedSpectra:
    """Spectra on the DESI grid, ready for the models.

    Attributes
    ----------
    flux : `numpy.ndarray`
        float32 ``(N, 7781)`` flux in `astroclip.inputs.grid.FLUX_UNIT`
        (1e-17 erg s^-1 cm^-2 Angstrom^-1) on `astroclip.inputs.grid.WAVELENGTH`.
    ivar : `numpy.ndarray`
        float32 ``(N, 7781)`` inverse variance in `astroclip.inputs.grid.IVAR_UNIT`;
        0 means no information (and the flux there is 0).
    meta : `~astropy.table.Table`
        One row per spectrum, in the same order: ``INDEX``, identifiers
        (``TARGETID`` when known), ``COVERAGE`` (fraction of grid pixels with
        ``ivar > 0``), ``N_MASKED`` (input pixels on the grid that were masked,
        non-finite or had zero inverse variance), ``IVAR_KNOWN`` (False when the
        input had no uncertainty), ``VALID`` and ``PROBLEM``, plus any columns
        given by the caller or read from the file.
    """

    flux: np.ndarray
    ivar: np.ndarray
    meta: Table = field(default_factory=Table)

    def __post_init__(self):
        if self.flux.shape != self.ivar.shape or self.flux.ndim != 2:
            raise InputError(f"flux {self.flux.shape} and ivar {self.ivar.shape} must both "
                             "have shape (N, 7781)")
        if len(self.meta) != len(self.flux) and len(self.meta.colnames) > 0:
            raise InputError(f"meta has {len(self.meta)} rows for {len(self.flux)} spectra")

    @property
    def wavelength(self):
        """The pixel centres of the DESI grid, a `~astropy.units.Quantity` in Angstrom."""
        return grid.wavelength_grid()

    def __len__(self):
        return len(self.flux)

    def __getitem__(self, item):
        """Select rows (an integer, slice, integer array or boolean mask)."""
        if isinstance(item, (int, np.integer)):
            item = [item]
        meta = self.meta[item] if len(self.meta.colnames) else Table()
        return PreparedSpectra(self.flux[item], self.ivar[item], meta)

    def to_spectrum(self):
        """The spectra as one `specutils.Spectrum` with a 2-D flux.

        Returns
        -------
        `specutils.Spectrum`
            Flux ``(N, 7781)`` with an `~astropy.nddata.InverseVariance`
            uncertainty and ``mask = ivar == 0``; ``meta["table"]`` holds `meta`.
        """
        from specutils import Spectrum

        return Spectrum(flux=u.Quantity(self.flux, grid.FLUX_UNIT),
                        spectral_axis=self.wavelength,
                        uncertainty=InverseVariance(self.ivar, unit=grid.IVAR_UNIT),
                        mask=self.ivar == 0, meta={"table": self.meta})


# --------------------------------------------------------------------------------------
# Flux-conserving resampling
# --------------------------------------------------------------------------------------

def edges_from_centres(centres):
    """Pixel edges from pixel centres: midpoints, the outer two extrapolated.

    The convention of `specutils.SpectralAxis.bin_edges`.

    Parameters
    ----------
    centres : array-like or `~astropy.units.Quantity`
        ``n >= 2`` strictly monotonic pixel centres.

    Returns
    -------
    `numpy.ndarray` or `~astropy.units.Quantity`
        ``n + 1`` edges, in the unit of ``centres``.

    Examples
    --------
    >>> from astroclip.inputs.spectra import edges_from_centres
    >>> edges_from_centres([1.0, 2.0, 4.0])
    array([0.5, 1.5, 3. , 5. ])
    """
    unit = getattr(centres, "unit", None)
    c = np.asarray(getattr(centres, "value", centres), dtype=np.float64)
    if c.ndim != 1 or c.size < 2:
        raise InputError("pixel edges need at least 2 pixel centres on a 1-D axis; "
                         "give the pixel edges explicitly for a single pixel")
    edges = np.empty(c.size + 1)
    edges[1:-1] = 0.5 * (c[1:] + c[:-1])
    edges[0] = c[0] - 0.5 * (c[1] - c[0])
    edges[-1] = c[-1] + 0.5 * (c[-1] - c[-2])
    return edges if unit is None else u.Quantity(edges, unit)


def overlap_matrix(in_edges, out_edges=None):
    """Exact overlaps between input and output pixels, as a sparse matrix.

    Element ``(i, j)`` is the length of the intersection of input pixel ``j``
    with output pixel ``i``.  Built with numpy from the merged list of edges
    (no loop); cached per pair of grids.

    Parameters
    ----------
    in_edges : array-like
        ``n_in + 1`` strictly increasing input pixel edges.
    out_edges : array-like, optional
        ``n_out + 1`` strictly increasing output pixel edges, in the same unit;
        the DESI grid edges in Angstrom by default.

    Returns
    -------
    `scipy.sparse.csr_matrix`
        float64 ``(n_out, n_in)`` matrix of overlap lengths.

    Examples
    --------
    >>> import numpy as np
    >>> from astroclip.inputs.spectra import overlap_matrix
    >>> overlap_matrix(np.array([0.0, 1.0, 2.0]), np.array([0.5, 1.5])).toarray()
    array([[0.5, 0.5]])
    """
    a = np.asarray(in_edges, dtype=np.float64)
    b = grid.WAVELENGTH_EDGES if out_edges is None else np.asarray(out_edges, dtype=np.float64)
    lo, hi = max(a[0], b[0]), min(a[-1], b[-1])
    shape = (b.size - 1, a.size - 1)
    if not hi > lo:
        return sp.csr_matrix(shape)
    cuts = np.union1d(a[(a > lo) & (a < hi)], b[(b > lo) & (b < hi)])
    cuts = np.concatenate([[lo], cuts, [hi]])
    length = np.diff(cuts)
    mid = 0.5 * (cuts[1:] + cuts[:-1])
    j = np.searchsorted(a, mid, side="right") - 1
    i = np.searchsorted(b, mid, side="right") - 1
    keep = length > _OVERLAP_RTOL * np.diff(b)[i]
    return sp.csr_matrix((length[keep], (i[keep], j[keep])), shape=shape)


class _Operator:
    """The overlap matrix of one input grid restricted to the pixels that overlap."""

    def __init__(self, in_edges, out_edges):
        matrix = overlap_matrix(in_edges, out_edges)
        rows = np.flatnonzero(np.diff(matrix.indptr))
        cols = np.unique(matrix.indices)
        self.n_out = matrix.shape[0]
        self.out_width = np.diff(out_edges)
        if rows.size == 0:
            self.rows = slice(0, 0)
            self.cols = slice(0, 0)
            self.coverage = 0.0
            self.row_cover = np.zeros(self.n_out)
            return
        self.rows = slice(rows[0], rows[-1] + 1)
        self.cols = slice(cols[0], cols[-1] + 1)
        sub = matrix[self.rows, self.cols].tocsr()
        sub.sort_indices()
        self.p32 = sub.astype(np.float32)
        self.p2_32 = sub.multiply(sub).tocsr().astype(np.float32)
        #: fraction of each output pixel covered by the input range
        self.row_cover = np.asarray(matrix.sum(axis=1)).ravel() / self.out_width
        self.coverage = float(np.mean(np.minimum(self.row_cover, 1.0)))


def _operator(in_edges, out_edges):
    key = (in_edges.tobytes(), out_edges.tobytes())
    op = _MATRIX_CACHE.get(key)
    if op is None:
        op = _Operator(in_edges, out_edges)
        _MATRIX_CACHE[key] = op
        while len(_MATRIX_CACHE) > _MATRIX_CACHE_SIZE:
            _MATRIX_CACHE.popitem(last=False)
    else:
        _MATRIX_CACHE.move_to_end(key)
    return op


class _Workspace:
    """Scratch arrays reused from chunk to chunk (one per thread).

    Allocating and freeing several MB per chunk makes the C allocator hand the
    memory back to the system and fault it in again, which cost more than the
    arithmetic; named buffers are kept and handed out as contiguous views.
    """

    def __init__(self):
        self._flat = {}

    def get(self, name, shape, dtype=np.float32):
        size = int(np.prod(shape))
        flat = self._flat.get(name)
        if flat is None or flat.dtype != dtype or flat.size < size:
            flat = self._flat[name] = np.empty(size, dtype)
        return flat[:size].reshape(shape)


try:  # the kernel behind ``csr_matrix @ dense``, called with our own output array
    from scipy.sparse._sparsetools import csr_matvecs as _csr_matvecs
except ImportError:  # pragma: no cover - other scipy layouts
    _csr_matvecs = None


def _spmm(matrix, dense, out):
    """``out[...] = matrix @ dense`` for a CSR matrix and C-contiguous float32 arrays."""
    if _csr_matvecs is None or not (dense.flags.c_contiguous and out.flags.c_contiguous):
        out[...] = matrix @ dense
        return out
    out.fill(0)
    _csr_matvecs(matrix.shape[0], matrix.shape[1], dense.shape[1], matrix.indptr,
                 matrix.indices, matrix.data, dense.ravel(), out.ravel())
    return out


def _apply(op, flux_t, var_t, good_t, ws):
    """Resample one transposed chunk.

    ``flux_t``, ``var_t`` are float32 ``(n_in_sub, ch)`` with bad pixels already
    zeroed; ``good_t`` is the float32 0/1 weight. ``var_t=None`` means unit
    variance on good pixels.  Returns flux and ivar, ``(n_out_sub, ch)`` views of
    ``ws`` buffers (valid until the next call with the same workspace).
    Where no good pixel overlaps, ``num = den = vnum = 0`` exactly, so dividing by
    ``max(den, tiny)`` gives 0 there without a mask.
    """
    shape = (op.p32.shape[0], flux_t.shape[1])
    num = _spmm(op.p32, flux_t, ws.get("num", shape))
    den = _spmm(op.p32, good_t, ws.get("den", shape))
    vnum = _spmm(op.p2_32, good_t if var_t is None else var_t, ws.get("vnum", shape))
    tiny = np.finfo(np.float32).tiny
    safe = np.maximum(den, tiny, out=ws.get("safe", shape))
    np.divide(num, safe, out=num)
    np.multiply(den, den, out=den)
    np.maximum(vnum, tiny, out=vnum)
    np.divide(den, vnum, out=den)
    return num, den


def _for_chunks(n_rows, work, n_jobs):
    """Call ``work(start, stop, workspace)`` on consecutive row chunks, on ``n_jobs`` threads.

    The chunks write disjoint output rows, and numpy and scipy.sparse release the
    GIL in the heavy calls, so threads scale; each thread has its own
    `_Workspace`; the first error is re-raised.
    """
    import threading

    starts = range(0, n_rows, _CHUNK)
    if n_jobs is None or n_jobs <= 1 or n_rows <= _CHUNK:
        ws = _Workspace()
        for start in starts:
            work(start, min(start + _CHUNK, n_rows), ws)
        return
    from concurrent.futures import ThreadPoolExecutor

    local = threading.local()

    def run(start):
        if not hasattr(local, "ws"):
            local.ws = _Workspace()
        work(start, min(start + _CHUNK, n_rows), local.ws)

    with ThreadPoolExecutor(max_workers=int(n_jobs)) as pool:
        for future in [pool.submit(run, start) for start in starts]:
            future.result()


def _check_n_jobs(n_jobs):
    if not isinstance(n_jobs, (int, np.integer)) or n_jobs < 1:
        raise InputError(f"n_jobs must be a positive integer (threads), not {n_jobs!r}")


def _transpose_into(dst, src, rows, cols):
    """``dst[rows, cols] = src.T`` done in cache-friendly column blocks."""
    step = 512
    n = src.shape[0]
    start = cols.start
    for k in range(0, n, step):
        dst[rows, start + k:start + min(k + step, n)] = src[k:k + step].T


def _as_edges_angstrom(wavelength, name="wavelength"):
    """Quantity or array (taken as Angstrom) -> float64 Angstrom values."""
    if isinstance(wavelength, u.Quantity):
        try:
            return wavelength.to_value(u.AA, u.spectral()).astype(np.float64)
        except u.UnitConversionError:
            raise u.UnitConversionError(
                f"{name} has unit {wavelength.unit!s}, which is not a wavelength, frequency, "
                "energy or wavenumber; give it in such a unit (e.g. Angstrom)") from None
    return np.asarray(wavelength, dtype=np.float64)


def resample_flux_conserving(wavelength, flux, ivar=None, *, mask=None, out_edges=None,
                             n_jobs=1):
    """Resample a batch of spectra onto a grid, conserving flux.

    Each output pixel gets the overlap-weighted mean of the flux densities of
    the valid input pixels it overlaps (exact overlap fractions, as in
    `specutils.manipulation.FluxConservingResampler`), so that the integral of
    the flux density over any range of whole output pixels is conserved; its
    variance is that of this weighted mean,
    ``var_i = sum_j p_ij**2 var_j / (sum_j p_ij)**2``.  Input pixels that are
    masked, non-finite or have ``ivar == 0`` carry no weight; output pixels
    that no valid input pixel overlaps get flux 0 and ivar 0.

    The overlap matrix is built once per input grid (and cached) and applied to
    the whole batch as a sparse matrix product: there is no Python loop over
    pixels or spectra.

    Parameters
    ----------
    wavelength : array-like or `~astropy.units.Quantity`
        Input pixel centres (``n``) or edges (``n + 1``), shared by the batch,
        or ``(N, n)`` / ``(N, n + 1)`` for one grid per spectrum (rows with the
        same grid are processed together).  Plain arrays are in the unit of
        ``out_edges`` (Angstrom by default); Quantities are converted with
        ``u.spectral()``.  Strictly increasing or strictly decreasing.
    flux : array-like
        ``(N, n)`` or ``(n,)`` flux density per unit wavelength (any unit; the
        output is in the same unit).
    ivar : array-like, optional
        Inverse variance, same shape as ``flux``, ``>= 0``.  Without it every
        finite pixel has unit variance.
    mask : array-like of bool, optional
        True where a pixel is bad, same shape as ``flux``.
    out_edges : array-like or `~astropy.units.Quantity`, optional
        ``n_out + 1`` increasing output pixel edges; the DESI grid
        (`astroclip.inputs.grid.WAVELENGTH_EDGES`, Angstrom) by default.
    n_jobs : int, optional
        Threads working on chunks of rows (1: none).

    Returns
    -------
    flux, ivar : `numpy.ndarray`
        float32 ``(N, n_out)`` (or ``(n_out,)`` for a 1-D input).

    See Also
    --------
    prepare_spectra : units, uncertainties, masks and DESI arms, then this.

    Examples
    --------
    >>> import numpy as np
    >>> from astroclip.inputs.spectra import resample_flux_conserving
    >>> wave = np.arange(0.5, 10.0, 1.0)           # 10 pixels of width 1
    >>> flux = np.ones((2, 10)); ivar = np.ones((2, 10))
    >>> f, iv = resample_flux_conserving(wave, flux, ivar, out_edges=np.arange(0, 11, 2.0))
    >>> f
    array([[1., 1., 1., 1., 1.],
           [1., 1., 1., 1., 1.]], dtype=float32)
    >>> iv                                          # two pixels averaged: ivar doubles
    array([[2., 2., 2., 2., 2.],
           [2., 2., 2., 2., 2.]], dtype=float32)
    """
    if isinstance(flux, u.Quantity):
        raise TypeError("resample_flux_conserving takes plain arrays; use prepare_spectra "
                        "for fluxes with units, or pass flux.value (per unit wavelength)")
    _check_n_jobs(n_jobs)
    flux = np.asarray(flux)
    one_d = flux.ndim == 1
    flux2 = np.atleast_2d(flux)
    if flux2.ndim != 2:
        raise InputError(f"flux must be 1-D or 2-D (spectra, pixels), got shape {flux.shape}")
    n_spec, n_pix = flux2.shape
    out = grid.WAVELENGTH_EDGES if out_edges is None else _as_edges_angstrom(out_edges, "out_edges")
    if out.ndim != 1 or out.size < 2 or not np.all(np.diff(out) > 0):
        raise InputError("out_edges must be a 1-D strictly increasing array of >= 2 edges")
    ivar2 = None if ivar is None else _same_shape(ivar, flux2, "ivar")
    mask2 = None if mask is None else _same_shape(mask, flux2, "mask").astype(bool)
    wave = _as_edges_angstrom(wavelength)
    if wave.ndim == 1:
        groups = [(wave, slice(None))]
    elif wave.ndim == 2 and wave.shape[0] == n_spec:
        uniq, inverse = np.unique(wave, axis=0, return_inverse=True)
        groups = [(uniq[g], np.flatnonzero(inverse.ravel() == g)) for g in range(len(uniq))]
    else:
        raise InputError(f"wavelength must be 1-D or (N, n) with N = {n_spec}, "
                         f"got shape {wave.shape}")
    out_flux = np.zeros((n_spec, out.size - 1), np.float32)
    out_ivar = np.zeros_like(out_flux)
    for axis, rows in groups:
        edges, flip = _edges_from_axis(axis, n_pix, "wavelength")
        op = _operator(edges, out)
        f_rows = flux2[rows]
        i_rows = None if ivar2 is None else ivar2[rows]
        m_rows = None if mask2 is None else mask2[rows]
        if flip:
            f_rows = f_rows[:, ::-1]
            i_rows = None if i_rows is None else i_rows[:, ::-1]
            m_rows = None if m_rows is None else m_rows[:, ::-1]
        src = _Source(f_rows, None, None if i_rows is None else "ivar", i_rows, None, m_rows)
        res_flux, res_ivar = (out_flux, out_ivar) if isinstance(rows, slice) else (
            np.zeros((len(f_rows), out.size - 1), np.float32),
            np.zeros((len(f_rows), out.size - 1), np.float32))
        if op.rows.stop == op.rows.start:
            continue

        def work(start, stop, ws, src=src, op=op, res_flux=res_flux, res_ivar=res_ivar):
            flux_t, var_t, good_t, _ = src.chunk(start, stop, op.cols, ws, count=False)
            f_t, i_t = _apply(op, flux_t, var_t, good_t, ws)
            _transpose_into(res_flux, f_t, slice(start, stop), op.rows)
            _transpose_into(res_ivar, i_t, slice(start, stop), op.rows)

        _for_chunks(len(f_rows), work, n_jobs)
        if not isinstance(rows, slice):
            out_flux[rows] = res_flux
            out_ivar[rows] = res_ivar
    if one_d:
        return out_flux[0], out_ivar[0]
    return out_flux, out_ivar


def _same_shape(arr, ref, name):
    arr = np.asarray(getattr(arr, "value", arr))
    arr2 = arr.reshape(1, -1) if (arr.ndim == 1 and ref.shape[0] == 1) else arr
    if arr2.shape != ref.shape:
        raise InputError(f"{name} has shape {arr.shape} but flux has shape {ref.shape}; "
                         f"give one {name} value per flux pixel")
    return arr2


def _edges_from_axis(axis, n_pix, name):
    """Angstrom centres or edges -> (increasing edges, flipped?) with checks."""
    if axis.size == 0 or n_pix == 0:
        raise InputError("the spectrum is empty (no pixels); give at least 2 pixels")
    if not np.all(np.isfinite(axis)):
        bad = np.flatnonzero(~np.isfinite(axis))
        raise InputError(f"{name} has {bad.size} non-finite values (first at index {bad[0]}); "
                         "every pixel needs a finite wavelength (zero frequency or energy "
                         "has no wavelength)")
    if axis.size not in (n_pix, n_pix + 1):
        raise InputError(f"{name} has {axis.size} values for {n_pix} flux pixels; give one "
                         "wavelength per pixel (centres) or n + 1 pixel edges")
    if axis.size < 2:
        raise InputError(f"{name} has a single pixel centre, so the pixel width is unknown; "
                         "give the 2 pixel edges instead")
    step = np.diff(axis)
    if np.any(step == 0):
        k = int(np.flatnonzero(step == 0)[0])
        raise InputError(f"{name} has duplicate values ({axis[k]:.6g} Angstrom at indices "
                         f"{k} and {k + 1}); every pixel needs its own wavelength: remove or "
                         "merge the duplicated pixels")
    flip = step[0] < 0
    if np.any((step < 0) != flip):
        k = int(np.flatnonzero((step < 0) != flip)[0])
        raise InputError(f"{name} is not monotonic (at index {k + 1}: {axis[k]:.6g} then "
                         f"{axis[k + 1]:.6g} Angstrom); sort the pixels by wavelength (e.g. "
                         "order = np.argsort(wavelength)) and apply the same order to flux, "
                         "uncertainty and mask")
    if flip:
        axis = axis[::-1]
    edges = axis if axis.size == n_pix + 1 else edges_from_centres(axis)
    if not np.all(np.diff(edges) > 0):
        raise InputError(f"{name}: the pixel edges derived from the centres are not "
                         "increasing (very irregular pixel spacing); give the pixel edges")
    return np.ascontiguousarray(edges), flip


class _Source:
    """One arm's raw arrays with their per-pixel unit factors; makes transposed chunks.

    ``flux`` (N, n) raw values with ``flux_factor`` (n,) to FLUX_UNIT (None: 1);
    ``unc`` (N, n) raw uncertainty of kind 'ivar' / 'var' / 'std' with
    ``unc_factor`` (n,) converting its standard-deviation unit to FLUX_UNIT;
    ``mask`` (N, n) bool, True = bad.
    """

    def __init__(self, flux, flux_factor, unc_kind, unc, unc_factor, mask):
        self.flux = flux
        self.flux_factor = flux_factor
        self.unc_kind = unc_kind
        self.unc = unc
        self.unc_factor = unc_factor
        self.mask = mask

    def __len__(self):
        return len(self.flux)

    def chunk(self, start, stop, cols, ws, *, count=True):
        """Rows ``start:stop``, pixels ``cols`` -> (flux_t, var_t, good_t, n_finite_flux).

        Everything is transposed to ``(pixels, rows)``, float32, in ``FLUX_UNIT``, in
        buffers of the workspace ``ws``; ``var_t`` is None without an uncertainty;
        bad pixels are zeroed; ``good_t`` is their float32 0/1 weight.
        """
        shape = (cols.stop - cols.start, stop - start)
        flux_t = ws.get("flux", shape)
        raw = self.flux[start:stop, cols].T
        # with a unit conversion, convert in float64 first: raw values in other units
        # (e.g. variances in (erg/s/cm2/Hz)^2 ~ 1e-59) do not fit in float32
        if self.flux_factor is None:
            np.copyto(flux_t, raw, casting="unsafe")
        else:
            f64 = ws.get("f64", shape, np.float64)
            np.copyto(f64, raw, casting="unsafe")
            f64 *= self.flux_factor[cols][:, None]
            np.copyto(flux_t, f64, casting="unsafe")
        good = ws.get("good", shape, bool)
        n_finite = np.isfinite(flux_t, out=good).sum(axis=0) if count else None
        var_t = None
        if self.unc_kind is None:
            np.isfinite(flux_t, out=good)
        else:
            var_t = ws.get("var", shape)
            raw = self.unc[start:stop, cols].T
            work = var_t if self.unc_factor is None else ws.get("f64", shape, np.float64)
            np.copyto(work, raw, casting="unsafe")
            if np.fmin.reduce(work, axis=None) < 0:
                row = start + int(np.flatnonzero((work < 0).any(axis=0))[0])
                what = {"ivar": "inverse variance", "var": "variance",
                        "std": "standard deviation"}[self.unc_kind]
                raise InputError(f"spectrum {row} has negative {what} values; uncertainties "
                                 "must be >= 0 (mark bad pixels with the mask, or ivar = 0)")
            with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
                if self.unc_kind == "ivar":
                    np.reciprocal(work, out=work)
                elif self.unc_kind == "std":
                    np.multiply(work, work, out=work)
                if self.unc_factor is not None:
                    work *= (self.unc_factor[cols] ** 2)[:, None]
                    np.copyto(var_t, work, casting="unsafe")
                # one pass for both: NaN or inf in either makes the sum non-finite
                # (ivar = 0 gave var = inf)
                total = np.add(flux_t, var_t, out=ws.get("tmp", shape))
                np.isfinite(total, out=good)
        if self.mask is not None:
            bad = np.logical_not(self.mask[start:stop, cols].T, out=ws.get("bad", shape, bool))
            good &= bad
        bad = np.logical_not(good, out=ws.get("bad", shape, bool))
        if var_t is not None:
            if np.fmin.reduce(var_t, axis=None) == 0:
                zero = good & (var_t == 0)
                if zero.any():
                    row = start + int(np.flatnonzero(zero.any(axis=0))[0])
                    raise InputError(f"spectrum {row} has unmasked pixels with zero variance "
                                     "(infinite inverse variance); give realistic "
                                     "uncertainties or mask those pixels")
            np.copyto(var_t, 0, where=bad)
        np.copyto(flux_t, 0, where=bad)
        good_t = ws.get("goodf", shape)
        np.copyto(good_t, good)
        return flux_t, var_t, good_t, n_finite


# --------------------------------------------------------------------------------------
# Units
# --------------------------------------------------------------------------------------

_FLUX_HINT = ("give the flux as a spectral flux density: per unit wavelength (e.g. "
              "1e-17 erg/(s cm2 Angstrom), W/(m2 nm)), per unit frequency (Jy, "
              "erg/(s cm2 Hz)) or photons per unit wavelength")


def _flux_factor(unit, centres, name="flux"):
    """Per-pixel factor converting ``unit`` to FLUX_UNIT at ``centres`` (Angstrom)."""
    if isinstance(unit, u.FunctionUnitBase) or isinstance(unit, u.LogUnit):
        raise u.UnitConversionError(
            f"{name} is in logarithmic units ({unit}); convert it to a linear flux density "
            "first (e.g. flux.physical or flux.to(u.Jy)) and propagate the uncertainty")
    if unit == u.dimensionless_unscaled:
        raise u.UnitsError(
            f"{name} has no unit; astroclip never assumes one: pass flux_unit=... (e.g. "
            "flux_unit='1e-17 erg/(s cm2 Angstrom)') or an astropy Quantity / Spectrum "
            "with a flux unit")
    if unit.is_equivalent(u.erg / u.s / u.cm**2):
        raise u.UnitConversionError(
            f"{name} unit {unit} is a flux (power per area), not a flux density; if it is "
            "lambda*F_lambda divide by the wavelength, if it is the flux per pixel divide by "
            "the pixel width")
    try:
        factor = (1.0 * unit).to_value(grid.FLUX_UNIT, u.spectral_density(centres * u.AA))
    except u.UnitConversionError:
        if unit.is_equivalent(u.Jy / u.sr) or unit.is_equivalent(grid.FLUX_UNIT / u.sr):
            hint = ("it is a surface brightness: multiply by the solid angle of the fibre or "
                    "aperture (e.g. flux * (np.pi * (0.75 * u.arcsec)**2).to(u.sr))")
        elif unit.is_equivalent(u.count) or unit.is_equivalent(u.count / u.s) \
                or unit.is_equivalent(u.adu):
            hint = "it is not flux-calibrated: calibrate it first"
        else:
            hint = _FLUX_HINT
        raise u.UnitConversionError(
            f"{name} unit {unit} cannot be converted to {grid.FLUX_UNIT} "
            f"(DESI flux density): {hint}") from None
    return np.broadcast_to(np.asarray(factor, dtype=np.float64), centres.shape)


def _std_unit(kind, unit, flux_unit):
    """The unit of a standard deviation for an uncertainty of ``kind`` in ``unit``."""
    if unit is None:
        return flux_unit
    if kind == "std":
        return unit
    if kind == "var":
        return unit ** 0.5
    return unit ** -0.5


def _uncertainty_parts(uncertainty, ivar, flux_unit, shape):
    """Normalise the uncertainty arguments -> (kind, array, std unit) or (None,)*3."""
    if uncertainty is not None and ivar is not None:
        raise InputError("give either uncertainty= or ivar=, not both")
    if ivar is not None:
        unit = getattr(ivar, "unit", None)
        if isinstance(ivar, InverseVariance):
            unit, ivar = ivar.unit, ivar.array
        arr = np.asarray(getattr(ivar, "value", ivar))
        return "ivar", _check_shape(arr, shape, "ivar"), _std_unit("ivar", unit, flux_unit)
    if uncertainty is None:
        return None, None, None
    if isinstance(uncertainty, NDUncertainty):
        kinds = {StdDevUncertainty: "std", VarianceUncertainty: "var", InverseVariance: "ivar"}
        kind = next((k for t, k in kinds.items() if isinstance(uncertainty, t)), None)
        if kind is None:
            raise TypeError(f"uncertainty of type {type(uncertainty).__name__} cannot be "
                            "turned into an inverse variance; use StdDevUncertainty, "
                            "VarianceUncertainty or InverseVariance")
        arr = np.asarray(uncertainty.array)
        return kind, _check_shape(arr, shape, "uncertainty"), _std_unit(
            kind, uncertainty.unit, flux_unit)
    if isinstance(uncertainty, u.Quantity):
        return "std", _check_shape(uncertainty.value, shape, "uncertainty"), uncertainty.unit
    raise TypeError("a plain array uncertainty is ambiguous: wrap it in "
                    "astropy.nddata.StdDevUncertainty, VarianceUncertainty or "
                    "InverseVariance, give a Quantity standard deviation, or use ivar=")


def _check_shape(arr, shape, name):
    if arr.shape != tuple(shape):
        raise InputError(f"{name} has shape {arr.shape} but flux has shape {tuple(shape)}; "
                         f"give one {name} value per flux pixel")
    return arr


# --------------------------------------------------------------------------------------
# Input normalisation: everything becomes groups of rows made of one or more arms
# --------------------------------------------------------------------------------------

@dataclass
class _Arm:
    edges: np.ndarray
    source: _Source
    ivar_known: bool
    label: str = ""


@dataclass
class _Group:
    arms: list
    n_rows: int
    out_rows: object = None          # slice or index array into the output
    meta: Table = None
    label: str = ""


def _make_arm(flux, axis_value, axis_unit, flux_unit, unc_kind, unc, unc_unit, mask, label):
    """Raw arrays (N, n) + spectral axis -> an _Arm (validated, converted factors)."""
    if flux.size == 0 or flux.shape[-1] == 0:
        raise InputError(f"{label}: the spectrum is empty (no pixels); give at least 2 pixels")
    try:
        axis = u.Quantity(axis_value, axis_unit).to_value(u.AA, u.spectral())
    except u.UnitConversionError:
        raise u.UnitConversionError(
            f"{label}: the spectral axis unit {axis_unit} is not a wavelength, frequency, "
            "energy or wavenumber; give it in such a unit (e.g. Angstrom, nm, Hz, eV), or "
            "pass wavelength_unit= for a plain array") from None
    axis = np.asarray(axis, dtype=np.float64)
    n_pix = flux.shape[-1]
    edges, flip = _edges_from_axis(axis, n_pix, f"{label} wavelength")
    if flip:
        flux = flux[:, ::-1]
        unc = None if unc is None else unc[:, ::-1]
        mask = None if mask is None else mask[:, ::-1]
    centres = 0.5 * (edges[1:] + edges[:-1]) if axis.size == n_pix + 1 else (
        axis[::-1] if flip else axis)
    flux_factor = _flux_factor(flux_unit, centres, f"{label} flux")
    unc_factor = None
    if unc_kind is not None:
        unc_factor = _flux_factor(unc_unit, centres, f"{label} uncertainty")
        if np.all(unc_factor == 1):
            unc_factor = None
    if np.all(flux_factor == 1):
        flux_factor = None
    return _Arm(edges, _Source(flux, flux_factor, unc_kind, unc, unc_factor, mask),
                ivar_known=unc_kind is not None, label=label)


def _flatten(arr, n_pix):
    if n_pix == 0 or arr.size == 0:
        raise InputError(f"the spectra are empty (flux shape {arr.shape}); give at least one "
                         "spectrum with at least 2 pixels")
    return arr.reshape(-1, n_pix)


def _spectrum_group(spec, label, *, flux_unit=None, uncertainty=None, ivar=None, mask=None):
    """A specutils Spectrum (1-D or N-D flux) -> (_Arm, number of rows)."""
    flux_q = spec.flux
    axis_index = getattr(spec, "spectral_axis_index", flux_q.ndim - 1)
    values = np.moveaxis(np.asarray(flux_q.value), axis_index, -1)
    n_pix = values.shape[-1]
    unit = flux_q.unit
    if flux_unit is not None:
        if unit != u.dimensionless_unscaled and u.Unit(flux_unit) != unit:
            raise InputError(f"{label} already has flux unit {unit}; flux_unit= is only for "
                             "inputs without a unit")
        unit = u.Unit(flux_unit)
    spec_unc = spec.uncertainty
    if spec_unc is not None and (uncertainty is not None or ivar is not None):
        raise InputError(f"{label} already has an uncertainty; do not also pass "
                         "uncertainty= or ivar=")
    shape = values.shape
    if spec_unc is not None:
        unc_arr = np.moveaxis(np.asarray(spec_unc.array), axis_index, -1)
        uncertainty = type(spec_unc)(unc_arr, unit=spec_unc.unit, copy=False)
    kind, unc, unc_unit = _uncertainty_parts(uncertainty, ivar, unit, shape)
    masks = []
    if spec.mask is not None:
        masks.append(np.moveaxis(np.asarray(spec.mask, dtype=bool), axis_index, -1))
    if mask is not None:
        masks.append(_check_shape(np.asarray(mask, dtype=bool), shape, "mask"))
    full_mask = None
    if masks:
        full_mask = masks[0] if len(masks) == 1 else (masks[0] | masks[1])
        full_mask = _flatten(full_mask, n_pix)
    axis = spec.spectral_axis
    if axis.unit == u.pix:
        raise u.UnitConversionError(f"{label}: the spectral axis is in pixels; give the "
                                    "wavelength of each pixel (a wavelength solution)")
    stored_edges = getattr(axis, "_bin_edges", None)
    axis_value = np.asarray(stored_edges.value if stored_edges is not None and
                            hasattr(stored_edges, "value") else
                            (stored_edges if stored_edges is not None else axis.value))
    flat = _flatten(values, n_pix)
    arm = _make_arm(flat, axis_value, axis.unit, unit, kind,
                    None if unc is None else _flatten(unc, n_pix), unc_unit, full_mask, label)
    return arm, flat.shape[0]


def _spectrum_meta(spec, n_rows):
    """FIBERMAP-like per-row metadata carried by a spectrum (DESI readers), or None."""
    fibermap = spec.meta.get("fibermap") if isinstance(spec.meta, dict) else None
    if isinstance(fibermap, Table) and len(fibermap) == n_rows:
        return Table(fibermap, copy=True)
    return None


def _is_spectrum(obj):
    from specutils import Spectrum
    return isinstance(obj, Spectrum)


def _collect(spectra, *, wavelength, wavelength_unit, flux_unit, uncertainty, ivar, mask,
             combine_arms):
    """Any accepted input -> list of _Group in output order."""
    from specutils import SpectrumList

    extras = dict(wavelength=wavelength, uncertainty=uncertainty, ivar=ivar, mask=mask)
    if _is_spectrum(spectra):
        if wavelength is not None:
            raise InputError("a Spectrum carries its own spectral axis; do not pass wavelength=")
        arm, n = _spectrum_group(spectra, "spectrum", flux_unit=flux_unit,
                                 uncertainty=uncertainty, ivar=ivar, mask=mask)
        return [_Group([arm], n, meta=_spectrum_meta(spectra, n))]
    if isinstance(spectra, (list, tuple)) and len(spectra) > 0 and all(
            _is_spectrum(s) for s in spectra):
        given = [k for k, v in extras.items() if v is not None]
        if given:
            raise InputError(f"{', '.join(given)}= cannot be used with a list of spectra; "
                             "attach them to each Spectrum (spectral_axis, uncertainty, mask)")
        arms = isinstance(spectra, SpectrumList) if combine_arms is None else combine_arms
        if arms:
            pieces = [_spectrum_group(s, f"arm {k} ({s.meta.get('band', k)})"
                                      if isinstance(s.meta, dict) else f"arm {k}",
                                      flux_unit=flux_unit)
                      for k, s in enumerate(spectra)]
            counts = {n for _, n in pieces}
            if len(counts) != 1:
                raise InputError("the arms to combine hold different numbers of spectra "
                                 f"({sorted(counts)}); arms must be the same objects in the "
                                 "same order (or pass combine_arms=False for separate "
                                 "spectra)")
            known = {arm.ivar_known for arm, _ in pieces}
            if len(known) != 1:
                raise InputError("some arms have uncertainties and others not; arms are "
                                 "combined by inverse-variance weighting, so give all of "
                                 "them an uncertainty")
            n = pieces[0][1]
            meta = next((m for m in (_spectrum_meta(s, n) for s in spectra) if m is not None),
                        None)
            return [_Group([arm for arm, _ in pieces], n, meta=meta)]
        groups = []
        for k, s in enumerate(spectra):
            arm, n = _spectrum_group(s, f"spectrum {k}", flux_unit=flux_unit)
            meta = _spectrum_meta(s, n) or Table()
            meta["ITEM"] = np.full(n, k, dtype=np.int64)
            meta["ITEM_ROW"] = np.arange(n, dtype=np.int64)
            groups.append(_Group([arm], n, meta=meta))
        return groups
    if isinstance(spectra, (list, tuple)) and len(spectra) == 0:
        raise InputError("no spectra given (empty list)")
    if isinstance(spectra, (list, tuple)) and any(_is_spectrum(s) for s in spectra):
        raise TypeError("a list of spectra must hold only specutils.Spectrum objects")
    return _array_groups(spectra, wavelength=wavelength, wavelength_unit=wavelength_unit,
                         flux_unit=flux_unit, uncertainty=uncertainty, ivar=ivar, mask=mask)


def _array_groups(flux, *, wavelength, wavelength_unit, flux_unit, uncertainty, ivar, mask):
    """Quantity or ndarray flux with an explicit wavelength -> groups.

    Masked values of a `numpy.ma` or astropy ``Masked`` flux, ivar or
    uncertainty are bad pixels (no weight), like ``mask=``.
    """
    flux, flux_mask = split_masked(flux)
    ivar, ivar_mask = split_masked(ivar)
    uncertainty, unc_mask = (split_masked(uncertainty) if isinstance(uncertainty, np.ndarray)
                             else (uncertainty, None))
    masks = [m for m in (flux_mask, ivar_mask, unc_mask) if m is not None]
    if masks:
        shape = np.shape(flux)
        combined = np.zeros(shape, bool) if mask is None else np.broadcast_to(
            np.asarray(mask, dtype=bool), shape).copy()
        for m in masks:
            combined |= np.broadcast_to(m, shape)
        mask = combined
    if wavelength is None:
        raise InputError("plain arrays and Quantities need wavelength= (a Quantity, or an "
                         "array with wavelength_unit=)")
    if isinstance(flux, u.Quantity):
        unit = flux.unit
        if flux_unit is not None:
            if unit != u.dimensionless_unscaled and u.Unit(flux_unit) != unit:
                raise InputError(f"flux already has unit {unit}; flux_unit= is only for "
                                 "plain arrays")
            unit = u.Unit(flux_unit)
        values = np.asarray(flux.value)
    else:
        values = np.asarray(flux)
        if values.dtype == object or not np.issubdtype(values.dtype, np.number):
            raise TypeError(f"cannot read spectra from a {type(flux).__name__}; give a "
                            "specutils Spectrum, a list of them, a SpectrumList, or flux "
                            "as a Quantity / numeric array with wavelength=")
        unit = u.dimensionless_unscaled if flux_unit is None else u.Unit(flux_unit)
    if values.ndim == 0:
        raise InputError("flux is a scalar; give at least 2 pixels")
    if isinstance(wavelength, u.Quantity):
        if wavelength_unit is not None and u.Unit(wavelength_unit) != wavelength.unit:
            raise InputError("wavelength is a Quantity; wavelength_unit= is only for arrays")
        w_unit, w_value = wavelength.unit, np.asarray(wavelength.value, dtype=np.float64)
    else:
        if wavelength_unit is None:
            raise u.UnitsError("wavelength is a plain array without a unit; astroclip never "
                               "assumes one: pass wavelength_unit=... (e.g. 'Angstrom') or "
                               "a Quantity")
        w_unit, w_value = u.Unit(wavelength_unit), np.asarray(wavelength, dtype=np.float64)
    n_pix = values.shape[-1]
    shape = values.shape
    kind, unc, unc_unit = _uncertainty_parts(uncertainty, ivar, unit, shape)
    mask_arr = None if mask is None else _check_shape(np.asarray(mask, dtype=bool), shape,
                                                      "mask")
    flat = _flatten(values, n_pix)
    unc_flat = None if unc is None else _flatten(unc, n_pix)
    mask_flat = None if mask_arr is None else _flatten(mask_arr, n_pix)
    if w_value.ndim <= 1:
        arm = _make_arm(flat, w_value, w_unit, unit, kind, unc_flat, unc_unit, mask_flat,
                        "spectra")
        return [_Group([arm], flat.shape[0])]
    w_flat = w_value.reshape(-1, w_value.shape[-1])
    if w_flat.shape[0] != flat.shape[0]:
        raise InputError(f"wavelength has shape {w_value.shape} but flux has shape {shape}; "
                         "give one spectral axis for all spectra or one per spectrum")
    uniq, inverse = np.unique(w_flat, axis=0, return_inverse=True)
    inverse = inverse.ravel()
    groups = []
    for g in range(len(uniq)):
        rows = np.flatnonzero(inverse == g)
        arm = _make_arm(flat[rows], uniq[g], w_unit, unit, kind,
                        None if unc_flat is None else unc_flat[rows], unc_unit,
                        None if mask_flat is None else mask_flat[rows],
                        f"spectra with grid {g}")
        groups.append(_Group([arm], rows.size, out_rows=rows))
    return groups


# --------------------------------------------------------------------------------------
# The entry point
# --------------------------------------------------------------------------------------

def prepare_spectra(spectra, *, wavelength=None, wavelength_unit=None, flux_unit=None,
                    uncertainty=None, ivar=None, mask=None, combine_arms=None,
                    min_coverage=0.5, on_invalid="raise", meta=None, progress=None,
                    n_jobs=1):
    """Put spectra on the DESI grid: float32 flux and inverse variance, plus a Table.

    Parameters
    ----------
    spectra : `specutils.Spectrum`, list, `~specutils.SpectrumList`, Quantity or array
        - a `specutils.Spectrum` with a 1-D flux or an N-D flux (one spectrum
          per row, the spectral axis last or at ``spectral_axis_index``);
        - a list of `~specutils.Spectrum` (each one or more spectra, stacked in
          order; each may have its own spectral axis and units);
        - a `~specutils.SpectrumList` holding the arms of the same objects, as
          read by ``SpectrumList.read(path, format="DESI coadd")``: each arm is
          resampled and the arms are combined by inverse-variance weighting where
          they overlap (``combine_arms``);
        - an astropy `~astropy.units.Quantity` flux ``(n,)`` or ``(N, n)`` with
          ``wavelength=``, or a plain array with ``flux_unit=`` too.
    wavelength : `~astropy.units.Quantity` or array, optional
        Pixel centres ``(n,)`` or edges ``(n + 1,)``, or one axis per spectrum
        ``(N, n)``, for Quantity/array fluxes.  Any unit convertible with
        ``u.spectral()`` (Angstrom, nm, um, Hz, eV, ...); increasing or decreasing.
    wavelength_unit : str or `~astropy.units.Unit`, optional
        Unit of a plain-array ``wavelength``.
    flux_unit : str or `~astropy.units.Unit`, optional
        Unit of a flux given without one (plain array, dimensionless Spectrum).
    uncertainty : `~astropy.nddata.NDUncertainty` or `~astropy.units.Quantity`, optional
        `~astropy.nddata.StdDevUncertainty`, `~astropy.nddata.VarianceUncertainty`
        or `~astropy.nddata.InverseVariance` (without a unit they are in the flux
        unit), or a Quantity standard deviation.  Spectra carry their own.
    ivar : array or `~astropy.units.Quantity`, optional
        Inverse variance, in ``flux_unit**-2`` for a plain array.
    mask : array of bool, optional
        True where a pixel is bad (added to a Spectrum's own mask).
    combine_arms : bool, optional
        Whether the members of a list are arms of the same objects (True) or
        separate spectra (False).  Default: True for a `~specutils.SpectrumList`,
        False for a plain list.
    min_coverage : float, optional
        Minimum fraction of the 7781 grid pixels that must receive data.  An input
        whose spectral axis covers less of the grid raises; a spectrum with fewer
        valid pixels than this is invalid (see ``on_invalid``).
    on_invalid : {"raise", "flag"}, optional
        What to do with spectra that have no finite flux, no valid pixel, or a
        valid coverage below ``min_coverage``: raise a `ValueError` naming them,
        or keep them with ``VALID = False`` and the reason in ``PROBLEM``.
    meta : `~astropy.table.Table` or dict, optional
        Extra per-spectrum columns (e.g. ``TARGETID``), one row per spectrum.
    progress : bool, optional
        Show a progress bar on large batches; default ``astroclip.conf.progress``.
    n_jobs : int, optional
        Threads working on chunks of rows (1: none).

    Returns
    -------
    `PreparedSpectra`
        ``flux`` and ``ivar`` float32 ``(N, 7781)`` and the row-aligned ``meta``
        table (``INDEX``, ``COVERAGE``, ``N_MASKED``, ``IVAR_KNOWN``, ``VALID``,
        ``PROBLEM``, ``ITEM``/``ITEM_ROW`` for lists, FIBERMAP columns for DESI
        arms, and the caller's ``meta`` columns).

    Raises
    ------
    astropy.units.UnitsError
        Flux or wavelength without a unit, or in a unit that cannot be converted
        (counts, surface brightness, magnitudes, pixels ...).
    ValueError
        Empty spectra, duplicate or non-monotonic wavelengths, shapes that do not
        match, negative uncertainties, no overlap (or too little) with the grid,
        invalid spectra when ``on_invalid="raise"``.

    Notes
    -----
    - Wavelengths are taken as **vacuum** wavelengths in the observed frame, as
      the DESI grid is; convert air wavelengths first (e.g.
      ``specutils.utils.wcs_utils.air_to_vac``).
    - The flux is converted with ``u.spectral_density`` at each pixel's central
      wavelength, then resampled with `resample_flux_conserving`.
    - Masked, non-finite or zero-ivar pixels carry no weight.  Grid pixels that
      no valid input pixel overlaps get ``ivar = 0`` and ``flux = 0``.
    - Without an uncertainty, pixels are weighted equally and the output ``ivar``
      is 1 (in `~astroclip.inputs.grid.IVAR_UNIT`) where there is data, 0 elsewhere;
      ``IVAR_KNOWN`` is False.
    - Pixel edges derived from centres are midpoints computed in Angstrom, so the
      result does not depend on the units of the input.

    Examples
    --------
    >>> import numpy as np, astropy.units as u
    >>> from astroclip.inputs.spectra import prepare_spectra
    >>> wave = np.linspace(350, 1000, 3000) * u.nm
    >>> flux = np.full((2, 3000), 1e-3) * u.Jy
    >>> prep = prepare_spectra(flux, wavelength=wave, ivar=np.full((2, 3000), 1e6) / u.Jy**2)
    >>> prep.flux.shape, prep.flux.dtype
    ((2, 7781), dtype('float32'))
    >>> print(prep.meta["INDEX", "COVERAGE", "VALID"])
    INDEX COVERAGE VALID
    ----- -------- -----
        0      1.0  True
        1      1.0  True
    """
    _check_options(min_coverage, on_invalid)
    _check_n_jobs(n_jobs)
    groups = _collect(spectra, wavelength=wavelength, wavelength_unit=wavelength_unit,
                      flux_unit=flux_unit, uncertainty=uncertainty, ivar=ivar, mask=mask,
                      combine_arms=combine_arms)
    return _prepare_groups(groups, min_coverage=min_coverage, on_invalid=on_invalid,
                           meta=meta, progress=progress, n_jobs=n_jobs)


def _check_options(min_coverage, on_invalid):
    if on_invalid not in ("raise", "flag"):
        raise InputError(f"on_invalid must be 'raise' or 'flag', not {on_invalid!r}")
    if not 0 <= min_coverage <= 1:
        raise InputError(f"min_coverage must be a fraction in [0, 1], not {min_coverage}")


def _prepare_groups(groups, *, min_coverage, on_invalid, meta, progress, n_jobs=1):
    """Resample and combine normalised groups -> PreparedSpectra (shared with desi.py)."""
    total = 0
    for g in groups:
        if g.out_rows is None:
            g.out_rows = slice(total, total + g.n_rows)
        total += g.n_rows
    if total == 0:
        raise InputError("no spectra given (zero rows)")

    out = grid.WAVELENGTH_EDGES
    ops = []
    for g in groups:
        g_ops = [_operator(arm.edges, out) for arm in g.arms]
        cover = np.minimum(np.max([op.row_cover for op in g_ops], axis=0), 1.0).mean()
        lo = min(arm.edges[0] for arm in g.arms)
        hi = max(arm.edges[-1] for arm in g.arms)
        where = f"{g.arms[0].label}" if len(g.arms) == 1 else "the arms"
        if cover == 0:
            raise InputError(
                f"{where} span {lo:.6g}-{hi:.6g} Angstrom and do not overlap the DESI grid "
                f"({grid.WAVE_MIN:g}-{grid.WAVE_MAX:g} Angstrom, vacuum, observed frame); "
                "check the spectral axis unit and that the spectra are in the observed frame")
        if cover < min_coverage:
            raise InputError(
                f"{where} span {lo:.6g}-{hi:.6g} Angstrom and cover {cover:.1%} of the DESI "
                f"grid ({grid.WAVE_MIN:g}-{grid.WAVE_MAX:g} Angstrom), less than "
                f"min_coverage={min_coverage:g}; check the spectral axis unit, or lower "
                "min_coverage to accept partial spectra")
        ops.append(g_ops)

    flux_out = np.zeros((total, grid.N_PIXELS), np.float32)
    ivar_out = np.zeros_like(flux_out)
    n_masked = np.zeros(total, np.int64)
    n_finite = np.zeros(total, np.int64)
    n_good = np.zeros(total, np.int64)
    ivar_known = np.zeros(total, bool)
    with progress_bar(total=total, desc="prepare_spectra", unit="spectra", progress=progress,
                      min_total=4 * 1024) as bar:
        for g, g_ops in zip(groups, ops):
            _run_group(g, g_ops, flux_out, ivar_out, n_masked, n_finite, n_good, bar,
                       n_jobs)
            ivar_known[g.out_rows] = g.arms[0].ivar_known

    coverage = (ivar_out > 0).sum(axis=1) / grid.N_PIXELS
    problem = np.full(total, "", dtype=object)
    problem[coverage < min_coverage] = "coverage below min_coverage"
    problem[n_good == 0] = "no valid pixel (all masked or ivar = 0)"
    problem[n_finite == 0] = "all flux values are NaN or infinite"
    valid = problem == ""
    if on_invalid == "raise" and not valid.all():
        bad = np.flatnonzero(~valid)
        listed = "; ".join(f"row {i}: {problem[i]} (coverage {coverage[i]:.1%})"
                           for i in bad[:10])
        more = f" and {bad.size - 10} more" if bad.size > 10 else ""
        raise InputError(
            f"{bad.size} of {total} spectra are unusable: {listed}{more}. Remove them, fix "
            "their flux/uncertainty/mask, lower min_coverage, or pass on_invalid='flag' to "
            "keep them flagged (VALID = False)")

    table = _assemble_meta(groups, total, meta)
    for name, col in (("COVERAGE", coverage.astype(np.float32)), ("N_MASKED", n_masked),
                      ("IVAR_KNOWN", ivar_known), ("VALID", valid),
                      ("PROBLEM", problem.astype(str))):
        if name in table.colnames:
            table.rename_column(name, f"INPUT_{name}")
        table[name] = col
    return PreparedSpectra(flux_out, ivar_out, table)


def _run_group(g, g_ops, flux_out, ivar_out, n_masked, n_finite, n_good, bar, n_jobs):
    """Resample and combine the arms of one group into the output rows."""
    contiguous = isinstance(g.out_rows, slice)
    single = len(g.arms) == 1
    lo = min(op.rows.start for op in g_ops)
    hi = max(op.rows.stop for op in g_ops)

    def work(start, stop, ws):
        ch = stop - start
        if contiguous:
            rows = slice(g.out_rows.start + start, g.out_rows.start + stop)
            target_f, target_i, dest = flux_out, ivar_out, rows
        else:
            rows = g.out_rows[start:stop]
            target_f = np.zeros((ch, grid.N_PIXELS), np.float32)
            target_i = np.zeros_like(target_f)
            dest = slice(0, ch)
        if single:
            arm, op = g.arms[0], g_ops[0]
            if op.rows.stop > op.rows.start:
                flux_t, var_t, good_t, fin = arm.source.chunk(start, stop, op.cols, ws)
                f_t, i_t = _apply(op, flux_t, var_t, good_t, ws)
                if not arm.ivar_known:
                    np.copyto(i_t, i_t > 0)
                _transpose_into(target_f, f_t, dest, op.rows)
                _transpose_into(target_i, i_t, dest, op.rows)
                _count(rows, good_t, fin, n_masked, n_finite, n_good)
        else:
            sum_w = ws.get("sum_w", (hi - lo, ch))
            sum_wf = ws.get("sum_wf", (hi - lo, ch))
            sum_w.fill(0)
            sum_wf.fill(0)
            for arm, op in zip(g.arms, g_ops):
                if op.rows.stop == op.rows.start:
                    continue
                flux_t, var_t, good_t, fin = arm.source.chunk(start, stop, op.cols, ws)
                f_t, i_t = _apply(op, flux_t, var_t, good_t, ws)
                part = slice(op.rows.start - lo, op.rows.stop - lo)
                sum_w[part] += i_t
                f_t *= i_t
                sum_wf[part] += f_t
                _count(rows, good_t, fin, n_masked, n_finite, n_good)
            # where no arm has data, sum_wf = sum_w = 0: dividing by tiny gives 0
            safe = np.maximum(sum_w, np.finfo(np.float32).tiny, out=ws.get("safe", sum_w.shape))
            comb_f = np.divide(sum_wf, safe, out=sum_wf)
            if not g.arms[0].ivar_known:
                np.copyto(sum_w, sum_w > 0)
            _transpose_into(target_f, comb_f, dest, slice(lo, hi))
            _transpose_into(target_i, sum_w, dest, slice(lo, hi))
        if not contiguous:
            flux_out[rows] = target_f
            ivar_out[rows] = target_i
        bar.update(ch)

    _for_chunks(g.n_rows, work, n_jobs)


def _count(rows, good_t, fin, n_masked, n_finite, n_good):
    good = good_t.sum(axis=0, dtype=np.float64).astype(np.int64)
    n_masked[rows] += good_t.shape[0] - good
    n_finite[rows] += fin
    n_good[rows] += good


_FILLED_COLUMNS = ("INDEX", "COVERAGE", "N_MASKED", "IVAR_KNOWN", "VALID", "PROBLEM")


def _assemble_meta(groups, total, meta):
    """INDEX + per-group metadata (in output order) + the caller's columns."""
    from astropy.table import vstack

    table = Table()
    table["INDEX"] = np.arange(total, dtype=np.int64)
    pieces = [g.meta for g in groups if g.meta is not None and len(g.meta.colnames)]
    if pieces and all(isinstance(g.out_rows, slice) for g in groups):
        filled = []
        for g in groups:
            filled.append(g.meta if g.meta is not None and len(g.meta.colnames)
                          else _empty_rows(g.n_rows))
        stacked = vstack(filled, join_type="outer", metadata_conflicts="silent")
        for name in stacked.colnames:
            if name != "_ROW":
                table[name] = stacked[name]
    if meta is not None:
        extra = meta if isinstance(meta, Table) else Table(dict(meta))
        if len(extra) != total:
            raise InputError(f"meta has {len(extra)} rows for {total} spectra; give one row "
                             "per spectrum in the output order")
        for name in extra.colnames:
            if name in table.colnames or name in _FILLED_COLUMNS:
                raise InputError(f"meta column {name!r} clashes with a column astroclip "
                                 "fills; rename it")
            table[name] = extra[name]
    return table


def _empty_rows(n):
    t = Table()
    t["_ROW"] = np.zeros(n, dtype=np.int8)
    return t
