"""Comparison samples for the realism checks: real SDSS galaxies and a mock selected like them.

The real galaxies are kcorrect's SDSS x 2MASS test table
(`astroclip.simulate.population.read_sdss_sample`); the mock comparison sample is
drawn from the simulator and selected with the same limits (SDSS Petrosian r <
17.77 and 2MASS Ks < 14.2), with its g - r colour measured through the SDSS
filter curves, so the two redshift and colour distributions can be compared
directly (KS statistic, figures of `astroclip.plotting.survey`).
"""

import numpy as np

__all__ = ["real_sdss_sample", "mock_sdss_sample"]


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
