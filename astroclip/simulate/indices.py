"""Absorption-line and break indices of galaxy spectra (Lick, H-delta_A, Dn4000, Ca HK).

The index definitions are the published ones, in air wavelengths:

* ``Dn4000``: the narrow 4000 Angstrom break of Balogh et al. (1999, ApJ 527, 54),
  the ratio of the mean flux density per unit frequency in 4000-4100 and 3850-3950 A;
* ``HdeltaA``, ``HgammaA``, ``HdeltaF``, ``HgammaF``: the Balmer indices of Worthey &
  Ottaviani (1997, ApJS 111, 377);
* ``G4300``, ``Fe4383``, ``Hbeta``, ``Mg2``, ``Mgb``, ``Fe5270``, ``Fe5335``, ``NaD``,
  ...: the Lick/IDS indices as tabulated by Trager et al. (1998, ApJS 116, 1);
* ``CaHK``: the Ca II H + K index of Serven, Worthey & Briley (2005, ApJ 627, 754),
  a 104 A band over both lines.

An atomic index is the equivalent width (Angstrom) of the band relative to the
pseudo-continuum, the straight line through the mean flux densities of the blue and
red side bands at their centres (``EW = integral (1 - F / C) d lambda``); a molecular
index is ``-2.5 log10`` of the mean ``F / C`` (magnitudes).  Band means use the exact
overlap of each pixel with the band, so indices do not depend on the pixel grid.

The indices are measured at the resolution of the spectrum given: no broadening to
the Lick/IDS resolution and no velocity-dispersion correction is applied, so values
are comparable between spectra of the same resolution and velocity dispersion (e.g. a
mock and a real DESI galaxy), not with tabulated Lick-system values.

`measure_indices` works on real spectra as well as on the mock survey's, e.g. DESI
coadds read with `astroclip.inputs.desi.read_desi_coadd`.
"""

import dataclasses
import warnings

import astropy.units as u
import numpy as np

from ..exceptions import InputError, UnitsError

__all__ = ["SpectralIndex", "INDICES", "measure_indices", "air_to_vacuum", "vacuum_to_air"]


@dataclasses.dataclass(frozen=True)
class SpectralIndex:
    """Definition of one spectral index (air wavelengths, Angstrom).

    Attributes
    ----------
    name : str
    blue, red : tuple of 2 floats
        Side bands (pseudo-continuum) or, for a break, the two flux windows.
    band : tuple of 2 floats or None
        Central band of an absorption index (None for a break).
    kind : {"ew", "mag", "break"}
        Equivalent width (Angstrom), magnitude, or red/blue ratio of mean F_nu.
    reference : str
    """

    name: str
    blue: tuple
    band: tuple
    red: tuple
    kind: str
    reference: str

    @property
    def unit(self):
        """Unit of the index value: Angstrom, mag or dimensionless."""
        return {"ew": u.AA, "mag": u.mag, "break": u.dimensionless_unscaled}[self.kind]

    @property
    def span(self):
        """First and last wavelength used (air Angstrom)."""
        edges = [self.blue, self.red] + ([self.band] if self.band else [])
        return min(e[0] for e in edges), max(e[1] for e in edges)


_LICK = "Trager et al. (1998)"
_WO97 = "Worthey & Ottaviani (1997)"


def _index(name, band, blue, red, kind, ref):
    return SpectralIndex(name, tuple(blue), None if band is None else tuple(band), tuple(red),
                         kind, ref)


#: The index definitions, by name (air wavelengths).
INDICES = {d.name: d for d in (
    _index("Dn4000", None, (3850.0, 3950.0), (4000.0, 4100.0), "break",
           "Balogh et al. (1999)"),
    _index("D4000", None, (3750.0, 3950.0), (4050.0, 4250.0), "break", "Bruzual (1983)"),
    _index("CaHK", (3899.5, 4003.5), (3806.5, 3833.8), (4020.7, 4052.4), "ew",
           "Serven, Worthey & Briley (2005)"),
    _index("HdeltaA", (4083.500, 4122.250), (4041.600, 4079.750), (4128.500, 4161.000), "ew",
           _WO97),
    _index("HdeltaF", (4091.000, 4112.250), (4057.250, 4088.500), (4114.750, 4137.250), "ew",
           _WO97),
    _index("CN2", (4142.125, 4177.125), (4083.875, 4096.375), (4244.125, 4284.125), "mag",
           _LICK),
    _index("Ca4227", (4222.250, 4234.750), (4211.000, 4219.750), (4241.000, 4251.000), "ew",
           _LICK),
    _index("G4300", (4281.375, 4316.375), (4266.375, 4282.625), (4318.875, 4335.125), "ew",
           _LICK),
    _index("HgammaA", (4319.750, 4363.500), (4283.500, 4319.750), (4367.250, 4419.750), "ew",
           _WO97),
    _index("HgammaF", (4331.250, 4352.250), (4283.500, 4319.750), (4354.750, 4384.750), "ew",
           _WO97),
    _index("Fe4383", (4369.125, 4420.375), (4359.125, 4370.375), (4442.875, 4455.375), "ew",
           _LICK),
    _index("Hbeta", (4847.875, 4876.625), (4827.875, 4847.875), (4876.625, 4891.625), "ew",
           _LICK),
    _index("Fe5015", (4977.750, 5054.000), (4946.500, 4977.750), (5054.000, 5065.250), "ew",
           _LICK),
    _index("Mg1", (5069.125, 5134.125), (4895.125, 4957.625), (5301.125, 5366.125), "mag",
           _LICK),
    _index("Mg2", (5154.125, 5196.625), (4895.125, 4957.625), (5301.125, 5366.125), "mag",
           _LICK),
    _index("Mgb", (5160.125, 5192.625), (5142.625, 5161.375), (5191.375, 5206.375), "ew",
           _LICK),
    _index("Fe5270", (5245.650, 5285.650), (5233.150, 5248.150), (5285.650, 5318.150), "ew",
           _LICK),
    _index("Fe5335", (5312.125, 5352.125), (5304.625, 5315.875), (5353.375, 5363.375), "ew",
           _LICK),
    _index("Fe5406", (5387.500, 5415.000), (5376.250, 5387.500), (5415.000, 5425.000), "ew",
           _LICK),
    _index("NaD", (5876.875, 5909.375), (5860.625, 5875.625), (5922.125, 5948.125), "ew",
           _LICK),
    _index("TiO1", (5936.625, 5994.125), (5816.625, 5849.125), (6038.625, 6103.625), "mag",
           _LICK),
    _index("TiO2", (6189.625, 6272.125), (6066.625, 6141.625), (6372.625, 6415.125), "mag",
           _LICK),
)}

# fraction of a band that must hold valid pixels for an index to be measured
_MIN_COVERAGE = 0.8


def air_to_vacuum(wavelength):
    """Vacuum wavelengths (Angstrom) of air wavelengths (Angstrom), Morton (2000).

    The IAU standard conversion, as in `specutils.utils.wcs_utils.air_to_vac`.

    Examples
    --------
    >>> from astroclip.simulate.indices import air_to_vacuum
    >>> round(float(air_to_vacuum(5000.0)), 3)
    5001.395
    """
    lam = np.asarray(wavelength, dtype=np.float64)
    s2 = (1e4 / lam) ** 2
    n = 1 + 8.34254e-5 + 2.406147e-2 / (130 - s2) + 1.5998e-4 / (38.9 - s2)
    return lam * n


def vacuum_to_air(wavelength):
    """Air wavelengths (Angstrom) of vacuum wavelengths (Angstrom): inverse of `air_to_vacuum`.

    Examples
    --------
    >>> from astroclip.simulate.indices import air_to_vacuum, vacuum_to_air
    >>> round(float(vacuum_to_air(air_to_vacuum(6562.8))), 6)
    6562.8
    """
    vac = np.asarray(wavelength, dtype=np.float64)
    air = vac / 1.00028
    for _ in range(4):
        air = air * vac / air_to_vacuum(air)
    return air


def _wave_angstrom(wavelength):
    if isinstance(wavelength, u.Quantity):
        try:
            return wavelength.to_value(u.AA, u.spectral()).astype(np.float64)
        except u.UnitConversionError:
            raise UnitsError(f"wavelength has unit {wavelength.unit!s}, which is not a "
                             "spectral unit; give it in Angstrom (or any wavelength, frequency "
                             "or energy unit)") from None
    return np.asarray(wavelength, dtype=np.float64)


def _flux_per_wavelength(flux, wave):
    if not isinstance(flux, u.Quantity):
        return np.asarray(flux, dtype=np.float64)
    target = u.erg / u.s / u.cm**2 / u.AA
    try:
        return flux.to_value(target, u.spectral_density(wave * u.AA)).astype(np.float64)
    except u.UnitConversionError:
        raise UnitsError(f"flux has unit {flux.unit!s}, which is not a flux density; give "
                         "F_lambda or F_nu (e.g. 1e-17 erg / (s cm2 Angstrom))") from None


def _from_spectrum(spectrum):
    """(wavelength, flux, ivar) of a `specutils.Spectrum` (its uncertainty and mask)."""
    from astropy.nddata import InverseVariance, StdDevUncertainty, VarianceUncertainty

    wave = spectrum.spectral_axis.to_value(u.AA, u.spectral())
    flux = _flux_per_wavelength(spectrum.flux, wave)
    # per-pixel factor from the flux unit to erg/s/cm2/A (wavelength-dependent for F_nu)
    factor = _flux_per_wavelength(np.ones(wave.size) * spectrum.flux.unit, wave) \
        if isinstance(spectrum.flux, u.Quantity) else 1.0
    unc = spectrum.uncertainty
    ivar = None
    if unc is not None:
        arr = np.asarray(unc.array, dtype=np.float64)
        with np.errstate(divide="ignore"):
            if isinstance(unc, InverseVariance):
                ivar = arr
            elif isinstance(unc, StdDevUncertainty):
                ivar = np.where(arr > 0, 1.0 / arr**2, 0.0)
            elif isinstance(unc, VarianceUncertainty):
                ivar = np.where(arr > 0, 1.0 / arr, 0.0)
            else:
                raise InputError(f"the Spectrum's uncertainty is a {type(unc).__name__}; "
                                 "give an InverseVariance, StdDevUncertainty or "
                                 "VarianceUncertainty (or no uncertainty)")
        ivar = ivar / factor**2
    if spectrum.mask is not None:
        mask = np.asarray(spectrum.mask, dtype=bool)
        ivar = np.where(mask, 0.0, np.ones_like(flux) if ivar is None else ivar)
    return wave, flux, ivar


def _band_weights(edges, lo, hi):
    """Overlap (Angstrom) of each pixel (edges, per row) with [lo, hi] -> (..., n_pix)."""
    return np.clip(np.minimum(edges[..., 1:], hi) - np.maximum(edges[..., :-1], lo), 0.0, None)


def measure_indices(wavelength, flux=None, ivar=None, *, redshift=None, names=None,
                    medium="vacuum"):
    """Spectral indices of one or many spectra, with their uncertainties.

    Parameters
    ----------
    wavelength : array-like, `~astropy.units.Quantity` or `specutils.Spectrum`
        Pixel centres, ``(n,)`` shared by all spectra or ``(N, n)``; plain arrays are in
        Angstrom, Quantities are converted.  A `specutils.Spectrum` gives the wavelengths,
        the flux and (from its uncertainty and mask) the inverse variance at once.
    flux : array-like or `~astropy.units.Quantity`
        ``(n,)`` or ``(N, n)`` flux densities per unit wavelength (plain arrays; any unit,
        indices are ratios) or a Quantity in any F_lambda or F_nu unit.
    ivar : array-like, optional
        Inverse variance of ``flux`` (same shape and unit); pixels with ``ivar == 0`` are
        left out of every band mean, and the uncertainties are propagated to first order.
        Without it every finite pixel counts equally and no uncertainty is returned.
    redshift : float or array-like, optional
        Redshift of each spectrum: the wavelengths are divided by ``1 + z`` (observed
        spectra).  None (default) if the spectra are already in the rest frame.
    names : sequence of str, optional
        Indices to measure (keys of `INDICES`); all by default.
    medium : {"vacuum", "air"}, optional
        Medium of ``wavelength``: DESI and SDSS spectra are in vacuum, so the (air)
        index definitions are converted to vacuum (Morton 2000); ``"air"`` uses them as
        published.

    Returns
    -------
    dict of `numpy.ndarray`
        ``name -> (N,)`` values (``()`` for a single spectrum) in the unit of the index
        (`SpectralIndex.unit`), and ``name + "_ERR"`` with the 1-sigma uncertainties when
        ``ivar`` is given.  An index whose bands fall outside a spectrum, or whose bands
        are less than 80% covered by valid pixels, is NaN for that spectrum (a warning
        says how many).

    Raises
    ------
    InputError
        Unknown index names, mismatched shapes, a bad ``medium`` or ``redshift``.
    UnitsError
        Wavelength or flux in units that cannot be converted.

    Examples
    --------
    A flat spectrum has no absorption and no break:

    >>> import numpy as np
    >>> from astroclip.simulate.indices import measure_indices
    >>> wave = np.arange(3500.0, 7000.0, 0.5)
    >>> flat = np.ones_like(wave)                   # F_lambda = const
    >>> out = measure_indices(wave, flat, names=["Mgb", "HdeltaA"])
    >>> [abs(round(float(out[k]), 6)) for k in ("Mgb", "HdeltaA")]
    [0.0, 0.0]

    A Gaussian absorption line of equivalent width 3 A in the Mg b band:

    >>> line = 1 - 3.0 / np.sqrt(2 * np.pi * 2.0**2) * np.exp(-0.5 * ((wave - 5177) / 2.0)**2)
    >>> round(float(measure_indices(wave, line, names=["Mgb"], medium="air")["Mgb"]), 3)
    3.0
    """
    if flux is None:
        if not hasattr(wavelength, "spectral_axis"):
            raise InputError("measure_indices needs flux: give (wavelength, flux[, ivar]) or "
                             "a specutils Spectrum")
        if ivar is not None:
            raise InputError("give ivar through the Spectrum's uncertainty, not both")
        wave, flux_l, ivar_arr = _from_spectrum(wavelength)
    else:
        wave = _wave_angstrom(wavelength)
        flux_l = _flux_per_wavelength(flux, wave if wave.ndim == 1 else wave[0])
        ivar_arr = None if ivar is None else np.asarray(getattr(ivar, "value", ivar),
                                                        dtype=np.float64)
    if medium not in ("vacuum", "air"):
        raise InputError(f"medium must be 'vacuum' or 'air', not {medium!r}")
    if names is None:
        names = list(INDICES)
    elif isinstance(names, str):
        names = [names]
    unknown = [n for n in names if n not in INDICES]
    if unknown:
        raise InputError(f"unknown spectral index name(s) {unknown}; choose among "
                         f"{list(INDICES)}")
    single = flux_l.ndim == 1
    flux2 = np.atleast_2d(flux_l)
    if flux2.ndim != 2:
        raise InputError(f"flux must be 1-D or 2-D (spectra, pixels), got shape {flux_l.shape}")
    n_spec, n_pix = flux2.shape
    if wave.ndim == 1:
        wave2 = np.broadcast_to(wave, (n_spec, wave.size))
    else:
        wave2 = wave
    if wave2.shape != (n_spec, n_pix):
        raise InputError(f"wavelength has shape {wave.shape} but flux has shape {flux_l.shape}; "
                         "give one wavelength per pixel")
    good = np.isfinite(flux2)
    if ivar_arr is not None:
        ivar2 = np.atleast_2d(ivar_arr)
        if ivar2.shape != flux2.shape:
            raise InputError(f"ivar has shape {ivar_arr.shape} but flux has shape "
                             f"{flux_l.shape}; give one ivar value per flux pixel")
        good &= np.isfinite(ivar2) & (ivar2 > 0)
        var = np.where(good, 1.0 / np.where(good, ivar2, 1.0), 0.0)
    flux2 = np.where(good, flux2, 0.0)
    if redshift is not None:
        z = np.broadcast_to(np.asarray(redshift, dtype=np.float64), (n_spec,))
        if np.any(~np.isfinite(z)) or np.any(z <= -1):
            raise InputError("redshift must be finite and > -1 for every spectrum")
        wave2 = wave2 / (1.0 + z)[:, None]
        flux2 = flux2 * (1.0 + z)[:, None]     # F_lambda per rest-frame Angstrom
        if ivar_arr is not None:
            var = var * ((1.0 + z) ** 2)[:, None]
    from ..inputs.resample import edges_from_centres

    if wave.ndim == 1 and redshift is None:
        edges = np.broadcast_to(edges_from_centres(wave2[0]), (n_spec, n_pix + 1))
    else:
        edges = np.stack([edges_from_centres(w) for w in wave2])
    if not np.all(np.diff(edges, axis=1) > 0):
        raise InputError("wavelength must be strictly increasing along each spectrum")
    centres = 0.5 * (edges[:, 1:] + edges[:, :-1])
    out = {}
    n_bad = 0
    for name in names:
        d = INDICES[name]
        conv = (lambda b: tuple(air_to_vacuum(np.array(b)))) if medium == "vacuum" else tuple
        value, err, ok = _one_index(d, conv, edges, centres, flux2, good,
                                    var if ivar_arr is not None else None)
        n_bad += int(np.sum(~ok))
        out[name] = value[0] if single else value
        if ivar_arr is not None:
            out[name + "_ERR"] = err[0] if single else err
    if n_bad:
        warnings.warn(f"{n_bad} index value(s) are NaN: their bands fall outside the "
                      f"spectrum or are less than {_MIN_COVERAGE:.0%} covered by valid pixels",
                      stacklevel=2)
    return out


def _band_mean(edges, flux, good, lo, hi, weight=None):
    """Overlap-weighted band means of flux (and the normalised weights, coverage)."""
    w = _band_weights(edges, lo, hi)
    if weight is not None:
        w = w * weight
    cover = (w * good).sum(axis=1) / np.maximum(w.sum(axis=1), 1e-300)
    full = np.minimum(hi, edges[:, -1]) - np.maximum(lo, edges[:, 0])
    cover = np.where(full >= (hi - lo) * (1 - 1e-9), cover, 0.0)
    wg = w * good
    norm = wg / np.maximum(wg.sum(axis=1, keepdims=True), 1e-300)
    return (norm * flux).sum(axis=1), norm, cover


def _one_index(d, conv, edges, centres, flux, good, var):
    """Value, uncertainty and validity of index ``d`` for every row."""
    blue, red = conv(d.blue), conv(d.red)
    if d.kind == "break":
        nu2 = centres**2                         # F_nu ~ F_lambda lambda^2
        fb, pb, cb = _band_mean(edges, flux * nu2, good, *blue)
        fr, pr, cr = _band_mean(edges, flux * nu2, good, *red)
        ok = (cb >= _MIN_COVERAGE) & (cr >= _MIN_COVERAGE) & (fb > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            value = np.where(ok, fr / fb, np.nan)
            err = None
            if var is not None:
                vb = (pb**2 * var * nu2**2).sum(axis=1)
                vr = (pr**2 * var * nu2**2).sum(axis=1)
                err = np.where(ok, np.abs(value) * np.sqrt(vr / fr**2 + vb / fb**2), np.nan)
        return value, err, ok
    band = conv(d.band)
    fb, pb, cb = _band_mean(edges, flux, good, *blue)
    fr, pr, cr = _band_mean(edges, flux, good, *red)
    lb, lr = 0.5 * (blue[0] + blue[1]), 0.5 * (red[0] + red[1])
    alpha = (lr - centres) / (lr - lb)
    beta = (centres - lb) / (lr - lb)
    cont = fb[:, None] * alpha + fr[:, None] * beta
    _, pc, cc = _band_mean(edges, flux, good, *band)
    ok = (cb >= _MIN_COVERAGE) & (cr >= _MIN_COVERAGE) & (cc >= _MIN_COVERAGE) \
        & np.all((cont > 0) | (pc == 0), axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(pc > 0, flux / cont, 0.0)
        s = (pc * ratio).sum(axis=1)
        width = band[1] - band[0]
        value = width * (1 - s) if d.kind == "ew" else -2.5 * np.log10(s)
        value = np.where(ok, value, np.nan)
        err = None
        if var is not None:
            # first-order propagation through the band and both side-band means
            q = np.where(pc > 0, pc * flux / cont**2, 0.0)
            ds = np.where(pc > 0, pc / cont, 0.0) - (q * alpha).sum(axis=1, keepdims=True) * pb \
                - (q * beta).sum(axis=1, keepdims=True) * pr
            sd = np.sqrt((ds**2 * var).sum(axis=1))
            err = width * sd if d.kind == "ew" else 2.5 / np.log(10) * sd / np.abs(s)
            err = np.where(ok, err, np.nan)
    return value, err, ok
