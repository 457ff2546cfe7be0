"""Figures of the mock survey (`astroclip.simulate`) and its realism checks.

- `plot_mock_images`: g, r, z stamps in the Legacy Survey viewer colours;
- `plot_mock_spectra`: observed DESI spectra with the emission lines and breaks
  marked at their redshifted wavelengths;
- `plot_colour_redshift`: g - r colour and redshift of a mock sample beside the
  real SDSS galaxies (`astroclip.simulate.validation`);
- `plot_size_mass`: half-light radius against stellar mass, with the SDSS
  size-mass relations of Shen et al. (2003).

Every function returns a `~matplotlib.figure.Figure`.
"""

import numpy as np

from .._optional import require
from ..inputs import grid

__all__ = ["plot_mock_images", "plot_mock_spectra", "plot_colour_redshift", "plot_size_mass",
           "SPECTRAL_FEATURES"]

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
