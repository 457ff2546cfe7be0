"""Figures of the spectrum transformer: mask filling and attention maps.

- `plot_mask_filling` / `plot_reconstruction`: the paper's appendix C view, the
  spectrum with the zeroed regions shaded, the (smoothed) truth against the
  model's prediction, and zoom insets on lines inside masked regions.
- `plot_attention_maps` / `plot_spectrum_attention`: the appendix B view, one
  map per attention head over the token sequence, drawn against wavelength.

Every function returns a `~matplotlib.figure.Figure`.
"""

import numpy as np
import torch

from .._optional import require
from ..exceptions import InputError
from ..inputs import grid

__all__ = ["EMISSION_LINES", "plot_reconstruction", "plot_mask_filling",
           "plot_attention_maps", "plot_spectrum_attention"]

#: Rest-frame vacuum wavelengths (Angstrom) of common galaxy lines, for insets.
EMISSION_LINES = {
    "[OII]": 3728.5, "CaII K": 3934.8, "CaII H": 3969.6, "Hdelta": 4102.9,
    "Hgamma": 4341.7, "Hbeta": 4862.7, "[OIII]": 5008.2, "MgI b": 5176.7,
    "NaI D": 5895.6, "Halpha": 6564.6, "[NII]": 6585.3, "[SII]": 6718.3,
}


def _runs(flag):
    """(start, stop) index pairs of the True runs of a boolean array."""
    flag = np.asarray(flag, dtype=bool)
    edges = np.diff(np.concatenate([[0], flag.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)))


def _smooth(y, width):
    if width <= 1:
        return y
    kernel = np.ones(width) / width
    valid = np.isfinite(y)
    num = np.convolve(np.where(valid, y, 0.0), kernel, mode="same")
    den = np.convolve(valid.astype(float), kernel, mode="same")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan)


def _new_figure(figsize):
    plt = require("matplotlib.pyplot", purpose="plotting")
    return plt.figure(figsize=figsize)


def _inset_centres(wavelength, flux, hidden, redshift, n_insets):
    runs = _runs(hidden)
    if not runs:
        return []
    centres = []
    if redshift is not None:
        for name, rest in EMISSION_LINES.items():
            obs = rest * (1 + redshift)
            for a, b in runs:
                if wavelength[a] <= obs <= wavelength[b - 1]:
                    centres.append((name, obs))
    # then the masked regions with the most structure
    score = [(np.nanstd(flux[a:b]), a, b) for a, b in runs]
    for _, a, b in sorted(score, reverse=True):
        centres.append((None, 0.5 * (wavelength[a] + wavelength[b - 1])))
    picked = []
    for name, c in centres:
        if all(abs(c - p) > 150 for _, p in picked):
            picked.append((name, c))
        if len(picked) == n_insets:
            break
    return sorted(picked, key=lambda t: t[1])


def plot_reconstruction(flux, prediction, hidden, *, wavelength=None, redshift=None, smooth=20,
                        n_insets=3, inset_width=120.0, title=None, figsize=(11, 5.5)):
    """Truth against prediction with the masked regions shaded, and zoom insets.

    Parameters
    ----------
    flux : array-like
        True flux (n_pixels,), in 1e-17 erg/s/cm2/A.
    prediction : array-like
        Model prediction (n_pixels,), same unit.
    hidden : array-like of bool
        True on the pixels the model did not see.
    wavelength : array-like, optional
        Pixel wavelengths (default: the DESI grid).
    redshift : float, optional
        Put insets on known lines (`EMISSION_LINES`) that fall in masked
        regions first.
    smooth : int, optional
        Boxcar width (pixels) of the smoothed truth (the paper averages 20).
    n_insets : int, optional
        Number of zoom insets.
    inset_width : float, optional
        Wavelength span of an inset (Angstrom).
    title : str, optional
        Figure title.
    figsize : tuple, optional
        Figure size (inches).

    Returns
    -------
    `~matplotlib.figure.Figure`
    """
    flux = np.asarray(flux, dtype=float)
    prediction = np.asarray(prediction, dtype=float)
    hidden = np.asarray(hidden, dtype=bool)
    wavelength = grid.WAVELENGTH if wavelength is None else np.asarray(wavelength, dtype=float)
    if not (flux.shape == prediction.shape == hidden.shape == wavelength.shape):
        raise InputError(f"flux {flux.shape}, prediction {prediction.shape}, hidden "
                         f"{hidden.shape} and wavelength {wavelength.shape} must have one shape")
    smoothed = _smooth(flux, smooth)
    shown = np.where(hidden, prediction, np.nan)

    fig = _new_figure(figsize)
    ax = fig.add_axes([0.07, 0.1, 0.9, 0.48])
    for a, b in _runs(hidden):
        ax.axvspan(wavelength[a], wavelength[b - 1], color="0.85", lw=0, zorder=0)
    ax.plot(wavelength, flux, color="0.6", lw=0.5, label="truth")
    ax.plot(wavelength, smoothed, color="k", lw=0.9, label=f"truth ({smooth}-pixel mean)")
    ax.plot(wavelength, shown, color="C3", lw=1.0, label="prediction (masked regions)")
    ax.set_xlim(wavelength[0], wavelength[-1])
    # limits from the smoothed truth and the prediction, so that noise does not flatten them
    lo, hi = np.nanpercentile(np.concatenate([smoothed, shown[hidden]]), [0.5, 99.5])
    pad = 0.35 * (hi - lo + 1e-9)
    ax.set_ylim(lo - pad, hi + pad)
    ax.set_xlabel(r"wavelength [$\AA$]")
    ax.set_ylabel(r"flux [$10^{-17}$ erg s$^{-1}$ cm$^{-2}$ $\AA^{-1}$]")
    ax.legend(loc="lower left", ncols=3, fontsize="small", frameon=False)

    centres = _inset_centres(wavelength, smoothed, hidden, redshift, n_insets)
    for i, (name, c) in enumerate(centres):
        width = 0.9 / max(1, len(centres))
        ins = fig.add_axes([0.08 + i * width, 0.65, width - 0.03, 0.26])
        sel = (wavelength > c - inset_width / 2) & (wavelength < c + inset_width / 2)
        for a, b in _runs(hidden & sel):
            ins.axvspan(wavelength[a], wavelength[b - 1], color="0.85", lw=0)
        ins.plot(wavelength[sel], smoothed[sel], color="k", lw=1.0)
        ins.plot(wavelength[sel], shown[sel], color="C3", lw=1.0)
        ins.set_xlim(c - inset_width / 2, c + inset_width / 2)
        ins.tick_params(labelsize="x-small")
        if name:
            ins.set_title(name, fontsize="small")
        ax.indicate_inset_zoom(ins, edgecolor="0.4")
    if title:
        fig.suptitle(title, y=0.99, fontsize="medium")
    return fig


def plot_mask_filling(model, flux, *, mask=None, seed=0, redshift=None, **kwargs):
    """Mask a spectrum, let the model fill it in, and plot `plot_reconstruction`.

    Parameters
    ----------
    model : `~astroclip.models.spectrum.SpectrumEncoder`
        A pretrained spectrum transformer.
    flux : array-like or `~astropy.units.Quantity`
        One spectrum (n_pixels,) on the model's grid (1e-17 erg/s/cm2/A).
    mask : array-like of bool, optional
        Masked tokens (n_tokens,); drawn with the model's masking otherwise.
    seed : int, optional
        Seed of the drawn mask.
    redshift : float, optional
        For line insets.
    **kwargs
        Passed to `plot_reconstruction`.

    Returns
    -------
    `~matplotlib.figure.Figure`
    """
    if hasattr(flux, "unit"):
        flux = flux.to_value(grid.FLUX_UNIT)
    x = torch.as_tensor(np.asarray(flux, dtype=np.float32))[None]
    device = next(model.parameters()).device
    if mask is None:
        g = torch.Generator().manual_seed(int(seed))
        mask = model.random_mask(1, generator=g, device="cpu")
    else:
        mask = torch.as_tensor(np.asarray(mask, dtype=bool))[None]
    was_training = model.training
    model.eval()
    try:
        pred, hidden = model.reconstruct(x.to(device), mask.to(device))
    finally:
        model.train(was_training)
    wavelength = kwargs.pop("wavelength", None)
    if wavelength is None and model.n_pixels != grid.N_PIXELS:
        wavelength = np.arange(model.n_pixels, dtype=float)
    return plot_reconstruction(x[0].numpy(), pred[0].cpu().numpy(), hidden[0].cpu().numpy(),
                               wavelength=wavelength, redshift=redshift, **kwargs)


def plot_attention_maps(weights, *, token_wavelength, flux=None, wavelength=None,
                        head_labels=None, title=None, figsize=None):
    """One attention map per head over the sequence, against wavelength.

    Parameters
    ----------
    weights : array-like
        (heads, n_tokens) attention weights; tokens whose wavelength is NaN
        (the statistics token) are left out.
    token_wavelength : array-like
        Central wavelength of each token (n_tokens,), e.g.
        `~astroclip.models.spectrum.SpectrumEncoder.token_wavelengths`.
    flux : array-like, optional
        The spectrum, drawn faintly under each map.
    wavelength : array-like, optional
        Pixel wavelengths of ``flux`` (default: the DESI grid).
    head_labels : sequence of str, optional
        Panel labels.
    title : str, optional
        Figure title.
    figsize : tuple, optional
        Figure size (inches).

    Returns
    -------
    `~matplotlib.figure.Figure`
    """
    weights = np.asarray(weights, dtype=float)
    token_wavelength = np.asarray(token_wavelength, dtype=float)
    if weights.ndim != 2 or weights.shape[1] != token_wavelength.shape[0]:
        raise InputError(f"weights must be (heads, {token_wavelength.shape[0]}), got "
                         f"{weights.shape}")
    keep = np.isfinite(token_wavelength)
    n_heads = weights.shape[0]
    fig = _new_figure(figsize or (10, 1.5 + 1.4 * n_heads))
    axes = fig.subplots(n_heads, 1, sharex=True, squeeze=False)[:, 0]
    for h, ax in enumerate(axes):
        if flux is not None:
            f = np.asarray(flux, dtype=float)
            wl = grid.WAVELENGTH if wavelength is None else np.asarray(wavelength, dtype=float)
            tw = ax.twinx()
            tw.plot(wl, f, color="0.75", lw=0.5, zorder=0)
            tw.set_yticks([])
            ax.set_zorder(tw.get_zorder() + 1)
            ax.patch.set_visible(False)
        ax.fill_between(token_wavelength[keep], weights[h, keep], color=f"C{h % 10}", alpha=0.5,
                        lw=0)
        ax.plot(token_wavelength[keep], weights[h, keep], color=f"C{h % 10}", lw=0.8)
        ax.set_ylim(0, None)
        label = head_labels[h] if head_labels is not None else f"head {h + 1}"
        ax.text(0.01, 0.8, label, transform=ax.transAxes, fontsize="small")
        ax.set_ylabel("weight", fontsize="small")
    axes[-1].set_xlabel(r"wavelength [$\AA$]")
    axes[-1].set_xlim(np.nanmin(token_wavelength), np.nanmax(token_wavelength))
    if title:
        fig.suptitle(title, fontsize="medium")
    fig.tight_layout()
    return fig


def plot_spectrum_attention(model, flux, **kwargs):
    """Attention maps of a spectrum model for one spectrum.

    For a `~astroclip.models.spectrum.SpectrumEmbedder` these are the weights
    of the cross-attention pooling head (the paper's maps); for a bare
    `~astroclip.models.spectrum.SpectrumEncoder` (no pooling head yet), the
    self-attention of the statistics token in the last block stands in.

    Parameters
    ----------
    model : SpectrumEmbedder or SpectrumEncoder
    flux : array-like or `~astropy.units.Quantity`
        One spectrum (n_pixels,).
    **kwargs
        Passed to `plot_attention_maps`.

    Returns
    -------
    `~matplotlib.figure.Figure`
    """
    if hasattr(flux, "unit"):
        flux = flux.to_value(grid.FLUX_UNIT)
    x = torch.as_tensor(np.asarray(flux, dtype=np.float32))[None]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            if hasattr(model, "pooling"):
                encoder = model.backbone
                w = model.attention_maps(x.to(device))[0]
                default_title = "cross-attention of the pooling head"
            else:
                encoder = model
                _, maps = model.encode_tokens(model.tokenize(x.to(device)), return_attention=True)
                w = maps[-1][0, :, 0, :]
                default_title = "last-block self-attention of the statistics token"
    finally:
        model.train(was_training)
    kwargs.setdefault("title", default_title)
    token_wavelength = encoder.token_wavelengths()
    if encoder.n_pixels != grid.N_PIXELS:
        kwargs.setdefault("wavelength", np.arange(encoder.n_pixels, dtype=float))
    return plot_attention_maps(w.float().cpu().numpy(), token_wavelength=token_wavelength,
                               flux=x[0].numpy(), **kwargs)
