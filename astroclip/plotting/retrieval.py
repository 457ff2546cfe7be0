"""Retrieval panels like the paper's Figures 2, 3 and 6.

A query galaxy (image or spectrum) with its top-k neighbours found in both
modalities of the shared embedding space: thumbnails of the neighbours' images
(Legacy Survey colour mapping) and their spectra overplotted on the query's.
"""

import numpy as np

from .._optional import require
from ..exceptions import InputError
from ..inputs import grid

__all__ = ["retrieval_neighbours", "plot_retrieval"]


def retrieval_neighbours(query, *, image_embeddings, spectrum_embeddings,
                         query_modality="image", k=4, exclude_self=True):
    """Top-k neighbours of one stored galaxy in both modalities.

    Parameters
    ----------
    query : int
        Row of the query galaxy in the embedding arrays.
    image_embeddings, spectrum_embeddings : array-like (N, D)
        Row-aligned embeddings of the same galaxies from one aligned model.
    query_modality : {"image", "spectrum"}, optional
        Which embedding of the query is used.
    k : int, optional
        Neighbours per modality.
    exclude_self : bool, optional
        Leave the query out of the in-modal neighbours (it is always its own
        nearest neighbour there).  Cross-modal results keep it: finding the
        query's own counterpart is a success.

    Returns
    -------
    dict
        ``{"<query>-><modality>": (rows, cosine similarities)}`` for the two
        searched modalities, each of length ``k``.
    """
    from ..search import SimilarityIndex

    if query_modality not in ("image", "spectrum"):
        raise InputError(f"query_modality must be 'image' or 'spectrum', got {query_modality!r}")
    emb = {"image": np.asarray(image_embeddings, np.float32),
           "spectrum": np.asarray(spectrum_embeddings, np.float32)}
    if emb["image"].shape != emb["spectrum"].shape:
        raise InputError(f"image embeddings {emb['image'].shape} and spectrum embeddings "
                         f"{emb['spectrum'].shape} must be row-aligned with the same shape")
    n = len(emb["image"])
    if not 0 <= int(query) < n:
        raise InputError(f"query row {query} is outside the {n} embeddings")
    index = SimilarityIndex(emb["image"], modality="image", progress=False)
    index.add(emb["spectrum"], modality="spectrum")
    q = emb[query_modality][int(query)][None]
    out = {}
    for target in ("image", "spectrum"):
        skip = exclude_self and target == query_modality
        scores, rows = index.search_arrays(q, k=k + int(skip), modality=target, progress=False)
        rows, scores = rows[0], scores[0]
        if skip:
            keep = rows != int(query)
            rows, scores = rows[keep][:k], scores[keep][:k]
        out[f"{query_modality}->{target}"] = (rows, scores)
    return out


def _smooth(y, width):
    if width <= 1:
        return y
    kernel = np.ones(int(width)) / int(width)
    return np.convolve(y, kernel, mode="same")


def plot_retrieval(query, *, images, spectra, image_embeddings, spectrum_embeddings,
                   query_modality="image", k=4, redshifts=None, smooth=15, wavelength=None,
                   figsize=None):
    """Figure: a query galaxy and its nearest neighbours in both modalities.

    One row per searched modality (in-modal and cross-modal).  Each row shows
    the query's colour image, the ``k`` neighbours' images with their cosine
    similarity (and redshift when given), and a panel with the query's
    spectrum (black) and the neighbours' spectra overplotted.

    Parameters
    ----------
    query : int
        Row of the query galaxy.
    images : array (N, 3, H, W)
        g, r, z images in nanomaggies, row-aligned with the embeddings.
    spectra : array (N, 7781)
        Fluxes on the DESI grid.
    image_embeddings, spectrum_embeddings : array (N, D)
        Embeddings from one aligned model.
    query_modality : {"image", "spectrum"}, optional
        Which embedding of the query is searched with.
    k : int, optional
        Neighbours shown per row.
    redshifts : array (N,), optional
        Printed under the thumbnails.
    smooth : int, optional
        Box-car width (pixels) of the plotted spectra.
    wavelength : array (7781,), optional
        Spectral axis; default the DESI grid.

    Returns
    -------
    `matplotlib.figure.Figure`

    Examples
    --------
    >>> import numpy as np
    >>> from astroclip.plotting.retrieval import plot_retrieval
    >>> rng = np.random.default_rng(0)
    >>> emb = rng.normal(size=(20, 8))
    >>> fig = plot_retrieval(0, images=rng.random((20, 3, 32, 32)) * 0.1,
    ...                      spectra=rng.random((20, 7781)), image_embeddings=emb,
    ...                      spectrum_embeddings=emb + 0.1 * rng.normal(size=emb.shape), k=3)
    >>> len(fig.axes)
    10
    """
    plt = require("matplotlib.pyplot", purpose="plotting")

    from ..inputs.images import color_map

    images = np.asarray(images, np.float32)
    spectra = np.asarray(spectra, np.float32)
    if images.ndim != 4 or images.shape[1] != 3:
        raise InputError(f"images must have shape (N, 3, H, W) (g, r, z), got {images.shape}")
    if len(images) != len(spectra) or len(images) != len(image_embeddings):
        raise InputError("images, spectra and embeddings must be row-aligned (same length)")
    wave = grid.WAVELENGTH if wavelength is None else np.asarray(wavelength)
    hits = retrieval_neighbours(query, image_embeddings=image_embeddings,
                                spectrum_embeddings=spectrum_embeddings,
                                query_modality=query_modality, k=k)
    rows = len(hits)
    fig = plt.figure(figsize=figsize or (2.0 * (k + 1) + 6, 2.3 * rows), layout="constrained")
    grid_spec = fig.add_gridspec(rows, k + 4)
    rgb = color_map(images[[query] + [int(r) for h in hits.values() for r in h[0]]])
    rgb = np.clip(np.moveaxis(rgb, 1, -1), 0, 1)
    colours = plt.cm.viridis(np.linspace(0.1, 0.9, k))
    count = 1
    for r, (label, (idx, scores)) in enumerate(hits.items()):
        ax = fig.add_subplot(grid_spec[r, 0])
        ax.imshow(rgb[0], origin="lower")
        ax.set_title("query", fontsize=9)
        ax.set_ylabel(label.replace("->", " → "), fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        for j, (row, score) in enumerate(zip(idx, scores)):
            ax = fig.add_subplot(grid_spec[r, j + 1])
            ax.imshow(rgb[count], origin="lower")
            count += 1
            text = f"cos {score:.2f}"
            if redshifts is not None:
                text += f"\nz = {float(redshifts[row]):.3f}"
            ax.set_title(text, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
            for side in ax.spines.values():
                side.set_color(colours[j])
                side.set_linewidth(2.5 if row == query else 1.5)
        ax = fig.add_subplot(grid_spec[r, k + 1:])
        for j, row in enumerate(idx):
            ax.plot(wave, _smooth(spectra[row], smooth), color=colours[j], lw=0.7, alpha=0.8)
        ax.plot(wave, _smooth(spectra[query], smooth), color="k", lw=0.9, label="query")
        ax.set_xlabel("wavelength [Å]")
        ax.set_ylabel(r"flux [$10^{-17}$ erg/s/cm$^2$/Å]")
        ax.legend(loc="upper right", fontsize=8)
    title = f"galaxy {query}: nearest neighbours of its {query_modality} embedding"
    if redshifts is not None:
        title += f" (z = {float(redshifts[query]):.3f})"
    fig.suptitle(title)
    return fig
