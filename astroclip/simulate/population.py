"""The galaxy population of the mock survey, resampled from 10,000 real SDSS galaxies.

The population is built once per process (`population_model`):

1. the 10,000 SDSS main-sample galaxies shipped with `kcorrect`
   (``kcorrect/data/test/gst_tests_small.fits``: ugriz model fluxes, Galactic
   extinction, spectroscopic redshifts) are fitted with non-negative combinations
   of the five kcorrect templates (NNLS on the extinction-corrected AB fluxes), which
   gives each galaxy a spectral energy distribution, a stellar mass, a recent
   star-formation rate and a stellar metallicity;
2. each galaxy gets the 1/Vmax volume weight of the selection of that table
   (SDSS Petrosian r < 17.77 and a 2MASS Ks detection, Ks < 14.4 Vega: the table is
   the SDSS x 2MASS x GALEX test set of kcorrect) from its own fitted SED;
3. for a survey with limits (zmin, zmax, rmin, rmax) in DECam r, galaxy i is
   drawn with probability proportional to ``V_i / Vmax_i``, where ``V_i`` is the
   comoving volume in which it would pass the survey limits, and placed at a
   redshift uniform in comoving volume within that range.  With the default
   limits (0 < z < 0.6, r < 19.5) this gives a Bright-Galaxy-Survey-like sample
   from the real local luminosity function and SED mix;
4. small jitter (0.08 dex in mass, 0.1 dex on each template weight) makes every
   draw a new galaxy; draws that leave the magnitude limits are redrawn.

The remaining properties are drawn from published scaling relations, given the
stellar mass and star-formation rate: gas metallicity (Tremonti et al. 2004),
Balmer attenuation of the lines (Garn & Best 2010), disc and bulge sizes (Shen
et al. 2003 size-mass relations of late and early types), bulge-to-total mass
fraction (higher for quenched galaxies), random inclination and position angle,
gas velocity dispersion and rotation (Reyes et al. 2011 Tully-Fisher relation),
stellar velocity dispersion of the bulge (the stellar mass - central velocity
dispersion relation of Zahid et al. 2016, 0.08 dex scatter) and of the disc
(random motions of 0.3 v_rot plus the rotation seen through the fibre).

Every galaxy ``i`` of a survey with seed ``s`` is drawn from its own random stream
``numpy.random.default_rng([s, i])``, so a galaxy does not depend on the others:
chunks and workers reproduce the same bytes, and a torch Dataset can build item
``i`` on demand.
"""

import functools
import os

import numpy as np

from ..exceptions import InputError
from .photometry import DECAM_FILTERS, SDSS_FILTERS, template_photometry_table
from .templates import kcorrect_data_dir, load_templates

__all__ = ["SDSS_TEST_FILE", "SDSS_R_LIMIT", "population_model", "PopulationModel",
           "galaxy_rngs", "draw_population", "read_sdss_sample", "cosmology_tables", "nnls_batch",
           "zahid_sigma"]

#: kcorrect's table of 10,000 real SDSS galaxies (relative to the kcorrect package).
SDSS_TEST_FILE = os.path.join("data", "test", "gst_tests_small.fits")
#: Petrosian r limit of the SDSS main galaxy sample.
SDSS_R_LIMIT = 17.77
#: Effective 2MASS Ks (Vega, K_M_EXT) limit of the kcorrect test table (all rows are detected).
TWOMASS_K_LIMIT = 14.2
# SDSS -> AB offsets (u_AB = u_SDSS - 0.04, z_AB = z_SDSS + 0.02)
_SDSS_AB_OFFSET = np.array([-0.04, 0.0, 0.0, 0.0, 0.02])
# fractional error floor of the SED fit, per band
_FIT_FLOOR = np.array([0.05, 0.02, 0.02, 0.02, 0.03])
_SDSS_ZMIN = 0.01
_TABLE_ZMAX = 1.0
_TABLE_STEP = 0.005
#: jitter of a resampled galaxy: overall log mass, log weight of each template (dex)
MASS_JITTER_DEX = 0.08
TEMPLATE_JITTER_DEX = 0.10
_MAX_ATTEMPTS = 200
#: Milky Way reddening E(B-V) along the line of sight: lognormal median and ln scatter
#: (typical of the high-latitude DESI footprint in the SFD maps).
MW_EBV_MEDIAN = 0.035
MW_EBV_SCATTER = 0.6
#: Log-normal scatter (dex) of the stellar velocity dispersion at fixed stellar mass.
SIGMA_STAR_SCATTER_DEX = 0.08


def galaxy_rngs(seed, indices):
    """The independent random stream of each galaxy (seed, index).

    Examples
    --------
    >>> from astroclip.simulate.population import galaxy_rngs
    >>> a, = galaxy_rngs(0, [5]); b, = galaxy_rngs(0, [5])
    >>> bool(a.random() == b.random())
    True
    """
    return [np.random.default_rng([int(seed), int(i)]) for i in indices]


@functools.lru_cache(maxsize=1)
def cosmology_tables():
    """Planck18 distances on a fine redshift grid (z, D_L [Mpc], D_A [Mpc], V_c [Mpc^3])."""
    from astropy.cosmology import Planck18

    z = np.linspace(0.0, _TABLE_ZMAX, 5001)
    dc = Planck18.comoving_distance(z).to_value("Mpc")
    dl = dc * (1 + z)
    da = dc / (1 + z)
    vol = 4.0 / 3.0 * np.pi * dc**3
    return z, dl, da, vol


def _interp_tables(z):
    zt, dl, da, vol = cosmology_tables()
    return np.interp(z, zt, dl), np.interp(z, zt, da), np.interp(z, zt, vol)


def read_sdss_sample():
    """The real SDSS galaxies shipped with kcorrect, as an astropy Table.

    Columns used: ``Z``, ``MODELFLUX``/``MODELFLUX_IVAR``/``PETROFLUX`` (nanomaggies,
    u, g, r, i, z) and ``EXTINCTION`` (mag).

    Examples
    --------
    >>> from astroclip.simulate.population import read_sdss_sample
    >>> len(read_sdss_sample())
    10000
    """
    from astropy.table import Table

    path = os.path.join(kcorrect_data_dir(), SDSS_TEST_FILE)
    if not os.path.exists(path):  # pragma: no cover
        raise FileNotFoundError(f"kcorrect's SDSS test table {path} is missing; reinstall "
                                "kcorrect")
    return Table.read(path)


class PopulationModel:
    """The SDSS galaxies with their fitted SEDs and volume weights (see module docstring).

    Attributes
    ----------
    coeffs : ndarray (n, 5)
        Solar masses formed in each template.
    z : ndarray (n,)
        SDSS redshifts.
    log_mstar, sfr, weight : ndarray (n,)
        Stellar mass, template star-formation rate (Msun/yr, 300 Myr average) and 1/Vmax.
    sdss_maggies : ndarray (n, 5)
        Extinction-corrected AB nanomaggies of the galaxies (ugriz).
    z_grid : ndarray (n_z,)
    decam_r_grid : ndarray (n, n_z)
        DECam r magnitude of each fitted SED versus redshift (continuum).
    """

    def __init__(self):
        t = load_templates()
        sample = read_sdss_sample()
        z = np.asarray(sample["Z"], dtype=np.float64)
        ext = np.asarray(sample["EXTINCTION"], dtype=np.float64)
        corr = 10 ** (0.4 * (ext - _SDSS_AB_OFFSET))
        flux = np.asarray(sample["MODELFLUX"], dtype=np.float64) * corr
        ivar = np.asarray(sample["MODELFLUX_IVAR"], dtype=np.float64) / corr**2
        petro_r = np.asarray(sample["PETROFLUX"], dtype=np.float64)[:, 2] * corr[:, 2]
        sigma = np.sqrt(np.where(ivar > 0, 1 / np.maximum(ivar, 1e-30), np.inf)
                        + (_FIT_FLOOR * np.abs(flux)) ** 2)

        zg, sdss_tab = template_photometry_table(SDSS_FILTERS, _TABLE_ZMAX, _TABLE_STEP)
        _, dec_tab = template_photometry_table(DECAM_FILTERS, _TABLE_ZMAX, _TABLE_STEP)
        good = (z > _SDSS_ZMIN) & (z < zg[-1]) & np.all(np.isfinite(flux), axis=1) \
            & (flux[:, 2] > 0) & (petro_r > 0) & np.all(np.isfinite(sigma), axis=1)
        idx = np.flatnonzero(good)
        # design matrices at each galaxy's redshift, in units of 1e10 Msun
        a = _interp_z(zg, sdss_tab, z[idx]) * 1e10                   # (n, 5 bands, 5 templ)
        s = sigma[idx]
        coeffs, chi2 = nnls_batch(a / s[:, :, None], flux[idx] / s)
        coeffs *= 1e10
        mstar = coeffs @ t.mremain
        model_r = np.einsum("nk,nk->n", a[:, 2, :], coeffs / 1e10)
        ok = (mstar > 0) & (model_r > 0) & (chi2 < 100)
        idx, coeffs, model_r = idx[ok], coeffs[ok], model_r[ok]
        z = z[idx]

        # SDSS selection volume: Petrosian r = model r + (petro - model offset of this galaxy)
        dpetro = -2.5 * np.log10(petro_r[idx] / model_r)
        r_sdss = _mag(np.einsum("zk,nk->nz", sdss_tab[:, 2, :], coeffs))    # (n, n_z)
        in_main = (-2.5 * np.log10(petro_r[idx]) + 22.5) <= SDSS_R_LIMIT
        zmax_sdss = _crossing(zg, r_sdss + dpetro[:, None], SDSS_R_LIMIT)
        # 2MASS Ks: observed magnitude shifted by the model's change with redshift
        _, k_tab = template_photometry_table(("twomass-Ks",), _TABLE_ZMAX, _TABLE_STEP)
        k_model = _mag(np.einsum("zk,nk->nz", k_tab[:, 0, :], coeffs))
        k_own = _mag(np.einsum("nk,nk->n", _interp_z(zg, k_tab[:, 0, :], z), coeffs))
        k_obs = np.asarray(sample["K_M_EXT"], dtype=np.float64)[idx]
        k_ok = np.isfinite(k_obs) & (k_obs > 0)
        zmax_k = np.where(k_ok, _crossing(zg, k_model + (k_obs - k_own)[:, None],
                                          TWOMASS_K_LIMIT), zg[-1])
        zmax_sdss = np.minimum(zmax_sdss, zmax_k)
        zmax_sdss = np.maximum(zmax_sdss, z)  # the galaxy is seen at its own z
        _, _, vol = _interp_tables(np.concatenate([[_SDSS_ZMIN], zmax_sdss]))
        vmax = vol[1:] - vol[0]
        keep = in_main & (vmax > 0)

        self.n_templates = t.n_templates
        self.index = idx[keep]
        self.coeffs = coeffs[keep]
        self.z = z[keep]
        self.log_mstar = np.log10(self.coeffs @ t.mremain)
        self.sfr = self.coeffs @ t.m300 / 3e8
        self.weight = 1.0 / vmax[keep]
        self.sdss_maggies = flux[self.index]
        self.sdss_petro_r = 22.5 - 2.5 * np.log10(petro_r[self.index])
        self.z_grid = zg
        self.decam_r_grid = _mag(np.einsum("zk,nk->nz", dec_tab[:, 1, :], self.coeffs))
        self.decam_tab = dec_tab
        self.k_obs = k_obs[keep]
        self.k_model_grid = k_model[keep]
        self.k_own = k_own[keep]
        self.dpetro = dpetro[keep]
        self.chi2 = chi2[ok][keep]

    def __len__(self):
        return self.coeffs.shape[0]

    def decam_table(self, continuum="kcorrect"):
        """DECam g, r, z nanomaggies per solar mass of each template versus `z_grid`.

        ``continuum="ssp"`` includes the high-resolution window
        (`astroclip.simulate.photometry.template_photometry_table`).
        """
        if continuum == "kcorrect":
            return self.decam_tab
        return template_photometry_table(DECAM_FILTERS, _TABLE_ZMAX, _TABLE_STEP,
                                         continuum=continuum)[1]

    def decam_na_table(self):
        """DECam g, r, z nanomaggies of the Na D absorption per solar mass of each template.

        (`astroclip.simulate.photometry._na_absorption_table`, versus `z_grid`.)
        """
        from .photometry import _na_absorption_table

        return _na_absorption_table(DECAM_FILTERS, _TABLE_ZMAX, _TABLE_STEP)[1]

    @functools.lru_cache(maxsize=8)
    def _r_grid(self, continuum):
        if continuum == "kcorrect":
            return self.decam_r_grid
        flux = np.einsum("zk,nk->nz", self.decam_table(continuum)[:, 1, :], self.coeffs)
        if continuum == "ssp":
            flux -= _na_dimming(self.coeffs, load_templates())[:, None] * np.einsum(
                "zk,nk->nz", self.decam_na_table()[:, 1, :], self.coeffs)
        return _mag(flux)

    @functools.lru_cache(maxsize=8)
    def selection(self, zmin, zmax, rmin, rmax, continuum="kcorrect"):
        """Parent probabilities and redshift ranges for survey limits (cached).

        ``continuum`` ("kcorrect" or "ssp") is the stellar continuum whose r magnitudes
        the limits apply to.

        Returns
        -------
        cdf : ndarray (n,)
            Cumulative parent probability.
        z_lo, z_hi : ndarray (n,)
            Redshift range where each parent passes the limits.
        """
        r_grid = self._r_grid(continuum)
        lo = np.full(len(self), float(zmin))
        hi = np.minimum(_crossing(self.z_grid, r_grid, rmax), zmax)
        if np.isfinite(rmin):
            lo = np.maximum(lo, _crossing(self.z_grid, r_grid, rmin))
        _, _, v_lo = _interp_tables(lo)
        _, _, v_hi = _interp_tables(np.maximum(hi, lo))
        p = self.weight * np.maximum(v_hi - v_lo, 0.0)
        if not np.any(p > 0):
            raise InputError(
                f"no galaxy of the population can satisfy {rmin} < r < {rmax} at "
                f"{zmin} < z < {zmax}; widen the magnitude or redshift limits")
        cdf = np.cumsum(p)
        cdf /= cdf[-1]
        return cdf, lo, np.maximum(hi, lo)


def nnls_batch(a, b):
    """Non-negative least squares for many small problems at once.

    Solves ``min ||a_i x - b_i||, x >= 0`` for each i by trying every subset of active
    columns (the solution is the best subset whose unconstrained solution is positive),
    which is exact and fast for a handful of columns.

    Parameters
    ----------
    a : ndarray (n, m, k)
    b : ndarray (n, m)

    Returns
    -------
    x : ndarray (n, k)
    chi2 : ndarray (n,)
        Squared residual norms.

    Examples
    --------
    >>> import numpy as np
    >>> from astroclip.simulate.population import nnls_batch
    >>> a = np.array([[[1.0, 0.0], [0.0, 1.0]]]); b = np.array([[2.0, -1.0]])
    >>> x, chi2 = nnls_batch(a, b)
    >>> np.round(x, 9).tolist(), np.round(chi2, 9).tolist()
    ([[2.0, 0.0]], [1.0])
    """
    import itertools

    n, m, k = a.shape
    best = np.full(n, np.inf)
    best[:] = np.einsum("nm,nm->n", b, b)   # the empty set
    x_best = np.zeros((n, k))
    ata = np.einsum("nmi,nmj->nij", a, a)
    atb = np.einsum("nmi,nm->ni", a, b)
    for size in range(1, k + 1):
        for cols in itertools.combinations(range(k), size):
            cols = list(cols)
            sub = ata[:, cols][:, :, cols] + 1e-12 * np.eye(size) * \
                np.trace(ata, axis1=1, axis2=2)[:, None, None]
            x = np.linalg.solve(sub, atb[:, cols][:, :, None])[:, :, 0]
            full = np.zeros((n, k))
            full[:, cols] = x
            res = b - np.einsum("nmk,nk->nm", a, full)
            chi2 = np.einsum("nm,nm->n", res, res)
            better = np.all(x > 0, axis=1) & (chi2 < best)
            best[better] = chi2[better]
            x_best[better] = full[better]
    return x_best, best


def _mag(nmgy):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(nmgy > 0, 22.5 - 2.5 * np.log10(np.maximum(nmgy, 1e-300)), np.inf)


def _interp_z(zg, table, z):
    """Linear interpolation of a (n_z, ...) table at redshifts z -> (n, ...)."""
    pos = np.clip((z - zg[1]) / (zg[2] - zg[1]) + 1, 0, zg.size - 1 - 1e-9)
    # the first grid step is uneven (1e-4 then multiples of step)
    pos = np.where(z < zg[1], (z - zg[0]) / (zg[1] - zg[0]), pos)
    pos = np.clip(pos, 0, zg.size - 1 - 1e-9)
    i0 = pos.astype(np.intp)
    w = (pos - i0).reshape((-1,) + (1,) * (table.ndim - 1))
    return table[i0] * (1 - w) + table[i0 + 1] * w


def _crossing(zg, mags, limit):
    """First redshift where each row of ``mags`` (increasing with z) reaches ``limit``."""
    mags = np.atleast_2d(mags)
    below = mags <= limit
    # number of leading grid points brighter than the limit (mags increase with z)
    n_in = np.argmin(below, axis=1)
    n_in = np.where(below.all(axis=1), zg.size, n_in)
    out = np.empty(mags.shape[0])
    none = n_in == 0
    full = n_in == zg.size
    mid = ~none & ~full
    j = n_in[mid]
    m0 = mags[mid, j - 1]
    m1 = mags[mid, j]
    f = np.clip((limit - m0) / np.where(m1 > m0, m1 - m0, 1.0), 0, 1)
    out[mid] = zg[j - 1] + f * (zg[j] - zg[j - 1])
    out[none] = 0.0
    out[full] = zg[-1]
    return out


@functools.lru_cache(maxsize=1)
def population_model():
    """The fitted SDSS population (built once per process, about a second).

    Examples
    --------
    >>> from astroclip.simulate.population import population_model
    >>> pop = population_model()
    >>> 8000 < len(pop) <= 10000
    True
    """
    return PopulationModel()


# -- scaling relations -------------------------------------------------------------
def tremonti_oh(log_mstar):
    """Gas-phase 12 + log(O/H) of the mass-metallicity relation (Tremonti et al. 2004)."""
    x = np.clip(log_mstar, 8.5, 11.5)
    return -1.492 + 1.847 * x - 0.08026 * x**2


def garn_best_aha(log_mstar):
    """H-alpha attenuation (mag) versus stellar mass (Garn & Best 2010)."""
    x = np.clip(log_mstar, 8.5, 11.5) - 10.0
    return 0.91 + 0.77 * x + 0.11 * x**2 - 0.09 * x**3


def shen_late_re_kpc(mstar):
    """Half-light radius (kpc) of late-type galaxies (Shen et al. 2003) and its ln scatter."""
    m0 = 3.98e10
    r = 0.10 * mstar**0.14 * (1 + mstar / m0) ** (0.39 - 0.14)
    sig = 0.34 + (0.47 - 0.34) / (1 + (mstar / m0) ** 2)
    return r, sig


def shen_early_re_kpc(mstar):
    """Half-light radius (kpc) of early-type galaxies (Shen et al. 2003)."""
    return 2.88e-6 * mstar**0.56


def reyes_vrot(log_mstar):
    """Rotation velocity (km/s) of the stellar-mass Tully-Fisher relation (Reyes et al. 2011)."""
    return 10 ** (2.142 + 0.278 * (log_mstar - 10.102))


def zahid_sigma(log_mstar):
    """Central stellar velocity dispersion (km/s) versus stellar mass (Zahid et al. 2016).

    The broken power law of the SDSS and SHELS quiescent galaxies: ``sigma_b (M / M_b)^a``
    with ``log sigma_b = 2.073``, ``log M_b = 10.26``, ``a = 0.403`` below ``M_b`` and
    ``0.293`` above (``sigma ~ M^0.3`` for massive galaxies).

    Examples
    --------
    >>> from astroclip.simulate.population import zahid_sigma
    >>> round(float(zahid_sigma(11.0)))
    195
    """
    x = np.asarray(log_mstar, dtype=np.float64) - 10.26
    return 10 ** (2.073 + np.where(x < 0, 0.403, 0.293) * x)


def draw_population(rngs, *, zmin=0.0, zmax=0.6, rmin=-np.inf, rmax=19.5, continuum="auto"):
    """Draw the physical properties of galaxies, one random stream each.

    Parameters
    ----------
    rngs : list of `numpy.random.Generator`
        One stream per galaxy (`galaxy_rngs`); they are advanced.
    zmin, zmax, rmin, rmax : float
        Survey limits (redshift; DECam r AB magnitude of the continuum).
    continuum : {"auto", "ssp", "kcorrect"}, optional
        Stellar continuum of the model spectra whose r magnitudes the limits apply to
        (`astroclip.simulate.ssp.resolve_continuum`).

    Returns
    -------
    dict of ndarray
        One (n,) or (n, 5) array per property (see the keys: ``z``, ``coeffs``,
        ``coeffs_bulge``, ``log_mstar``, ``sfr``, ``bulge_frac``, ``re_disc_kpc``, ...).
    """
    from scipy.special import betaincinv

    from .ssp import resolve_continuum

    pop = population_model()
    t = load_templates()
    continuum = resolve_continuum(continuum)
    cdf, z_lo, z_hi = pop.selection(float(zmin), float(zmax), float(rmin), float(rmax),
                                    continuum)
    n = len(rngs)
    parent = np.zeros(n, dtype=np.intp)
    z = np.zeros(n)
    coeffs = np.zeros((n, t.n_templates))
    pending = np.arange(n)
    zt, _, _, vol_t = cosmology_tables()
    r_tab = pop.decam_table(continuum)[:, 1, :]
    na_tab = pop.decam_na_table()[:, 1, :] if continuum == "ssp" else None
    for _attempt in range(_MAX_ATTEMPTS):
        if pending.size == 0:
            break
        u = np.array([rngs[i].random(2) for i in pending])
        e = np.array([rngs[i].standard_normal(1 + t.n_templates) for i in pending])
        p = np.minimum(np.searchsorted(cdf, u[:, 0], side="right"), len(pop) - 1)
        v_lo = np.interp(z_lo[p], zt, vol_t)
        v_hi = np.interp(z_hi[p], zt, vol_t)
        zz = np.interp(v_lo + u[:, 1] * (v_hi - v_lo), vol_t, zt)
        c = pop.coeffs[p] * 10 ** (MASS_JITTER_DEX * e[:, :1] + TEMPLATE_JITTER_DEX * e[:, 1:])
        rflux = np.einsum("nk,nk->n", _interp_z(pop.z_grid, r_tab, zz), c)
        if na_tab is not None:
            rflux = rflux - _na_dimming(c, t) * np.einsum(
                "nk,nk->n", _interp_z(pop.z_grid, na_tab, zz), c)
        rmag = _mag(rflux)
        ok = (rmag <= rmax) & (rmag >= rmin) & (zz >= zmin) & (zz <= zmax)
        done = pending[ok]
        parent[done], z[done], coeffs[done] = p[ok], zz[ok], c[ok]
        pending = pending[~ok]
    if pending.size:  # pragma: no cover - needs absurdly narrow limits
        raise InputError("could not draw galaxies within the limits after "
                         f"{_MAX_ATTEMPTS} attempts; widen the magnitude or redshift limits")

    # second block of draws: everything else, fixed layout per galaxy
    u = np.array([r.random(8) for r in rngs])
    e = np.array([r.standard_normal(13) for r in rngs])
    mstar = np.einsum("nk,k->n", coeffs, t.mremain)
    log_mstar = np.log10(mstar)
    sfr_tmpl = np.einsum("nk,k->n", coeffs, t.m300) / 3e8
    sfr = sfr_tmpl + mstar * 10 ** (-12.0 + 0.3 * e[:, 0])   # residual SF of quiescent galaxies
    ssfr = sfr / mstar
    z_star = np.einsum("nk,k->n", coeffs * t.mremain, t.mets) / mstar

    # bulge-to-total mass fraction: mostly bulges when quenched, rising with mass
    quench = 1.0 / (1.0 + np.exp((np.log10(ssfr) + 10.8) / 0.25))
    mu = np.clip(0.12 + 0.6 * quench + 0.08 * (log_mstar - 10.5), 0.04, 0.92)
    kappa = 6.0
    bt = betaincinv(mu * kappa, (1 - mu) * kappa, np.clip(u[:, 0], 1e-9, 1 - 1e-9))
    coeffs_bulge = _split_bulge(coeffs * t.mremain, bt * mstar, t.age_order) / t.mremain
    coeffs_bulge = np.minimum(coeffs_bulge, coeffs)
    coeffs_disc = coeffs - coeffs_bulge

    # sizes (kpc): discs from the late-type, bulges from the early-type relation
    re_late, sig_late = shen_late_re_kpc(mstar)
    re_disc = re_late * np.exp(sig_late * e[:, 1])
    re_bulge = shen_early_re_kpc(np.maximum(bt * mstar, 1e6)) * np.exp(0.30 * e[:, 2])
    re_bulge = np.where(bt < 0.5, np.minimum(re_bulge, 0.5 * re_disc), re_bulge)
    re_bulge = np.maximum(re_bulge, 0.1)
    re_disc = np.maximum(re_disc, 0.2)

    cos_i = u[:, 1]
    q_disc = np.sqrt(cos_i**2 * (1 - 0.15**2) + 0.15**2)
    q_bulge = 0.55 + 0.45 * u[:, 2]
    pa = 180.0 * u[:, 3]

    oh = tremonti_oh(log_mstar) + 0.10 * e[:, 3]
    a_ha = np.clip(garn_best_aha(log_mstar) + 0.28 * e[:, 4], 0.0, 3.5)
    vrot = reyes_vrot(log_mstar)
    sin_i = np.sqrt(1 - cos_i**2)
    sigma_gas = np.sqrt((35.0 * 10 ** (0.1 * e[:, 5])) ** 2 + (0.5 * vrot * sin_i) ** 2)
    # stars: the bulge from the mass - dispersion relation, the disc hotter than its gas
    sigma_bulge = zahid_sigma(log_mstar) * 10 ** (SIGMA_STAR_SCATTER_DEX * e[:, 12])
    sigma_disc = np.sqrt((0.3 * vrot * 10 ** (0.1 * e[:, 5])) ** 2 + (0.5 * vrot * sin_i) ** 2)

    ra = 360.0 * u[:, 4]
    dec = np.degrees(np.arcsin(np.clip(2 * u[:, 5] - 1, -1, 1)))
    dl, da, _ = _interp_tables(z)
    kpc_to_arcsec = 206264.806 / (da * 1e3)
    return {
        "parent": pop.index[parent], "z": z, "ra": ra, "dec": dec,
        "coeffs": coeffs, "coeffs_bulge": coeffs_bulge, "coeffs_disc": coeffs_disc,
        "mstar": mstar, "log_mstar": log_mstar, "sfr": sfr, "ssfr": ssfr,
        "z_star": z_star, "log_oh": oh, "a_halpha": a_ha, "bulge_frac": bt,
        "re_disc_kpc": re_disc, "re_bulge_kpc": re_bulge,
        "re_disc": re_disc * kpc_to_arcsec, "re_bulge": re_bulge * kpc_to_arcsec,
        "q_disc": q_disc, "q_bulge": q_bulge, "pa": pa, "inclination": np.degrees(np.arccos(cos_i)),
        "sigma_gas": sigma_gas, "sigma_bulge": sigma_bulge, "sigma_disc": sigma_disc,
        "line_scatter": 0.07 * e[:, 6:9],
        "seeing_fibre": 1.1 * np.exp(0.2 * e[:, 9]),
        "split_u": u[:, 6], "offset_u": u[:, 7],
        "ebv": np.minimum(MW_EBV_MEDIAN * np.exp(MW_EBV_SCATTER * e[:, 10]), 0.3),
        "mstar_err_normal": e[:, 11],
        "lum_dist_mpc": dl, "ang_dist_mpc": da,
    }


def _na_dimming(coeffs, t):
    """``10**(NA_CURVE_OF_GROWTH [Na/Fe]) - 1`` at the mean velocity dispersion of the mass.

    (The magnitude limits are applied before the dispersion is drawn; its 0.08 dex scatter
    changes the Na D absorption of r by less than a millimagnitude.)
    """
    from .ssp import NA_CURVE_OF_GROWTH, na_over_fe

    log_mstar = np.log10(np.maximum(coeffs @ t.mremain, 1e-30))
    return 10 ** (NA_CURVE_OF_GROWTH * na_over_fe(zahid_sigma(log_mstar))) - 1.0


def _split_bulge(mass_k, m_bulge, order):
    """Give the bulge the oldest stellar mass first, up to ``m_bulge`` per galaxy."""
    ordered = mass_k[:, order]
    before = np.cumsum(ordered, axis=1) - ordered
    take = np.clip(m_bulge[:, None] - before, 0.0, ordered)
    out = np.empty_like(mass_k)
    out[:, order] = take
    return out
