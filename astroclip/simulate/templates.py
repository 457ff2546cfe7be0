"""Rest-frame galaxy templates of `kcorrect` and the wavelength grids of the mock survey.

The five non-negative (NMF) templates shipped with kcorrect (Blanton & Roweis
2007, version 4 set) are spectra of stellar populations in erg/s/cm2/Angstrom
at 10 pc per solar mass formed, with the fraction of that mass still in stars
(``mremain``), the fractions formed in the last 300 Myr and 1 Gyr (``m300``,
``m1000``) and the stellar metallicity (``mets``).  A galaxy is a non-negative
combination of them, so its stellar mass and star-formation history follow
from the coefficients.

The templates carry nebular emission lines at their own (low) resolution.  The
mock survey draws its lines from the star-formation rate and the gas
metallicity instead (`astroclip.simulate.spectra`), so the template lines are
removed here: each line window is replaced by the continuum interpolated
across it, times the (absorption) shape that the emission-free templates show
in the same window.
"""

import functools
import os

import numpy as np

from .._optional import install_hint
from ..exceptions import OptionalDependencyError
from ..inputs import grid

__all__ = [
    "TEMPLATE_FILE", "REST_WAVE_MIN", "REST_WAVE_MAX", "MODEL_WAVE_MIN", "MODEL_WAVE_MAX",
    "model_wavelength", "desi_slice", "load_templates", "Templates", "kcorrect_data_dir",
]

#: kcorrect template file used by the simulator (5 NMF templates).
TEMPLATE_FILE = os.path.join("data", "templates", "kcorrect-default-v4.fits")


#: Rest-frame range kept from the templates (Angstrom): covers the model grid for z <= 1
#: and the 2MASS Ks band at z = 0 (used for the volume weights of the SDSS galaxies).
REST_WAVE_MIN = 1400.0
REST_WAVE_MAX = 24500.0

#: First pixel of the observed-frame model grid (Angstrom): the DESI grid extended
#: blue-ward so that it covers the DECam filter curves.
MODEL_WAVE_MIN = grid.WAVE_MIN - 750 * grid.WAVE_STEP
#: Last pixel of the observed-frame model grid (Angstrom).
MODEL_WAVE_MAX = 11200.0

# Nebular lines present in the templates (vacuum Angstrom) whose windows are cleaned.
_TEMPLATE_LINES = (1216.0, 1549.0, 1640.0, 1909.0, 2326.0, 2800.0, 3346.0, 3426.0, 3727.0,
                   3869.0, 3889.0, 3970.0, 4102.0, 4341.0, 4363.0, 4686.0, 4862.0, 4960.0,
                   5008.0, 5756.0, 5877.0, 6302.0, 6312.0, 6365.0, 6549.0, 6564.0, 6585.0,
                   6680.0, 6718.0, 6733.0, 7067.0, 7137.0, 7322.0, 7332.0, 7753.0, 9071.0,
                   9533.0, 10052.0, 10833.0, 10941.0, 12822.0, 18756.0, 19451.0, 21661.0)
# Half width of a cleaned window, relative to the wavelength (template resolution R ~ 1100).
_HALF_WIDTH = 0.0045


def model_wavelength():
    """Pixel centres of the observed-frame model grid (Angstrom).

    The grid has the DESI pixel size and is aligned with `astroclip.inputs.grid.WAVELENGTH`
    (``model_wavelength()[desi_slice()]`` is the DESI grid); it extends to the red and blue
    edges of the DECam g, r, z filter curves so that photometry is integrated over the same
    model spectrum as the DESI spectrum.

    Examples
    --------
    >>> from astroclip.simulate.templates import model_wavelength, desi_slice
    >>> from astroclip.inputs import grid
    >>> wave = model_wavelength()
    >>> bool((wave[desi_slice()] == grid.WAVELENGTH).all())
    True
    """
    n = int(round((MODEL_WAVE_MAX - MODEL_WAVE_MIN) / grid.WAVE_STEP)) + 1
    first = -int(round((grid.WAVE_MIN - MODEL_WAVE_MIN) / grid.WAVE_STEP))
    # same formula as the DESI grid, so that the shared pixels are bit-identical
    return grid.WAVE_MIN + grid.WAVE_STEP * np.arange(first, first + n, dtype=np.float64)


def desi_slice():
    """Slice of `model_wavelength` that is the DESI grid."""
    start = int(round((grid.WAVE_MIN - MODEL_WAVE_MIN) / grid.WAVE_STEP))
    return slice(start, start + grid.N_PIXELS)


class Templates:
    """The kcorrect templates, emission lines removed, on a log-wavelength rest grid.

    Attributes
    ----------
    log_wave0, dlog_wave : float
        ``ln(wave) = log_wave0 + dlog_wave * index`` on the rest grid.
    wave : ndarray (n_wave,)
        Rest wavelengths (Angstrom).
    flux : ndarray (5, n_wave)
        Continuum flux at 10 pc per solar mass formed (erg/s/cm2/Angstrom).
    flux_with_lines : ndarray (5, n_wave)
        The original templates (with their own emission lines).
    mremain, m300, m1000, mets : ndarray (5,)
        Surviving stellar mass fraction, mass fractions formed in the last 300 Myr and
        1 Gyr, stellar metallicity (mass fraction of metals).
    age_order : ndarray (5,)
        Template indices from the oldest to the youngest population (by ``m1000``).
    """

    def __init__(self, wave, flux, flux_with_lines, mremain, m300, m1000, mets):
        self.wave = wave
        self.flux = flux
        self.flux_with_lines = flux_with_lines
        self.mremain = mremain
        self.m300 = m300
        self.m1000 = m1000
        self.mets = mets
        self.log_wave0 = float(np.log(wave[0]))
        self.dlog_wave = float(np.log(wave[-1] / wave[0]) / (wave.size - 1))
        self.age_order = np.argsort(m1000, kind="stable")
        self.n_templates = flux.shape[0]

    def observed(self, coeffs, redshift, wave_obs):
        """Observed-frame flux density of template combinations (before distance dimming).

        Parameters
        ----------
        coeffs : ndarray (n, 5)
            Solar masses formed in each template.
        redshift : ndarray (n,)
        wave_obs : ndarray (m,)
            Observed wavelengths (Angstrom).

        Returns
        -------
        ndarray (n, m)
            ``sum_k coeffs_k T_k(wave_obs / (1 + z)) / (1 + z)`` in erg/s/cm2/Angstrom at 10 pc.
        """
        return self.observed_many([coeffs], redshift, wave_obs)[0]

    def observed_many(self, coeff_sets, redshift, wave_obs):
        """`observed` for several coefficient arrays sharing the redshifts (one gather)."""
        coeff_sets = [np.atleast_2d(c) for c in coeff_sets]
        redshift = np.atleast_1d(redshift).astype(np.float64)
        n, nw = redshift.size, self.wave.size
        pos = (np.log(wave_obs)[None, :] - np.log1p(redshift)[:, None] - self.log_wave0) \
            / self.dlog_wave
        if pos.min() < 0 or pos.max() > nw - 1:
            raise ValueError("the observed wavelengths fall outside the template range at "
                             f"z={redshift.min():.3g}..{redshift.max():.3g}")
        i0 = np.minimum(pos.astype(np.intp), nw - 2)
        w = pos - i0
        # only the rest-frame pixels these redshifts need (same values whatever the batch)
        lo, hi = int(i0.min()), int(i0.max()) + 2
        width = hi - lo
        i0 += (np.arange(n) * width)[:, None] - lo
        templates = self.flux[:, lo:hi]
        out = []
        for coeffs in coeff_sets:
            c = coeffs / (1.0 + redshift)[:, None]
            # explicit sum over templates (no BLAS): a galaxy does not depend on the batch
            rest = c[:, :1] * templates[0]
            for k in range(1, self.n_templates):
                rest += c[:, k:k + 1] * templates[k]
            flat = rest.reshape(-1)
            lo_v = flat[i0]
            hi_v = flat[i0 + 1]
            hi_v -= lo_v
            hi_v *= w
            hi_v += lo_v
            out.append(hi_v)
        return out


def _clean_lines(wave, flux):
    """Remove emission lines from templates that have them (see module docstring)."""
    flux = flux.copy()
    n_t = flux.shape[0]
    # templates with emission: H-alpha peak well above the interpolated continuum
    has_lines = np.zeros(n_t, dtype=bool)
    windows = []
    for lam in _TEMPLATE_LINES:
        lo, hi = lam * (1 - _HALF_WIDTH), lam * (1 + _HALF_WIDTH)
        if windows and lo <= windows[-1][1]:
            windows[-1][1] = hi
        else:
            windows.append([lo, hi])
    ha = np.searchsorted(wave, 6564.0)
    for k in range(n_t):
        cont = 0.5 * (flux[k, ha - 12] + flux[k, ha + 12])
        has_lines[k] = flux[k, ha - 2:ha + 3].max() > 1.1 * cont
    clean = np.flatnonzero(~has_lines)
    for lo, hi in windows:
        i0, i1 = np.searchsorted(wave, [lo, hi])
        if i0 < 3 or i1 > wave.size - 4:
            continue
        sel = slice(i0, i1)
        x = np.log(wave[sel])
        xa, xb = np.log(wave[i0 - 1]), np.log(wave[i1])
        t = (x - xa) / (xb - xa)

        def straight(f):
            a = f[..., i0 - 3:i0].mean(axis=-1)
            b = f[..., i1:i1 + 3].mean(axis=-1)
            return a[..., None] + t * (b - a)[..., None]

        if clean.size:
            shape = np.exp(np.mean(np.log(flux[clean][:, sel] / straight(flux[clean])), axis=0))
        else:  # pragma: no cover - the kcorrect set has emission-free templates
            shape = 1.0
        for k in np.flatnonzero(has_lines):
            flux[k, sel] = straight(flux[k]) * shape
    return flux


def kcorrect_data_dir():
    """Directory of the installed kcorrect package (found without importing it: slow)."""
    import importlib.util

    spec = importlib.util.find_spec("kcorrect")
    if spec is None or not spec.submodule_search_locations:
        raise OptionalDependencyError(
            "the mock survey needs the optional package 'kcorrect' for its galaxy templates "
            f"and SDSS galaxy table; install it with: {install_hint('kcorrect')}")
    return list(spec.submodule_search_locations)[0]


@functools.lru_cache(maxsize=1)
def load_templates():
    """The kcorrect templates with their emission lines removed (cached).

    Returns
    -------
    Templates

    Examples
    --------
    >>> from astroclip.simulate.templates import load_templates
    >>> t = load_templates()
    >>> t.flux.shape[0], round(float(t.mremain.max()), 3)
    (5, 0.942)
    """
    from astropy.io import fits

    path = os.path.join(kcorrect_data_dir(), TEMPLATE_FILE)
    if not os.path.exists(path):  # pragma: no cover
        raise FileNotFoundError(f"kcorrect template file {path} is missing; reinstall kcorrect")
    with fits.open(path) as hdul:
        wave = np.asarray(hdul["FLUX"].data["wave"][0], dtype=np.float64)
        flux = np.asarray(hdul["FLUX"].data["flux"][0], dtype=np.float64)
        extra = {name.lower(): np.asarray(hdul[name].data, dtype=np.float64)
                 for name in ("MREMAIN", "M300", "M1000", "METS")}
    keep = (wave >= REST_WAVE_MIN / 1.01) & (wave <= REST_WAVE_MAX * 1.01)
    wave, flux = wave[keep], flux[:, keep]
    cleaned = _clean_lines(wave, flux)
    return Templates(wave, cleaned, flux, extra["mremain"], extra["m300"], extra["m1000"],
                     extra["mets"])
