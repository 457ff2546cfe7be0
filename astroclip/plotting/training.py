"""Figures of a training run: loss curves from the CSV log, and cross-modal retrievals.

`read_training_log` reads ``<run>/logs/metrics.csv`` (written by every training
stage) into numpy arrays; `plot_training_curves` draws the training and
validation loss against the optimizer step and, when logged, the validation
retrieval accuracy; `plot_cross_modal_retrievals` shows, for a few query
images, the spectra whose embeddings are closest to the image's (the true
partner is drawn in black and its rank is given).
"""

import csv
from pathlib import Path

import numpy as np

from .._optional import require
from ..exceptions import InputError
from ..inputs import grid

__all__ = ["read_training_log", "plot_training_curves", "plot_cross_modal_retrievals"]


def read_training_log(run):
    """Metrics of a training run as ``{name: (steps, values)}``.

    Parameters
    ----------
    run : path
        A run folder (``<run>/logs/metrics.csv`` is read) or the CSV file.

    Returns
    -------
    dict
        Each logged column (``train_loss``, ``val_loss``,
        ``val_image_to_spectrum_top1``, ``lr``, ...) -> ``(steps, values)``
        float arrays of the rows where it was logged.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from astroclip.plotting.training import read_training_log
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "metrics.csv"
    >>> _ = p.write_text("epoch,step,train_loss,val_loss\\n0,0,2.0,\\n0,1,1.5,1.7\\n")
    >>> read_training_log(p)["val_loss"]
    (array([1.]), array([1.7]))
    """
    path = Path(run)
    if path.is_dir():
        path = path / "logs" / "metrics.csv"
    if not path.is_file():
        raise FileNotFoundError(f"no training log at {path}; pass a run folder written by "
                                "align, pretrain_images or pretrain_spectra")
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise InputError(f"{path} holds no logged rows yet")
    out = {}
    for name in rows[0]:
        if name in ("step", "epoch"):
            continue
        pts = [(float(r["step"]), float(r[name])) for r in rows if r.get(name) not in (None, "")]
        if pts:
            steps, values = (np.array(v) for v in zip(*pts))
            out[name] = (steps, values)
    return out


def _smooth(y, width):
    if width <= 1 or len(y) < width:
        return y
    kernel = np.ones(int(width)) / int(width)
    pad = int(width) // 2
    ypad = np.pad(y, (pad, int(width) - 1 - pad), mode="edge")
    return np.convolve(ypad, kernel, mode="valid")


def plot_training_curves(run, *, smooth=1, figsize=None):
    """Figure: loss against optimizer step, and the validation retrieval accuracy.

    Parameters
    ----------
    run : path
        Run folder or its ``metrics.csv``.
    smooth : int, optional
        Running-mean width applied to the training loss (1: none).
    figsize : tuple, optional
        Figure size.

    Returns
    -------
    `matplotlib.figure.Figure`
        One panel of losses, plus one of retrieval accuracy when the run logged
        ``val_*_top{k}`` metrics (the alignment does; chance level is drawn).

    Examples
    --------
    >>> from astroclip.plotting.training import plot_training_curves
    >>> fig = plot_training_curves("run/")  # doctest: +SKIP
    """
    plt = require("matplotlib.pyplot", purpose="plotting")

    log = read_training_log(run)
    acc = sorted(k for k in log if k.startswith("val_") and "_top" in k)
    ncols = 2 if acc else 1
    fig, axes = plt.subplots(1, ncols, figsize=figsize or (5.0 * ncols, 3.6), squeeze=False)
    ax = axes[0, 0]
    if "train_loss" in log:
        s, v = log["train_loss"]
        ax.plot(s, v, color="0.75", lw=0.8, label="training (per step)" if smooth > 1 else
                "training")
        if smooth > 1:
            ax.plot(s, _smooth(v, smooth), color="C0", lw=1.5, label=f"training ({smooth}-pt mean)")
    if "val_loss" in log:
        s, v = log["val_loss"]
        ax.plot(s, v, "o-", color="C3", label="validation")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("contrastive loss")
    ax.legend(frameon=False)
    if acc:
        ax = axes[0, 1]
        styles = {"top1": "-", "top5": "--"}
        n = log["val_pairs"][1][-1] if "val_pairs" in log else None
        for i, name in enumerate(acc):
            s, v = log[name]
            direction = "image→spectrum" if "image_to_spectrum" in name else (
                "spectrum→image" if "spectrum_to_image" in name else name[4:].rsplit("_top", 1)[0])
            k = name.rsplit("_", 1)[-1]
            ax.plot(s, v, marker="o", ls=styles.get(k, ":"), color=f"C{i // 2}",
                    label=f"{direction} {k}")
        if n:
            for k in (1, 5):
                ax.axhline(k / n, color="0.6", lw=0.8, ls=styles[f"top{k}"])
            if 5 / n <= 1:  # tiny validation sets put the chance level off the axes
                ax.text(0.99, 5 / n, " chance", transform=ax.get_yaxis_transform(),
                        ha="right", va="bottom", color="0.5", fontsize=8)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("validation retrieval accuracy")
        ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return fig


def plot_cross_modal_retrievals(images, spectra, image_embeddings, spectrum_embeddings, *,
                                queries=None, n_queries=3, k=3, wavelength=None, smooth=21,
                                figsize=None):
    """Figure: query images and the spectra retrieved for them by cosine similarity.

    Parameters
    ----------
    images : array-like (N, 3, H, W)
        g, r, z cutouts in nanomaggies (shown with the Legacy Survey colour map).
    spectra : array-like (N, n_pixels)
        Fluxes on the DESI grid, row-aligned with ``images``.
    image_embeddings, spectrum_embeddings : array-like (N, d)
        Embeddings of the same objects by one aligned model.
    queries : sequence of int, optional
        Rows of the query images (default: ``n_queries`` evenly spaced rows).
    n_queries : int, optional
        Number of queries when ``queries`` is not given.
    k : int, optional
        Retrieved spectra per query.
    wavelength : array-like, optional
        Wavelength of the spectra (default: the DESI grid).
    smooth : int, optional
        Running-mean width applied to the spectra for display.
    figsize : tuple, optional
        Figure size.

    Returns
    -------
    `matplotlib.figure.Figure`
        One row per query: its image, then its true spectrum (black) with the
        ``k`` best-matching spectra (coloured, with their similarity); the title
        gives the rank of the true spectrum among all ``N``.

    Examples
    --------
    >>> import numpy as np
    >>> from astroclip.plotting.training import plot_cross_modal_retrievals
    >>> rng = np.random.default_rng(0)
    >>> z = rng.normal(size=(20, 4))
    >>> fig = plot_cross_modal_retrievals(rng.random((20, 3, 16, 16)), rng.random((20, 50)),
    ...                                   z, z, wavelength=np.arange(50.0), k=2)
    >>> len(fig.axes)
    6
    """
    plt = require("matplotlib.pyplot", purpose="plotting")

    from ..inputs.images import color_map

    images = np.asarray(images, dtype=np.float32)
    spectra = np.asarray(spectra, dtype=np.float64)
    zi = np.asarray(image_embeddings, dtype=np.float64)
    zs = np.asarray(spectrum_embeddings, dtype=np.float64)
    n = len(images)
    if not (len(spectra) == len(zi) == len(zs) == n):
        raise InputError(f"images ({len(images)}), spectra ({len(spectra)}) and both embeddings "
                         f"({len(zi)}, {len(zs)}) must be row-aligned with the same length")
    if images.ndim != 4 or images.shape[1] != 3:
        raise InputError(f"images must be (N, 3, H, W) g, r, z cutouts, got {images.shape}")
    if wavelength is None:
        if spectra.shape[1] != grid.N_PIXELS:
            raise InputError(f"spectra have {spectra.shape[1]} pixels, not the DESI grid's "
                             f"{grid.N_PIXELS}; pass their wavelength")
        wavelength = grid.WAVELENGTH
    wavelength = np.asarray(wavelength)
    k = int(min(k, n))
    if queries is None:
        queries = np.linspace(0, n - 1, min(n_queries, n)).round().astype(int)
    queries = [int(q) for q in queries]
    if any(not 0 <= q < n for q in queries):
        raise InputError(f"query rows {queries} must lie in [0, {n})")

    zi = zi / np.maximum(np.linalg.norm(zi, axis=1, keepdims=True), 1e-3)
    zs = zs / np.maximum(np.linalg.norm(zs, axis=1, keepdims=True), 1e-3)
    rgb = color_map(images[queries])
    fig, axes = plt.subplots(len(queries), 2, figsize=figsize or (10, 2.6 * len(queries)),
                             gridspec_kw={"width_ratios": [1, 4]}, squeeze=False)
    for row, q in enumerate(queries):
        sim = zs @ zi[q]
        order = np.argsort(-sim)
        rank = int(np.nonzero(order == q)[0][0]) + 1
        ax = axes[row, 0]
        ax.imshow(np.moveaxis(rgb[row], 0, -1), origin="lower")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"query image #{q}", fontsize=9)
        ax = axes[row, 1]
        ax.plot(wavelength, _smooth(spectra[q], smooth), color="k", lw=1.2,
                label="true spectrum", zorder=3)
        for j, r in enumerate(order[:k]):
            ax.plot(wavelength, _smooth(spectra[r], smooth), color=f"C{j}", lw=0.8, alpha=0.8,
                    label=f"#{r}  cos={sim[r]:.2f}" + ("  (the partner)" if r == q else ""))
        ax.set_title(f"top {k} spectra retrieved from the image; the true spectrum ranks "
                     f"{rank} of {n}", fontsize=9)
        ax.set_ylabel("flux")
        ax.legend(frameon=False, fontsize=7, loc="upper right")
    axes[-1, 1].set_xlabel("wavelength [Å]")
    fig.tight_layout()
    return fig
