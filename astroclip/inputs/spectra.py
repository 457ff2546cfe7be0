"""Spectra in any units -> flux and inverse variance on the DESI grid: the pipeline.

The models read spectra as float32 flux in ``1e-17 erg s^-1 cm^-2 Angstrom^-1``
on the DESI coadd grid (3600-9824 Angstrom in vacuum, 0.8 Angstrom, 7781
pixels, `astroclip.inputs.grid`) with an inverse variance of the same shape,
``ivar = 0`` meaning "no information" (and then ``flux = 0``).

`prepare_spectra` is the one entry point: it takes `specutils.Spectrum`
objects (1-D or 2-D flux), lists of them, the `~specutils.SpectrumList` of the
three arms of a DESI coadd (combined by inverse-variance weighting where they
overlap), lists of such SpectrumLists, astropy Quantities or plain numpy arrays
with explicit units.  Everything becomes groups of rows made of one or more
arms; the units are converted by `astroclip.inputs.units` and the arms
resampled by `astroclip.inputs.resample`, then combined; the result is a
`PreparedSpectra` with a row-aligned table of quality flags.
"""

from dataclasses import dataclass, field

import numpy as np
import astropy.units as u
from astropy.nddata import InverseVariance
from astropy.table import Table

from . import grid
from .._arrays import split_masked
from .._progress import progress_bar
from ..exceptions import InputError
from .resample import (RowSource, check_workers, for_row_chunks, overlap_operator, pixel_edges,
                       transpose_into)
from .units import check_shape, flux_factor, uncertainty_parts, wavelength_angstrom

__all__ = ["PreparedSpectra", "prepare_spectra"]


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
# Input normalisation: everything becomes groups of rows made of one or more arms
# --------------------------------------------------------------------------------------

@dataclass
class _Arm:
    edges: np.ndarray
    source: RowSource
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
    axis = wavelength_angstrom(u.Quantity(axis_value, axis_unit),
                               name=f"{label}: the spectral axis",
                               fix="give it in such a unit (e.g. Angstrom, nm, Hz, eV), or pass "
                                   "wavelength_unit= for a plain array")
    n_pix = flux.shape[-1]
    edges, flip = pixel_edges(axis, n_pix, f"{label} wavelength")
    if flip:
        flux = flux[:, ::-1]
        unc = None if unc is None else unc[:, ::-1]
        mask = None if mask is None else mask[:, ::-1]
    centres = 0.5 * (edges[1:] + edges[:-1]) if axis.size == n_pix + 1 else (
        axis[::-1] if flip else axis)
    factor = flux_factor(flux_unit, centres, f"{label} flux")
    unc_factor = None
    if unc_kind is not None:
        unc_factor = flux_factor(unc_unit, centres, f"{label} uncertainty")
        if np.all(unc_factor == 1):
            unc_factor = None
    if np.all(factor == 1):
        factor = None
    return _Arm(edges, RowSource(flux, factor, unc_kind, unc, unc_factor, mask),
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
    kind, unc, unc_unit = uncertainty_parts(uncertainty, ivar, unit, shape)
    masks = []
    if spec.mask is not None:
        masks.append(np.moveaxis(np.asarray(spec.mask, dtype=bool), axis_index, -1))
    if mask is not None:
        masks.append(check_shape(np.asarray(mask, dtype=bool), shape, "mask"))
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


def _arm_label(spec, k):
    """``"<filename> arm <band>"`` when the arm's meta names them, else ``"arm k (band)"``."""
    meta = spec.meta if isinstance(spec.meta, dict) else {}
    band = meta.get("band", k)
    return f"{meta['filename']} arm {band}" if meta.get("filename") else f"arm {k} ({band})"


def _arm_group(spectra, flux_unit):
    """The arms of the same objects (Spectrum objects) -> one _Group, arms combined."""
    pieces = [_spectrum_group(s, _arm_label(s, k), flux_unit=flux_unit)
              for k, s in enumerate(spectra)]
    counts = {n for _, n in pieces}
    if len(counts) != 1:
        raise InputError("the arms to combine hold different numbers of spectra "
                         f"({sorted(counts)}); arms must be the same objects in the "
                         "same order (or pass combine_arms=False for separate spectra)")
    known = {arm.ivar_known for arm, _ in pieces}
    if len(known) != 1:
        raise InputError("some arms have uncertainties and others not; arms are combined by "
                         "inverse-variance weighting, so give all of them an uncertainty")
    n = pieces[0][1]
    meta = next((m for m in (_spectrum_meta(s, n) for s in spectra) if m is not None), None)
    return _Group([arm for arm, _ in pieces], n, meta=meta)


def _numbered(meta, k, n):
    """``meta`` (or an empty table) with ``ITEM = k`` and ``ITEM_ROW`` (0 ... n - 1)."""
    meta = Table() if meta is None else meta
    meta["ITEM"] = np.full(n, k, dtype=np.int64)
    meta["ITEM_ROW"] = np.arange(n, dtype=np.int64)
    return meta


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
            return [_arm_group(spectra, flux_unit)]
        groups = []
        for k, s in enumerate(spectra):
            arm, n = _spectrum_group(s, f"spectrum {k}", flux_unit=flux_unit)
            groups.append(_Group([arm], n, meta=_numbered(_spectrum_meta(s, n), k, n)))
        return groups
    if isinstance(spectra, (list, tuple)) and len(spectra) > 0 and all(
            isinstance(s, SpectrumList) and len(s) > 0 for s in spectra):
        given = [k for k, v in extras.items() if v is not None]
        if given:
            raise InputError(f"{', '.join(given)}= cannot be used with a list of SpectrumLists; "
                             "attach them to each Spectrum (spectral_axis, uncertainty, mask)")
        groups = [_arm_group(arms, flux_unit) for arms in spectra]
        for k, g in enumerate(groups):
            g.meta = _numbered(g.meta, k, g.n_rows)
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
    kind, unc, unc_unit = uncertainty_parts(uncertainty, ivar, unit, shape)
    mask_arr = None if mask is None else check_shape(np.asarray(mask, dtype=bool), shape,
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
                    workers=1):
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
        - a list of such `~specutils.SpectrumList` (e.g. one per DESI coadd file):
          each set of arms is combined, and the sets are stacked in order
          (``meta`` gets ``ITEM`` and ``ITEM_ROW``; an arm whose ``meta`` has a
          ``"filename"`` is named by it in messages);
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
    workers : int, optional
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
      wavelength, then resampled with
      `~astroclip.inputs.resample.resample_flux_conserving`.
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
    check_workers(workers)
    groups = _collect(spectra, wavelength=wavelength, wavelength_unit=wavelength_unit,
                      flux_unit=flux_unit, uncertainty=uncertainty, ivar=ivar, mask=mask,
                      combine_arms=combine_arms)
    return _prepare_groups(groups, min_coverage=min_coverage, on_invalid=on_invalid,
                           meta=meta, progress=progress, workers=workers)


def _check_options(min_coverage, on_invalid):
    if on_invalid not in ("raise", "flag"):
        raise InputError(f"on_invalid must be 'raise' or 'flag', not {on_invalid!r}")
    if not 0 <= min_coverage <= 1:
        raise InputError(f"min_coverage must be a fraction in [0, 1], not {min_coverage}")


def _prepare_groups(groups, *, min_coverage, on_invalid, meta, progress, workers=1):
    """Resample and combine normalised groups -> PreparedSpectra."""
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
        g_ops = [overlap_operator(arm.edges, out) for arm in g.arms]
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
                       workers)
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


def _run_group(g, g_ops, flux_out, ivar_out, n_masked, n_finite, n_good, bar, workers):
    """Resample and combine the arms of one group into the output rows."""
    contiguous = isinstance(g.out_rows, slice)
    single = len(g.arms) == 1
    lo = min(op.rows.start for op in g_ops)
    hi = max(op.rows.stop for op in g_ops)

    def work(start, stop):
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
                flux_t, var_t, good_t, fin = arm.source.chunk(start, stop, op.cols)
                f_t, i_t = op.apply(flux_t, var_t, good_t)
                if not arm.ivar_known:
                    np.copyto(i_t, i_t > 0)
                transpose_into(target_f, f_t, dest, op.rows)
                transpose_into(target_i, i_t, dest, op.rows)
                _count(rows, good_t, fin, n_masked, n_finite, n_good)
        else:
            sum_w = np.zeros((hi - lo, ch), np.float32)
            sum_wf = np.zeros((hi - lo, ch), np.float32)
            for arm, op in zip(g.arms, g_ops):
                if op.rows.stop == op.rows.start:
                    continue
                flux_t, var_t, good_t, fin = arm.source.chunk(start, stop, op.cols)
                f_t, i_t = op.apply(flux_t, var_t, good_t)
                part = slice(op.rows.start - lo, op.rows.stop - lo)
                sum_w[part] += i_t
                f_t *= i_t
                sum_wf[part] += f_t
                _count(rows, good_t, fin, n_masked, n_finite, n_good)
            # where no arm has data, sum_wf = sum_w = 0: dividing by tiny gives 0
            comb_f = np.divide(sum_wf, np.maximum(sum_w, np.finfo(np.float32).tiny), out=sum_wf)
            if not g.arms[0].ivar_known:
                np.copyto(sum_w, sum_w > 0)
            transpose_into(target_f, comb_f, dest, slice(lo, hi))
            transpose_into(target_i, sum_w, dest, slice(lo, hi))
        if not contiguous:
            flux_out[rows] = target_f
            ivar_out[rows] = target_i
        bar.update(ch)

    for_row_chunks(g.n_rows, work, workers)


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
