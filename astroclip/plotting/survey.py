"""Figures of the mock survey (`astroclip.simulate`) and its realism checks.

- `plot_mock_images`: g, r, z stamps in the Legacy Survey viewer colours;
- `plot_mock_spectra`: observed DESI spectra with the emission lines and breaks
  marked at their redshifted wavelengths;
- `plot_colour_redshift`: g - r colour and redshift of a mock sample beside the
  real SDSS galaxies (`astroclip.simulate.validation`);
- `plot_size_mass`: half-light radius against stellar mass, with the SDSS
  size-mass relations of Shen et al. (2003);
- `plot_stack_comparison`: a stack of mock quiescent galaxies over the real DESI
  LRG stack, with zooms on the index bands;
- `plot_coadd_comparison`: a real DESI coadd among mock galaxies at its redshift
  and magnitude (continuum-normalised spectra, index values, line widths, noise);
- `plot_feature_zoom`: rest-frame zooms (Ca H + K, Mg b, ...) of several spectra.

Every function returns a `~matplotlib.figure.Figure`.
"""

import numpy as np

from .._optional import require
from ..inputs import grid

__all__ = ["plot_mock_images", "plot_mock_spectra", "plot_colour_redshift", "plot_size_mass",
           "plot_stack_comparison", "plot_coadd_comparison", "plot_feature_zoom",
           "SPECTRAL_FEATURES", "ZOOM_WINDOWS"]

#: Rest-frame windows (vacuum Angstrom) of the zoom panels.
ZOOM_WINDOWS = {"Ca II H + K": (3880.0, 4020.0), r"H$\delta$": (4050.0, 4160.0),
                "Mg b + Fe": (5130.0, 5350.0), "Na D": (5850.0, 5950.0)}

#: Rest-frame vacuum wavelengths (Angstrom) marked on the spectra.
SPECTRAL_FEATURES = {
    "[OII]": 3728.5, "CaII K": 3934.8, "CaII H": 3969.6, "4000 A break": 4000.0,
    "H$\\beta$": 4862.7, "[OIII]": 5008.2, "Mg b": 5176.7, "NaD": 5895.6,
    "H$\\alpha$": 6564.6, "[SII]": 6725.0,
}


def plot_mock_images(images, truth=None, *, n=8, ncols=4, crop=None):
    """Colour-mapped g, r, z images (Legacy Survey viewer mapping).

    Parameters
    ----------
    images : ndarray (N, 3, H, W)
        g, r, z images in nanomaggies.
    truth : `~astropy.table.Table`, optional
        Truth rows aligned with ``images`` (``Z``, ``LOG_MSTAR_TRUE``, ``BT_R`` in titles).
    n, ncols : int, optional
        Number of stamps and columns.
    crop : int, optional
        Centre crop (pixels) before display.
    """
    plt = require("matplotlib.pyplot", purpose="plotting")

    from ..inputs.images import color_map

    images = np.asarray(images, dtype=np.float32)[:n]
    if crop is not None:
        s = images.shape[-1]
        lo = (s - crop) // 2
        images = images[..., lo:lo + crop, lo:lo + crop]
    rgb = color_map(images)
    n = rgb.shape[0]
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.4 * ncols, 2.5 * nrows), squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for i in range(n):
        ax = axes.ravel()[i]
        ax.imshow(np.moveaxis(rgb[i], 0, -1), origin="lower")
        if truth is not None:
            ax.set_title(f"z={truth['Z'][i]:.3f}  logM={truth['LOG_MSTAR_TRUE'][i]:.1f}\n"
                         f"B/T(r)={truth['BT_R'][i]:.2f}", fontsize=8)
    fig.tight_layout()
    return fig


def _smooth(y, width):
    if width <= 1:
        return y
    kernel = np.ones(width) / width
    return np.convolve(y, kernel, mode="same")


def plot_mock_spectra(flux, ivar, redshift, *, n=3, smooth=5, features=SPECTRAL_FEATURES,
                      model=None):
    """Observed mock spectra with lines and breaks marked at (1 + z) times their wavelengths.

    Parameters
    ----------
    flux, ivar : ndarray (N, 7781)
        Spectra on the DESI grid (1e-17 erg/s/cm2/A); masked pixels (ivar 0) are not drawn.
    redshift : array-like (N,)
    n : int, optional
        Number of spectra (one panel each).
    smooth : int, optional
        Boxcar width (pixels) of the smoothed curve.
    features : dict, optional
        Name -> rest wavelength (Angstrom) to mark.
    model : ndarray (N, 7781), optional
        Noiseless model drawn on top.
    """
    plt = require("matplotlib.pyplot", purpose="plotting")

    wave = grid.WAVELENGTH
    n = min(n, len(flux))
    fig, axes = plt.subplots(n, 1, figsize=(10, 2.6 * n), sharex=True, squeeze=False)
    for i in range(n):
        ax = axes[i, 0]
        good = np.asarray(ivar[i]) > 0
        f = np.where(good, flux[i], np.nan)
        ax.plot(wave, f, color="0.75", lw=0.4, label="observed")
        filled = np.where(good, flux[i], 0.0)
        norm = _smooth(good.astype(float), smooth)
        sm = np.where(norm > 0, _smooth(filled, smooth) / np.maximum(norm, 1e-9), np.nan)
        ax.plot(wave, sm, color="k", lw=0.7, label=f"smoothed ({smooth} px)")
        if model is not None:
            ax.plot(wave, model[i], color="tab:red", lw=0.7, label="model")
        z = float(redshift[i])
        lo, hi = np.nanpercentile(sm, [1, 99.5])
        ax.set_ylim(lo - 0.2 * abs(hi - lo), hi + 0.35 * abs(hi - lo))
        for name, rest in features.items():
            obs = rest * (1 + z)
            if wave[0] < obs < wave[-1]:
                ax.axvline(obs, color="tab:blue", lw=0.6, ls="--", alpha=0.7)
                ax.text(obs, ax.get_ylim()[1], name, rotation=90, va="top", ha="right",
                        fontsize=7, color="tab:blue")
        ax.set_ylabel(r"$F_\lambda$ [$10^{-17}$ erg/s/cm$^2$/$\AA$]", fontsize=8)
        ax.set_title(f"z = {z:.4f}", fontsize=9, loc="left")
    axes[0, 0].legend(loc="upper right", fontsize=7)
    axes[-1, 0].set_xlabel(r"observed wavelength [$\AA$]")
    fig.tight_layout()
    return fig


def plot_colour_redshift(mock, real, *, mock_label="mock (SDSS-like selection)",
                         real_label="real SDSS galaxies"):
    """g - r against redshift, and the two marginal distributions, mock beside real.

    Parameters
    ----------
    mock, real : `~astropy.table.Table`
        With columns ``Z`` and ``G_R`` (`astroclip.simulate.validation.mock_sdss_sample`
        and `~astroclip.simulate.validation.real_sdss_sample`).
    """
    plt = require("matplotlib.pyplot", purpose="plotting")
    from scipy.stats import ks_2samp

    fig, axes = plt.subplots(1, 4, figsize=(16, 3.8))
    zmax = float(np.percentile(np.concatenate([real["Z"], mock["Z"]]), 99.5))
    extent = (0, zmax, 0.2, 1.4)
    for ax, sample, label in ((axes[0], real, real_label), (axes[1], mock, mock_label)):
        ax.hexbin(sample["Z"], sample["G_R"], gridsize=40, extent=extent, mincnt=1,
                  cmap="viridis", bins="log")
        ax.set_xlim(extent[:2])
        ax.set_ylim(extent[2:])
        ax.set_xlabel("redshift")
        ax.set_ylabel("g - r (SDSS, AB)")
        ax.set_title(label, fontsize=9)
    for ax, col, bins, name in ((axes[2], "Z", np.linspace(0, zmax, 40), "redshift"),
                                (axes[3], "G_R", np.linspace(0.2, 1.4, 40), "g - r")):
        ks = ks_2samp(mock[col], real[col]).statistic
        ax.hist(real[col], bins=bins, density=True, histtype="stepfilled", alpha=0.4,
                label=real_label)
        ax.hist(mock[col], bins=bins, density=True, histtype="step", lw=1.5, label=mock_label)
        ax.set_xlabel(name)
        ax.set_title(f"KS statistic {ks:.3f}", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_size_mass(truth, *, colour="BT_R"):
    """Half-light radius against stellar mass, with the Shen et al. (2003) SDSS relations.

    Parameters
    ----------
    truth : `~astropy.table.Table`
        Mock truth catalogue (``LOG_MSTAR_TRUE``, ``R_HALF_KPC`` and ``colour``).
    colour : str, optional
        Column used to colour the points (r-band bulge fraction by default).
    """
    plt = require("matplotlib.pyplot", purpose="plotting")

    from ..simulate.population import shen_early_re_kpc, shen_late_re_kpc

    fig, ax = plt.subplots(figsize=(6, 4.5))
    sc = ax.scatter(truth["LOG_MSTAR_TRUE"], truth["R_HALF_KPC"], c=truth[colour], s=4,
                    cmap="coolwarm", vmin=0, vmax=1, alpha=0.7)
    fig.colorbar(sc, ax=ax, label=colour)
    logm = np.linspace(9.0, 12.0, 50)
    late, sig = shen_late_re_kpc(10**logm)
    ax.plot(logm, late, color="tab:blue", lw=2, label="late types, Shen et al. 2003 (SDSS)")
    ax.fill_between(logm, late * np.exp(-sig), late * np.exp(sig), color="tab:blue", alpha=0.15)
    ax.plot(logm, shen_early_re_kpc(10**logm), color="tab:red", lw=2,
            label="early types, Shen et al. 2003 (SDSS)")
    ax.set_yscale("log")
    ax.set_xlabel(r"$\log_{10} M_\star / M_\odot$")
    ax.set_ylabel("half-light radius [kpc]")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig


def _index_bands(ax, names, lo, hi):
    """Shade the central bands of the indices that fall inside [lo, hi] (vacuum)."""
    from ..simulate.indices import INDICES, air_to_vacuum

    for name in names:
        d = INDICES[name]
        band = d.band if d.band is not None else d.red
        a, b = air_to_vacuum(np.array(band))
        if a < hi and b > lo:
            ax.axvspan(a, b, color="0.9", zorder=0)
            ax.text(0.5 * (a + b), 0.02, name, transform=ax.get_xaxis_transform(),
                    ha="center", fontsize=7, color="0.4")


def plot_stack_comparison(mock, real, *, windows=ZOOM_WINDOWS,
                          indices=("Dn4000", "CaHK", "HdeltaA", "Mgb", "Fe5270", "NaD"),
                          smooth=3):
    """The stack of mock quiescent galaxies over the real DESI LRG stack.

    Parameters
    ----------
    mock, real : dict
        ``wave``, ``flux``, ``ivar`` (rest frame, same grid): e.g.
        `astroclip.simulate.validation.mock_quiescent_stack` and
        `~astroclip.simulate.validation.real_lrg_stack`.
    windows : dict, optional
        Name -> (lo, hi) rest-frame zoom windows.
    indices : sequence of str, optional
        Indices measured (`astroclip.simulate.indices.measure_indices`), shown in the
        title of the full-range panel and shaded in the zooms.
    smooth : int, optional
        Boxcar width (pixels) applied to both stacks for display.
    """
    plt = require("matplotlib.pyplot", purpose="plotting")

    from ..simulate.indices import measure_indices

    m_idx = measure_indices(mock["wave"], mock["flux"], mock["ivar"], names=list(indices))
    r_idx = measure_indices(real["wave"], real["flux"], real["ivar"], names=list(indices))
    fig = plt.figure(figsize=(11, 7))
    gs = fig.add_gridspec(2, len(windows))
    top = fig.add_subplot(gs[0, :])
    curves = []
    for data, colour, label in ((real, "k", "real DESI LRG stack"),
                                (mock, "tab:red", "mock quiescent stack")):
        good = np.asarray(data["ivar"]) > 0
        f = np.where(good, _smooth(np.where(good, data["flux"], 0.0), smooth)
                     / np.maximum(_smooth(good.astype(float), smooth), 1e-9), np.nan)
        curves.append((data["wave"], f, colour, label))
        top.plot(data["wave"], f, color=colour, lw=0.5, label=label)
    top.set_xlim(3500, 7000)
    top.set_ylim(0, 1.6)
    top.set_xlabel(r"rest-frame wavelength [$\AA$]")
    top.set_ylabel("normalised flux")
    top.legend(loc="lower right", fontsize=8)
    text = "   ".join(f"{k}: {m_idx[k]:.2f} / {r_idx[k]:.2f}" for k in indices)
    top.set_title(f"mock / real   {text}", fontsize=8)
    for j, (name, (lo, hi)) in enumerate(windows.items()):
        ax = fig.add_subplot(gs[1, j])
        for wave, f, colour, label in curves:
            sel = (wave > lo) & (wave < hi)
            ax.plot(wave[sel], f[sel], color=colour, lw=0.8)
        _index_bands(ax, indices, lo, hi)
        ax.set_xlim(lo, hi)
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    return fig


def plot_coadd_comparison(real, mock_flux, mock_ivar, mock_redshift, *,
                          indices=("Dn4000", "HdeltaA", "Mgb", "NaD"),
                          lines=("HBETA", "OIII_5007", "HALPHA")):
    """A real DESI coadd among mock galaxies at its redshift and magnitude.

    Top: the continuum-normalised rest-frame spectrum of the real galaxy over the 5-95%
    range of the mock spectra.  Bottom: the distributions of index values, emission-line
    widths and per-pixel noise (r arm) of the mock galaxies, with the real value marked.

    Parameters
    ----------
    real : dict
        One item of `astroclip.simulate.validation.real_desi_galaxies`.
    mock_flux, mock_ivar : ndarray (N, 7781)
    mock_redshift : array-like (N,)
    """
    plt = require("matplotlib.pyplot", purpose="plotting")

    from ..simulate.indices import measure_indices
    from ..simulate.spectra import EMISSION_LINES
    from ..simulate.validation import continuum_normalise, emission_line_sigma, noise_level

    wave = grid.WAVELENGTH
    rest = np.arange(3000.0, 7200.0, 1.0)
    z_m = np.asarray(mock_redshift, dtype=np.float64)

    def to_rest(flux, ivar, z):
        norm = continuum_normalise(flux, ivar)
        good = np.isfinite(norm)
        return np.interp(rest, wave[good] / (1 + z), norm[good], left=np.nan, right=np.nan)

    mock_rest = np.array([to_rest(f, iv, z) for f, iv, z in zip(mock_flux, mock_ivar, z_m)])
    real_rest = to_rest(real["flux"], real["ivar"], real["z"])
    fig = plt.figure(figsize=(11, 6.5))
    gs = fig.add_gridspec(2, len(indices) + len(lines) + 1)
    top = fig.add_subplot(gs[0, :])
    lo, hi = np.nanpercentile(mock_rest, [5, 95], axis=0)
    top.fill_between(rest, lo, hi, color="tab:red", alpha=0.3, lw=0,
                     label=f"mock, 5-95% ({len(z_m)} galaxies)")
    top.plot(rest, _smooth(np.nan_to_num(real_rest, nan=1.0), 3), color="k", lw=0.5,
             label=f"real DESI {real['targetid']} (z = {real['z']:.3f})")
    top.set_ylim(0, 3)
    top.set_xlabel(r"rest-frame wavelength [$\AA$]")
    top.set_ylabel("flux / continuum")
    top.legend(loc="upper right", fontsize=8)
    m_idx = measure_indices(wave, mock_flux, mock_ivar, redshift=z_m, names=list(indices))
    r_idx = measure_indices(wave, real["flux"], real["ivar"], redshift=real["z"],
                            names=list(indices))
    panels = [(k, m_idx[k], r_idx[k]) for k in indices]
    for name in lines:
        line = EMISSION_LINES[name]
        panels.append((f"{name} sigma [km/s]",
                       emission_line_sigma(wave, mock_flux, mock_ivar, line, z_m),
                       emission_line_sigma(wave, real["flux"], real["ivar"], line, real["z"])))
    panels.append(("noise, r arm", noise_level(mock_flux, mock_ivar)[:, 1],
                   noise_level(real["flux"], real["ivar"])[1]))
    for j, (name, values, value) in enumerate(panels):
        ax = fig.add_subplot(gs[1, j])
        values = np.asarray(values)[np.isfinite(values)]
        if values.size:
            ax.hist(values, bins=20, color="tab:red", alpha=0.6)
        if np.isfinite(value):
            ax.axvline(value, color="k", lw=1.5)
        ax.set_title(name, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def plot_feature_zoom(spectra, *, windows=None, smooth=1):
    """Rest-frame zooms of several spectra on absorption features (one row per spectrum).

    Parameters
    ----------
    spectra : list of dict
        ``wave`` (rest-frame Angstrom), ``flux``, optional ``ivar``, ``label`` and
        ``colour``; each row is normalised to its median over the plotted windows.
    windows : dict, optional
        Name -> (lo, hi); by default Ca II H + K and Mg b of `ZOOM_WINDOWS`.
    smooth : int, optional
        Boxcar width (pixels).
    """
    plt = require("matplotlib.pyplot", purpose="plotting")

    if windows is None:
        windows = {k: ZOOM_WINDOWS[k] for k in ("Ca II H + K", "Mg b + Fe")}
    size = (4.6 * len(windows), 1.9 * len(spectra))
    fig, axes = plt.subplots(len(spectra), len(windows), figsize=size, squeeze=False,
                             sharex="col")
    for i, spec in enumerate(spectra):
        wave = np.asarray(spec["wave"], dtype=np.float64)
        flux = np.asarray(spec["flux"], dtype=np.float64)
        good = np.ones(flux.shape, bool) if spec.get("ivar") is None else \
            np.asarray(spec["ivar"]) > 0
        f = np.where(good, _smooth(np.where(good, flux, 0.0), smooth)
                     / np.maximum(_smooth(good.astype(float), smooth), 1e-9), np.nan)
        for j, (name, (lo, hi)) in enumerate(windows.items()):
            ax = axes[i, j]
            sel = (wave > lo) & (wave < hi)
            norm = np.nanmedian(f[sel]) if sel.any() else 1.0
            ax.plot(wave[sel], f[sel] / norm, color=spec.get("colour", "k"), lw=0.7)
            ax.set_xlim(lo, hi)
            ax.tick_params(labelsize=7)
            if i == 0:
                ax.set_title(name, fontsize=9)
            if j == 0:
                ax.set_ylabel(spec.get("label", ""), fontsize=7)
    for ax in axes[-1]:
        ax.set_xlabel(r"rest-frame wavelength [$\AA$]", fontsize=8)
    fig.tight_layout()
    return fig
