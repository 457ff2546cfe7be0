"""Synthetic broad-band photometry of model spectra (DECam g, r, z and SDSS ugriz).

Fluxes are AB nanomaggies integrated through the real filter curves shipped with
`speclite` (photon-counting convention, trapezoid rule on the model grid, the same
quadrature as `speclite.filters.FilterResponse.get_ab_maggies`), so the catalogue
photometry of the mock survey equals the synthetic photometry of its model spectra
to numerical precision.
"""

import functools

import numpy as np

from .._optional import require
from ..inputs import grid
from .templates import load_templates, model_wavelength

__all__ = ["DECAM_FILTERS", "SDSS_FILTERS", "filter_weights", "synthetic_nanomaggies",
           "template_photometry_table", "redshift_grid", "luminosity_distance_mpc"]

#: speclite names of the Legacy Survey (DECam) bands, in `astroclip.inputs.grid.BANDS` order.
DECAM_FILTERS = tuple(f"decam2014-{band}" for band in grid.BANDS)
#: speclite names of the SDSS bands u, g, r, i, z.
SDSS_FILTERS = tuple(f"sdss2010-{band}" for band in "ugriz")

# speed of light in Angstrom/s and the AB zero point (erg/s/cm2/Hz)
_C_AA = 2.99792458e18
_HC_ERG_AA = 6.62607015e-27 * _C_AA
_PC_MPC = 1e-6


@functools.lru_cache(maxsize=8)
def _load_filters(names):
    filters = require("speclite.filters", purpose="the mock survey's photometry")
    return filters.load_filters(*names)


def filter_weights(names=DECAM_FILTERS, wave=None):
    """Linear weights turning a spectrum into AB nanomaggies.

    Parameters
    ----------
    names : tuple of str, optional
        speclite filter names (DECam g, r, z by default).
    wave : ndarray, optional
        Wavelength grid (Angstrom) of the spectra; `model_wavelength` by default.  It must
        cover the filter curves.

    Returns
    -------
    ndarray (n_wave, n_filters)
        ``nanomaggies = flux @ weights`` for ``flux`` in 1e-17 erg/s/cm2/Angstrom.

    Examples
    --------
    >>> import numpy as np
    >>> from astroclip.simulate.photometry import filter_weights
    >>> from astroclip.simulate.templates import model_wavelength
    >>> wave = model_wavelength()
    >>> ab22 = 3631e-23 * 10**(-0.4 * 22.5) * 2.99792458e18 / wave**2 / 1e-17  # 1 nanomaggy
    >>> np.round(ab22 @ filter_weights(), 4).tolist()
    [1.0, 1.0, 1.0]
    """
    return _filter_weights(tuple(names), None if wave is None else tuple(np.asarray(wave)))


@functools.lru_cache(maxsize=16)
def _filter_weights(names, wave):
    wave = model_wavelength() if wave is None else np.asarray(wave, dtype=np.float64)
    filters = _load_filters(names)
    out = np.zeros((wave.size, len(names)))
    for j, filt in enumerate(filters):
        lo, hi = filt.wavelength[0], filt.wavelength[-1]
        if wave[0] > lo or wave[-1] < hi:
            raise ValueError(f"the wavelength grid {wave[0]:.0f}-{wave[-1]:.0f} A does not cover "
                             f"the {filt.name} filter ({lo:.0f}-{hi:.0f} A)")
        # quadrature nodes: grid points inside the filter, end points moved onto the filter ends
        start = np.flatnonzero(wave <= lo)[-1]
        stop = np.flatnonzero(wave >= hi)[0] + 1
        nodes = wave[start:stop].copy()
        nodes[0], nodes[-1] = lo, hi
        resp = filt(wave[start:stop])
        # trapezoid weights on the (possibly shortened) end intervals
        dx = np.diff(nodes)
        trap = np.zeros(nodes.size)
        trap[:-1] += dx / 2
        trap[1:] += dx / 2
        # photon-counting weight lambda / hc, normalised by speclite's AB zero point
        num = resp * nodes * trap / _HC_ERG_AA
        norm = filt.ab_zeropoint.to_value("1 / (cm2 s)")
        out[start:stop, j] = num / norm * 1e-17 * 1e9
    return out


def synthetic_nanomaggies(flux, *, names=DECAM_FILTERS, wave=None):
    """AB nanomaggies of spectra through filter curves.

    Parameters
    ----------
    flux : ndarray (..., n_wave)
        Spectra in 1e-17 erg/s/cm2/Angstrom on ``wave``.
    names : tuple of str, optional
        speclite filter names.
    wave : ndarray, optional
        Wavelength grid (`model_wavelength` by default).

    Returns
    -------
    ndarray (..., n_filters)
    """
    # a product and a sum along each row (no BLAS, no einsum loop reordering): each
    # spectrum's result does not depend on the others in the batch, so galaxies are
    # bit-identical whatever the chunking; each filter only over the pixels where its
    # curve is non-zero
    flux = np.asarray(flux, dtype=np.float64)
    weights = filter_weights(names, wave)
    out = np.empty(flux.shape[:-1] + (weights.shape[1],))
    for j, (lo, hi) in enumerate(_support(tuple(names), None if wave is None
                                          else tuple(np.asarray(wave)))):
        out[..., j] = (flux[..., lo:hi] * weights[lo:hi, j]).sum(axis=-1)
    return out


@functools.lru_cache(maxsize=16)
def _support(names, wave):
    weights = _filter_weights(names, wave)
    out = []
    for j in range(weights.shape[1]):
        nz = np.flatnonzero(weights[:, j])
        out.append((int(nz[0]), int(nz[-1]) + 1))
    return tuple(out)


def redshift_grid(zmax=1.0, step=0.002):
    """Redshift grid of the tabulated template photometry (starts at 1e-4)."""
    return np.concatenate([[1e-4], np.arange(step, zmax + step / 2, step)])


@functools.lru_cache(maxsize=4)
def luminosity_distance_mpc(zmax=1.0, step=0.002):
    """Planck18 luminosity distance (Mpc) on `redshift_grid`."""
    from astropy.cosmology import Planck18

    return Planck18.luminosity_distance(redshift_grid(zmax, step)).to_value("Mpc")


@functools.lru_cache(maxsize=8)
def template_photometry_table(names=DECAM_FILTERS, zmax=1.0, step=0.002, continuum="kcorrect"):
    """Nanomaggies of one solar mass formed in each template, versus redshift.

    Continuum only (templates without their emission lines), Planck18 distances.  The
    integral is done on the templates' rest-frame grid (``lambda = (1 + z) lambda'``), so it
    agrees with `synthetic_nanomaggies` of the model spectra to about 1e-4, which is what
    the population's magnitude selection needs.  With ``continuum="ssp"`` the
    high-resolution continuum (`astroclip.simulate.ssp`, unbroadened, with the SSP ages
    capped at each redshift's age of the Universe) replaces the templates over its window.

    Returns
    -------
    z : ndarray (n_z,)
    table : ndarray (n_z, n_filters, 5)
    """
    if continuum == "ssp":
        z, table = template_photometry_table(names, zmax, step)
        return z, table + _highres_correction(tuple(names), zmax, step)
    if continuum != "kcorrect":
        raise ValueError(f"continuum must be 'kcorrect' or 'ssp' here, not {continuum!r}")
    t = load_templates()
    z = redshift_grid(zmax, step)
    dl = luminosity_distance_mpc(zmax, step)
    filters = _load_filters(tuple(names))
    rest = t.wave
    table = np.empty((z.size, len(names), t.n_templates))
    # maggies = dim (1+z) / (hc ZP) * sum_i T(l_i) R((1+z) l_i) l_i^2 dln(l)
    base = rest**2 * t.dlog_wave / _HC_ERG_AA
    for j, filt in enumerate(filters):
        resp = np.interp(np.outer(1 + z, rest), filt.wavelength, filt.response,
                         left=0.0, right=0.0)
        zp = filt.ab_zeropoint.to_value("1 / (cm2 s)")
        table[:, j, :] = (resp * base) @ t.flux.T / zp
    dim = (10 * _PC_MPC / dl) ** 2 * (1 + z)
    table *= dim[:, None, None] * 1e9
    return z, table


def _highres_correction(names, zmax, step):
    """Change of `template_photometry_table` when the high-resolution window is used.

    At each redshift of the table, the templates of that redshift (SSP ages capped at the
    age of the Universe, interpolated between `astroclip.simulate.ssp.AGE_CAP_REDSHIFTS`
    as in the spectra), without the Na enhancement (`_na_absorption_table`).
    """
    from .ssp import highres_templates

    hr = highres_templates()
    t = load_templates()
    kc = np.stack([np.interp(np.log(hr.wave), np.log(t.wave), t.flux[k])
                   for k in range(t.n_templates)])
    return _fine_grid_table(hr.node_flux[:, 0] - kc, names, zmax, step)  # 0 outside window


@functools.lru_cache(maxsize=8)
def _na_absorption_table(names=DECAM_FILTERS, zmax=1.0, step=0.002):
    """Nanomaggies of the Na D absorption of one solar mass formed in each template.

    A galaxy of coefficients ``c`` and Na enhancement ``[Na/Fe]`` is fainter than
    ``c @ template_photometry_table(continuum="ssp")`` by
    ``(10**(NA_CURVE_OF_GROWTH [Na/Fe]) - 1) * c @ _na_absorption_table()``
    (`astroclip.simulate.ssp`; unbroadened templates).

    Returns
    -------
    z : ndarray (n_z,)
    table : ndarray (n_z, n_filters, 5)
    """
    from .ssp import highres_templates

    hr = highres_templates()
    depth = np.zeros(hr.node_flux.shape[:1] + hr.node_flux.shape[2:])
    depth[..., hr.na_start:hr.na_start + hr.na_depth.shape[-1]] = hr.na_depth[:, 0]
    return redshift_grid(zmax, step), _fine_grid_table(depth, tuple(names), zmax, step)


def _fine_grid_table(spectra, names, zmax, step):
    """Photometry versus redshift of rest-frame spectra on the high-resolution grid.

    ``spectra`` (n_nodes, 5, n_fine) are given at the nodes of the age cap and
    interpolated linearly in redshift like the model spectra.
    """
    from .ssp import highres_templates

    hr = highres_templates()
    z = redshift_grid(zmax, step)
    dl = luminosity_distance_mpc(zmax, step)
    base = hr.wave**2 * hr.dlog_wave / _HC_ERG_AA
    node, frac = hr.node_weights(z)
    upper = np.minimum(node + 1, spectra.shape[0] - 1)
    rows = np.arange(z.size)
    out = np.empty((z.size, len(names), spectra.shape[1]))
    for j, filt in enumerate(_load_filters(names)):
        resp = np.interp(np.outer(1 + z, hr.wave), filt.wavelength, filt.response,
                         left=0.0, right=0.0) * base
        # (n_z, n_nodes, 5): each node's spectra through the filter at every redshift
        per_node = np.einsum("zw,nkw->znk", resp, spectra)
        out[:, j, :] = (per_node[rows, node] * (1 - frac)[:, None]
                        + per_node[rows, upper] * frac[:, None])
        out[:, j, :] /= filt.ab_zeropoint.to_value("1 / (cm2 s)")
    return out * ((10 * _PC_MPC / dl) ** 2 * (1 + z) * 1e9)[:, None, None]
