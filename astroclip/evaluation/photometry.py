"""The photometry baseline of the paper: the few-shot MLP on g, r, z magnitudes and colours.

`photometry_features` turns fluxes (nanomaggies, any flux density, or AB
magnitudes) into the magnitudes and adjacent colours the baseline is trained
on; `photometry_baseline` trains the few-shot head of
`astroclip.evaluation.fewshot_regression` on them.  It is the one photometry
baseline of the package: the Table-1 benchmark (`evaluate_properties`) and the
realism checks of the mock survey both use it.
"""

import numpy as np
from astropy import units as u
from astropy.table import Table

from .._arrays import rows_text
from ..exceptions import InputError
from ..inputs.grid import AB_NANOMAGGY, BANDS, NANOMAGGY, NANOMAGGY_EQUIVALENCY
from .fewshot import fewshot_regression

__all__ = ["photometry_features", "photometry_baseline"]


def _band_columns(photometry, bands):
    """Split the photometry into one 1-D array or Quantity per band."""
    if isinstance(photometry, (Table, dict)):
        keys = list(photometry.keys()) if isinstance(photometry, dict) else photometry.colnames
        cols = []
        for band in bands:
            for cand in (f"FLUX_{band.upper()}", f"flux_{band}", band):
                if cand in keys:
                    col = photometry[cand]
                    break
            else:
                raise InputError(f"photometry has no {band}-band flux column; expected one of "
                                 f"FLUX_{band.upper()}, flux_{band} or {band} (columns: {keys})")
            cunit = getattr(col, "unit", None)
            values = np.asarray(np.ma.getdata(col), dtype=np.float64)
            cols.append(u.Quantity(values, cunit) if cunit is not None and not isinstance(
                col, u.Quantity) else col)
        return cols
    if not isinstance(photometry, u.Quantity):
        photometry = np.asarray(photometry, dtype=np.float64)
    if photometry.ndim != 2 or photometry.shape[1] != len(bands):
        raise InputError(f"photometry must have shape (n_objects, {len(bands)}) for bands "
                         f"{tuple(bands)}; got {photometry.shape}")
    return [photometry[:, j] for j in range(len(bands))]


def _magnitudes(col, *, unit, band):
    """AB magnitudes of one band (NaN where undefined) from fluxes or magnitudes."""
    if not isinstance(col, u.Quantity):
        col = np.asarray(col, dtype=np.float64) * u.Unit(unit)
    if isinstance(col.unit, u.MagUnit):
        try:
            return np.asarray(col.to_value(u.ABmag), dtype=np.float64), True
        except u.UnitConversionError:
            raise InputError(f"{band}-band magnitudes are in {col.unit}; give AB magnitudes "
                             "(u.ABmag) or fluxes") from None
    try:
        flux = np.asarray(col.to_value(NANOMAGGY, NANOMAGGY_EQUIVALENCY), dtype=np.float64)
    except u.UnitConversionError:
        raise InputError(f"{band}-band photometry has unit {col.unit}, which is not a flux "
                         "density or maggies; give fluxes in nanomaggies (or Jy), or "
                         "u.ABmag magnitudes") from None
    with np.errstate(divide="ignore", invalid="ignore"):
        mags = AB_NANOMAGGY - 2.5 * np.log10(np.where(flux > 0, flux, np.nan))
    return mags, False


def photometry_features(photometry, *, bands=BANDS, unit=NANOMAGGY):
    """Magnitudes and colours from g, r, z fluxes: the input of the photometry baseline.

    Parameters
    ----------
    photometry : array-like (N, 3), `~astropy.units.Quantity`, dict or `~astropy.table.Table`
        Fluxes in the order of ``bands``: a plain array is read in ``unit``
        (default nanomaggies, the DESI FIBERMAP / Legacy Survey convention); a
        Quantity is converted (any flux density, maggies, or ``u.ABmag``
        magnitudes); a table needs columns ``FLUX_G``, ``FLUX_R``, ``FLUX_Z``
        (or ``flux_g``..., or ``g``...), with units or in ``unit``.
    bands : sequence of str, optional
        Band names (default g, r, z).
    unit : `~astropy.units.Unit`, optional
        Unit of plain arrays and unitless columns (default nanomaggies).

    Returns
    -------
    features : `numpy.ndarray` (N, 2 * n_bands - 1)
        AB magnitudes ``22.5 - 2.5 log10(flux / nanomaggy)`` of each band,
        followed by the colours of adjacent bands (g - r, r - z).

    Raises
    ------
    ValueError
        For non-positive or non-finite fluxes (magnitudes are undefined; drop
        these objects, as the paper does), or a wrong number of bands.

    Examples
    --------
    >>> import numpy as np
    >>> from astroclip.evaluation import photometry_features
    >>> photometry_features(np.array([[10.0, 100.0, 1000.0]])).round(3)
    array([[20. , 17.5, 15. ,  2.5,  2.5]])
    """
    bands = tuple(bands)
    cols = _band_columns(photometry, bands)
    mags, bad, any_mag = [], [], False
    for band, col in zip(bands, cols):
        m, is_mag = _magnitudes(col, unit=unit, band=band)
        any_mag |= is_mag
        mags.append(m)
        bad.append(~np.isfinite(m))
    lengths = {m.shape for m in mags}
    if len(lengths) != 1 or mags[0].ndim != 1:
        raise InputError(f"the photometry bands have different shapes {sorted(lengths)}; give "
                         "one flux per object and band")
    mags, bad = np.stack(mags, axis=1), np.stack(bad, axis=1)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        per_band = ", ".join(f"{b}: {int(bad[:, j].sum())}" for j, b in enumerate(bands))
        shown = rows_text(rows)
        what = "non-positive or non-finite fluxes (or magnitudes)" if any_mag else \
            "non-positive or non-finite fluxes"
        raise InputError(f"photometry has {what} for {rows.size} objects ({per_band}; rows "
                         f"{shown}); their magnitudes are undefined: drop these objects "
                         "(the paper keeps only positive g, r, z fluxes)")
    colours = mags[:, :-1] - mags[:, 1:]
    return np.concatenate([mags, colours], axis=1)


def photometry_baseline(train_photometry, train_targets, test_photometry, *, bands=BANDS,
                        unit=NANOMAGGY, **mlp_kwargs):
    """The paper's baseline: the few-shot MLP on g, r, z photometry alone.

    The fluxes become magnitudes and colours (`photometry_features`), then the
    same MLP head as `fewshot_regression` is trained on them.

    Parameters
    ----------
    train_photometry, test_photometry : array-like (N, 3), Quantity or Table
        Fluxes (see `photometry_features`).
    train_targets : array-like, dict or `~astropy.table.Table`
        Labels of the training objects.
    bands, unit
        See `photometry_features`.
    **mlp_kwargs
        Options of `fewshot_regression` (``hidden``, ``max_epochs``, ``seed``...).

    Returns
    -------
    predictions : `numpy.ndarray` or `~astropy.table.Table`
        In the form of ``train_targets``.

    Examples
    --------
    >>> import numpy as np
    >>> from astroclip.evaluation import photometry_baseline
    >>> rng = np.random.default_rng(0)
    >>> flux = rng.uniform(1, 100, size=(300, 3))
    >>> y = np.log10(flux[:, 1])
    >>> photometry_baseline(flux[:250], y[:250], flux[250:], max_epochs=5,
    ...                     device="cpu", progress=False).shape
    (50,)
    """
    xtr = photometry_features(train_photometry, bands=bands, unit=unit)
    xte = photometry_features(test_photometry, bands=bands, unit=unit)
    return fewshot_regression(xtr, train_targets, xte, **mlp_kwargs)
