"""Comparison samples for the realism checks: real galaxies and mock galaxies selected like them.

Photometry: the real galaxies are kcorrect's SDSS x 2MASS test table
(`astroclip.simulate.population.read_sdss_sample`); the mock comparison sample is
drawn from the simulator and selected with the same limits (SDSS Petrosian r <
17.77 and 2MASS Ks < 14.2), with its g - r colour measured through the SDSS
filter curves, so the two redshift and colour distributions can be compared
directly (KS statistic, figures of `astroclip.plotting.survey`).

Spectra: real DESI data shipped with the ``fastspecfit`` package (installed with
astroclip's ``test`` and ``docs`` extras, never imported): a rest-frame stack of
five DESI luminous red galaxies (`real_lrg_stack`) and two DESI coadds with their
redrock redshifts (`real_desi_galaxies`).  `mock_quiescent_stack` stacks mock
quiescent galaxies of similar mass in the same way (`stack_spectra`), and
`mock_spectra_like` draws mock galaxies at the redshift, magnitude and exposure
time of a real one, so that spectral indices (`astroclip.simulate.indices`), line
widths (`emission_line_sigma`) and noise levels (`noise_level`) can be compared.
"""

import os

import numpy as np

from .._optional import install_hint
from ..exceptions import InputError, OptionalDependencyError

__all__ = ["real_sdss_sample", "mock_sdss_sample", "FASTSPECFIT_DATA",
           "fastspecfit_data_dir", "real_lrg_stack", "real_desi_galaxies", "stack_spectra",
           "mock_quiescent_stack", "mock_spectra_like", "emission_line_sigma", "noise_level",
           "continuum_normalise", "STACK_INDICES"]

#: Real DESI test data of fastspecfit (relative to the fastspecfit package).
FASTSPECFIT_DATA = os.path.join("test", "data")
_LRG_STACK = "stack-LRG.fits"
_COADDS = (("coadd-4-80613-thru20210324.fits", "redrock-4-80613-thru20210324.fits"),
           ("coadd-special-dark-27247.fits", "redrock-special-dark-27247.fits"))
# effective exposure time (s) per unit of TSNR2_LRG (desispec's EFFTIME_SPEC, dark time)
_EFFTIME_PER_TSNR2_LRG = 12.15
#: The indices compared between the mock and the real LRG stack (`real_lrg_stack`).
STACK_INDICES = ("Dn4000", "HdeltaA", "Mgb", "Fe5270", "NaD", "CaHK")


def real_sdss_sample():
    """The real SDSS main-sample galaxies of the population (fitted, with weights).

    Returns
    -------
    `~astropy.table.Table`
        ``Z``, ``G_R`` (SDSS g - r, extinction corrected, AB), ``R_PETRO`` and
        ``LOG_MSTAR`` (from the template fit), ``WEIGHT`` (1/Vmax).
    """
    from astropy.table import Table

    from .population import population_model

    pop = population_model()
    flux = pop.sdss_maggies
    out = Table()
    out["Z"] = pop.z
    out["G_R"] = -2.5 * np.log10(flux[:, 1] / flux[:, 2])
    out["R_PETRO"] = pop.sdss_petro_r
    out["LOG_MSTAR"] = pop.log_mstar
    out["WEIGHT"] = pop.weight
    return out


def mock_sdss_sample(n, *, seed=0):
    """Mock galaxies selected like the real SDSS sample (about half of ``n`` survive).

    Galaxies are drawn to DECam r < 18.3, then kept if their SDSS Petrosian r (model
    SDSS r plus the Petrosian-minus-model offset of the real galaxy they were drawn
    from) is below 17.77 and their 2MASS Ks (the real galaxy's, shifted by the
    model's change) is below 14.2.

    Returns
    -------
    `~astropy.table.Table`
        ``Z``, ``G_R`` (SDSS g - r, without Milky Way extinction), ``R_PETRO``,
        ``LOG_MSTAR`` (true).
    """
    from astropy.table import Table

    from .photometry import synthetic_nanomaggies
    from .population import (SDSS_R_LIMIT, TWOMASS_K_LIMIT, _interp_z, _mag,
                             draw_population, galaxy_rngs, population_model)
    from .photometry import template_photometry_table
    from .population import _TABLE_STEP, _TABLE_ZMAX
    from .spectra import model_spectra

    pop = population_model()
    parts = []
    for start in range(0, n, 256):
        rngs = galaxy_rngs(seed, range(start, min(start + 256, n)))
        p = draw_population(rngs, zmin=0.0, zmax=0.6, rmin=-np.inf, rmax=18.3)
        bulge, disc, emission = model_spectra(p, milky_way=False)
        sdss = synthetic_nanomaggies(bulge + disc + emission,
                                     names=("sdss2010-g", "sdss2010-r"))
        row = np.searchsorted(pop.index, p["parent"])
        r_petro = _mag(sdss[:, 1]) + pop.dpetro[row]
        _, k_tab = template_photometry_table(("twomass-Ks",), _TABLE_ZMAX, _TABLE_STEP)
        k_model = _mag(np.einsum("nk,nk->n", _interp_z(pop.z_grid, k_tab[:, 0, :], p["z"]),
                                 p["coeffs"]))
        k_mag = pop.k_obs[row] + k_model - pop.k_own[row]
        keep = (r_petro < SDSS_R_LIMIT) & (k_mag < TWOMASS_K_LIMIT)
        t = Table()
        t["Z"] = p["z"][keep]
        t["G_R"] = -2.5 * np.log10(sdss[keep, 0] / sdss[keep, 1])
        t["R_PETRO"] = r_petro[keep]
        t["LOG_MSTAR"] = p["log_mstar"][keep]
        parts.append(t)
    from astropy.table import vstack

    return vstack(parts)


# -- real DESI spectra (fastspecfit's test data) and mock samples matched to them --------
def fastspecfit_data_dir():
    """Directory of the real DESI test data shipped with fastspecfit (not imported).

    Raises
    ------
    OptionalDependencyError
        fastspecfit is not installed (it comes with astroclip's ``test`` and ``docs``
        extras).
    """
    import importlib.util

    spec = importlib.util.find_spec("fastspecfit")
    if spec is None or not spec.submodule_search_locations:
        raise OptionalDependencyError(
            "the comparison with real DESI spectra reads the test data shipped with the "
            "optional package 'fastspecfit', which is not installed; install it with: "
            f"{install_hint('fastspecfit')}")
    path = os.path.join(list(spec.submodule_search_locations)[0], FASTSPECFIT_DATA)
    if not os.path.exists(os.path.join(path, _LRG_STACK)):
        from ..exceptions import DataFileError

        raise DataFileError(f"the fastspecfit test data are not in {path}; reinstall "
                            "fastspecfit (pip install --force-reinstall fastspecfit)")
    return path


def real_lrg_stack():
    """The real rest-frame stack of five DESI luminous red galaxies shipped with fastspecfit.

    Returns
    -------
    dict
        ``wave`` (rest-frame vacuum Angstrom, 0.4 A pixels, 2487-6974 A), ``flux`` and
        ``ivar`` (normalised flux density), ``z_median`` (0.43), ``n_objects`` (5),
        ``path``.
    """
    from astropy.io import fits

    path = os.path.join(fastspecfit_data_dir(), _LRG_STACK)
    with fits.open(path) as hdul:
        info = hdul["STACKINFO"].data
        return {"wave": np.asarray(hdul["WAVE"].data, dtype=np.float64),
                "flux": np.asarray(hdul["FLUX"].data[0], dtype=np.float64),
                "ivar": np.asarray(hdul["IVAR"].data[0], dtype=np.float64),
                "z_median": float(info["ZMED"][0]), "n_objects": int(info["NOBJ"][0]),
                "path": path}


def real_desi_galaxies():
    """The real DESI galaxy coadds shipped with fastspecfit, with their redrock redshifts.

    Returns
    -------
    list of dict
        One per galaxy (``SPECTYPE == "GALAXY"``, ``ZWARN == 0``): ``targetid``, ``z``,
        ``flux`` and ``ivar`` on the DESI grid (`astroclip.inputs.grid.WAVELENGTH`),
        ``exptime`` (``COADD_EXPTIME``, s, the sum of the exposure times), ``efftime``
        (the effective exposure time, ``EFFTIME_SPEC = 12.15 TSNR2_LRG`` as in desispec's
        redshift catalogues: the depth actually reached, which the mock's ``exptime``
        means), ``flux_r`` and ``fiberflux_r`` (Legacy Survey, nanomaggies, 0 when the
        target has none), ``ebv`` and ``file``.
    """
    import warnings

    from astropy.io import fits

    from ..inputs.desi import join_redshifts, read_desi_coadd

    base = fastspecfit_data_dir()
    out = []
    for coadd, redrock in _COADDS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            spectra = join_redshifts(read_desi_coadd(os.path.join(base, coadd)),
                                     os.path.join(base, redrock))
        with fits.open(os.path.join(base, redrock)) as hdul:
            tsnr = dict(zip(np.asarray(hdul["TSNR2"].data["TARGETID"]).tolist(),
                            np.asarray(hdul["TSNR2"].data["TSNR2_LRG"], dtype=np.float64)))
        meta = spectra.meta
        for i in range(len(meta)):
            if not (meta["HAS_REDSHIFT"][i] and meta["ZWARN"][i] == 0
                    and str(meta["SPECTYPE"][i]).strip() == "GALAXY"):
                continue
            out.append({"targetid": int(meta["TARGETID"][i]), "z": float(meta["Z"][i]),
                        "flux": np.asarray(spectra.flux[i], dtype=np.float64),
                        "ivar": np.asarray(spectra.ivar[i], dtype=np.float64),
                        "exptime": float(meta["COADD_EXPTIME"][i]),
                        "efftime": _EFFTIME_PER_TSNR2_LRG * tsnr[int(meta["TARGETID"][i])],
                        "flux_r": float(meta["FLUX_R"][i]),
                        "fiberflux_r": float(meta["FIBERFLUX_R"][i]),
                        "ebv": float(meta["EBV"][i]), "file": coadd})
    return out


def stack_spectra(wavelength, flux, ivar, redshift, *, out_wave, norm_window=(5000.0, 5200.0)):
    """Rest-frame stack of spectra: de-redshifted, resampled, normalised and averaged.

    Each spectrum is moved to the rest frame (``lambda / (1 + z)``, flux density times
    ``1 + z``), resampled onto ``out_wave`` conserving flux
    (`astroclip.inputs.spectra.resample_flux_conserving`), divided by its median in
    ``norm_window``, and the stack is the mean of the valid pixels (``ivar > 0``), with
    the inverse variance of that mean.

    Parameters
    ----------
    wavelength : array-like (n,)
        Observed wavelengths (Angstrom), shared by the spectra.
    flux, ivar : array-like (N, n)
    redshift : array-like (N,)
    out_wave : array-like (m,)
        Rest-frame pixel centres of the stack (Angstrom).
    norm_window : tuple of 2 floats, optional
        Rest-frame range (Angstrom) of the normalisation.

    Returns
    -------
    flux, ivar : ndarray (m,)
        The stack; pixels no spectrum covers get flux 0 and ivar 0.

    Examples
    --------
    >>> import numpy as np
    >>> from astroclip.simulate.validation import stack_spectra
    >>> wave = np.arange(3600.0, 9000.0, 0.8)
    >>> flux = np.full((2, wave.size), 2.0); ivar = np.ones_like(flux)
    >>> f, iv = stack_spectra(wave, flux, ivar, [0.2, 0.4], out_wave=np.arange(4000., 6000.))
    >>> bool(np.allclose(f[(f > 0)], 1.0))
    True
    """
    from ..inputs.resample import edges_from_centres, resample_flux_conserving

    wave = np.asarray(wavelength, dtype=np.float64)
    flux = np.atleast_2d(np.asarray(flux, dtype=np.float64))
    ivar = np.atleast_2d(np.asarray(ivar, dtype=np.float64))
    z = np.asarray(redshift, dtype=np.float64).reshape(-1)
    if flux.shape != ivar.shape or flux.shape[0] != z.size or flux.shape[1] != wave.size:
        raise InputError(f"stack_spectra needs flux and ivar of shape (N, {wave.size}) and N "
                         f"redshifts; got {flux.shape}, {ivar.shape} and {z.size}")
    out_wave = np.asarray(out_wave, dtype=np.float64)
    edges = edges_from_centres(out_wave)
    norm_sel = (out_wave >= norm_window[0]) & (out_wave <= norm_window[1])
    total = np.zeros(out_wave.size)
    var = np.zeros(out_wave.size)
    count = np.zeros(out_wave.size)
    for i in range(z.size):
        f, iv = resample_flux_conserving(wave / (1 + z[i]), flux[i] * (1 + z[i]),
                                         ivar[i] / (1 + z[i]) ** 2, out_edges=edges)
        good = iv > 0
        ok = good & norm_sel
        if ok.sum() < 10:
            raise InputError(f"spectrum {i} (z = {z[i]:.3f}) does not cover the normalisation "
                             f"window {norm_window} A; choose another window")
        norm = np.median(f[ok])
        total[good] += f[good] / norm
        var[good] += 1.0 / (iv[good] / norm**2)
        count[good] += 1
    has = count > 0
    stack = np.where(has, total / np.maximum(count, 1), 0.0)
    stack_ivar = np.where(has, count**2 / np.where(has, var, 1.0), 0.0)
    return stack, stack_ivar


def mock_quiescent_stack(n=100, *, seed=0, zmin=0.35, zmax=0.5, log_mstar=(11.0, 11.6),
                         max_log_ssfr=-11.0, rmax=21.0, exptime=1000.0, out_wave=None,
                         continuum="auto"):
    """Stack of ``n`` mock quiescent galaxies of LRG-like mass, stacked like `real_lrg_stack`.

    Mock galaxies of the survey with the given limits (DESI dark-time exposures) are kept
    when their true stellar mass is in ``log_mstar`` and their sSFR below
    ``10**max_log_ssfr``; their observed DESI spectra (noise included) are stacked with
    `stack_spectra`.

    Returns
    -------
    dict
        ``wave``, ``flux``, ``ivar`` (the stack), ``truth`` (`~astropy.table.Table` of the
        stacked galaxies: ``Z``, ``LOG_MSTAR_TRUE``, ``LOG_SSFR``, ``SIGMA_STAR`` ...),
        ``n_objects``.
    """
    from astropy.table import Table

    from .population import draw_population, galaxy_rngs
    from .survey import SurveyConfig, _generate

    config = SurveyConfig(seed=seed, zmin=zmin, zmax=zmax, rmax=rmax, exptime=exptime,
                          continuum=continuum, neighbours=0.0)
    chosen = []
    start = 0
    while len(chosen) < n:
        if start > 200 * max(n, 100):
            raise InputError(f"fewer than {n} mock galaxies have {log_mstar[0]} < log M* < "
                             f"{log_mstar[1]} and log sSFR < {max_log_ssfr} at {zmin} < z < "
                             f"{zmax}, r < {rmax}; widen the selection")
        idx = np.arange(start, start + 2048)
        pop = draw_population(galaxy_rngs(seed, idx), **config.limits,
                              continuum=config.continuum)
        keep = (pop["log_mstar"] > log_mstar[0]) & (pop["log_mstar"] < log_mstar[1]) \
            & (np.log10(pop["ssfr"]) < max_log_ssfr)
        chosen.extend(idx[keep].tolist())
        start += idx.size
    chosen = np.array(chosen[:n])
    arrays, cols = _generate(config, 0, 0, index=chosen, images=False)
    if out_wave is None:
        out_wave = 2487.21525462 + 0.4 * np.arange(11217)      # the real stack's grid
    from ..inputs import grid

    flux, ivar = stack_spectra(grid.WAVELENGTH, arrays["flux"], arrays["ivar"], cols["Z"],
                               out_wave=out_wave)
    truth = Table({k: cols[k] for k in ("TARGETID", "Z", "LOG_MSTAR_TRUE", "LOG_SSFR", "Z_MW",
                                        "SIGMA_STAR", "FLUX_R")})
    return {"wave": np.asarray(out_wave), "flux": flux, "ivar": ivar, "truth": truth,
            "n_objects": int(chosen.size)}


def mock_spectra_like(redshift, rmag, *, n=200, seed=0, dz=0.02, dr=0.25, exptime=1000.0,
                      continuum="auto"):
    """Mock DESI spectra of galaxies at the redshift and r magnitude of a real galaxy.

    Parameters
    ----------
    redshift, rmag : float
        Redshift and extinction-corrected DECam r magnitude of the real galaxy.
    n : int, optional
    dz, dr : float, optional
        Half widths of the redshift and magnitude ranges drawn.
    exptime : float, optional
        Median effective exposure time (s): that of the real coadd.

    Returns
    -------
    flux, ivar : ndarray (n, 7781)
    truth : dict of ndarray
        The truth columns (`astroclip.simulate.survey.TRUTH_UNITS`).
    """
    from .survey import SurveyConfig, _generate

    config = SurveyConfig(seed=seed, zmin=max(redshift - dz, 0.0), zmax=redshift + dz,
                          rmin=rmag - dr, rmax=rmag + dr, exptime=exptime,
                          continuum=continuum, neighbours=0.0)
    arrays, cols = _generate(config, 0, n, images=False)
    return arrays["flux"], arrays["ivar"], cols


def emission_line_sigma(wavelength, flux, ivar, line_wave, redshift, *, half_window=12.0,
                        min_snr=5.0):
    """Observed Gaussian width (km/s, line-spread function included) of an emission line.

    A Gaussian plus a straight continuum is fitted (least squares, inverse-variance
    weights) within ``half_window`` rest-frame Angstrom of the line.

    Parameters
    ----------
    wavelength : array-like (n,)
        Observed vacuum wavelengths (Angstrom).
    flux, ivar : array-like (n,) or (N, n)
    line_wave : float
        Rest-frame vacuum wavelength of the line (Angstrom), e.g.
        ``astroclip.simulate.spectra.EMISSION_LINES["OIII_5007"]``.
    redshift : float or array-like (N,)
    half_window : float, optional
    min_snr : float, optional
        Lines whose fitted flux has a signal-to-noise below this give NaN.

    Returns
    -------
    ndarray (N,) or float
        Gaussian sigma in km/s (NaN where the line is too weak, outside the spectrum, or
        the fit fails).

    Examples
    --------
    >>> import numpy as np
    >>> from astroclip.simulate.validation import emission_line_sigma
    >>> wave = np.arange(5000.0, 5100.0, 0.8)
    >>> sig = 5050.0 * 100.0 / 299792.458                     # 100 km/s at 5050 A
    >>> flux = 1 + 20 * np.exp(-0.5 * ((wave - 5050.0) / sig) ** 2)
    >>> round(float(emission_line_sigma(wave, flux, np.full(wave.size, 100.0), 5050.0, 0.0)))
    100
    """
    from scipy.optimize import curve_fit

    c_kms = 299792.458
    wave = np.asarray(wavelength, dtype=np.float64)
    single = np.ndim(flux) == 1
    flux = np.atleast_2d(np.asarray(flux, dtype=np.float64))
    ivar = np.atleast_2d(np.asarray(ivar, dtype=np.float64))
    z = np.broadcast_to(np.asarray(redshift, dtype=np.float64), (flux.shape[0],))
    out = np.full(flux.shape[0], np.nan)

    def model(x, amp, mu, sig, a, b):
        return amp * np.exp(-0.5 * ((x - mu) / sig) ** 2) + a + b * x

    for i in range(flux.shape[0]):
        centre = line_wave * (1 + z[i])
        sel = (np.abs(wave - centre) < half_window * (1 + z[i])) & (ivar[i] > 0)
        if sel.sum() < 12:
            continue
        x, y, w = wave[sel] - centre, flux[i, sel], ivar[i, sel]
        cont = np.median(y)
        core = np.abs(x) < 4.0 * (1 + z[i])
        excess = np.sum(y[core] - cont) / np.sqrt(np.sum(1 / w[core]))
        if excess < 0.5 * min_snr:        # no line worth fitting
            continue
        amp0 = max(y.max() - cont, 1e-3 * max(abs(cont), 1e-3))
        try:
            p, cov = curve_fit(model, x, y, p0=(amp0, 0.0, 1.5, cont, 0.0),
                               sigma=1 / np.sqrt(w), absolute_sigma=True,
                               bounds=([0, -3, 0.2, -np.inf, -np.inf],
                                       [np.inf, 3, 15, np.inf, np.inf]), maxfev=4000)
        except (RuntimeError, ValueError):
            continue
        line_flux = p[0] * p[2] * np.sqrt(2 * np.pi)
        err = np.sqrt(max(cov[0, 0], 0)) * p[2] * np.sqrt(2 * np.pi)
        if err > 0 and line_flux / err >= min_snr:
            out[i] = c_kms * p[2] / centre
    return out[0] if single else out


_ARM_WINDOWS = ((4000.0, 5500.0), (6000.0, 7500.0), (8000.0, 9500.0))


def noise_level(flux, ivar, *, wavelength=None, windows=_ARM_WINDOWS):
    """Median per-pixel noise (1 / sqrt(ivar), flux units) in observed-frame windows.

    Parameters
    ----------
    flux, ivar : array-like (N, n) or (n,)
        Spectra on ``wavelength`` (the DESI grid by default); ``flux`` is only used for
        its shape.
    windows : sequence of (lo, hi)
        Observed wavelength ranges (Angstrom): by default the three DESI arms.

    Returns
    -------
    ndarray (N, n_windows) or (n_windows,)
    """
    from ..inputs import grid

    wave = grid.WAVELENGTH if wavelength is None else np.asarray(wavelength, dtype=np.float64)
    ivar = np.asarray(ivar, dtype=np.float64)
    single = ivar.ndim == 1
    ivar = np.atleast_2d(ivar)
    if np.shape(np.atleast_2d(flux)) != ivar.shape or ivar.shape[1] != wave.size:
        raise InputError("noise_level needs flux and ivar of the same shape, one value per "
                         "wavelength")
    out = np.full((ivar.shape[0], len(windows)), np.nan)
    for j, (lo, hi) in enumerate(windows):
        sel = (wave >= lo) & (wave <= hi)
        with np.errstate(divide="ignore"):
            sigma = np.where(ivar[:, sel] > 0, 1 / np.sqrt(np.where(ivar[:, sel] > 0,
                                                                    ivar[:, sel], 1.0)), np.nan)
        out[:, j] = np.nanmedian(sigma, axis=1)
    return out[0] if single else out


def continuum_normalise(flux, ivar, *, width=151):
    """Spectrum divided by its running median continuum (masked pixels NaN).

    Parameters
    ----------
    flux, ivar : array-like (n,)
    width : int, optional
        Width (pixels, odd) of the running median over the valid pixels (151 DESI pixels
        = 120 A, wider than the absorption features).

    Returns
    -------
    ndarray (n,)

    Examples
    --------
    >>> import numpy as np
    >>> from astroclip.simulate.validation import continuum_normalise
    >>> out = continuum_normalise(np.full(500, 3.0), np.ones(500))
    >>> bool(np.allclose(out, 1.0))
    True
    """
    from scipy.ndimage import median_filter

    flux = np.asarray(flux, dtype=np.float64)
    good = np.asarray(ivar) > 0
    out = np.full(flux.shape, np.nan)
    if good.sum() < width:
        return out
    cont = median_filter(flux[good], size=width, mode="nearest")
    with np.errstate(divide="ignore", invalid="ignore"):
        out[good] = np.where(cont > 0, flux[good] / cont, np.nan)
    return out
