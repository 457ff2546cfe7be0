"""Figures of galaxy properties: predicted-vs-true scatter and maps of the embedding space.

`plot_predicted_vs_true` draws panels like the paper's Figures 4 and 5 (k-NN
redshift and stellar mass, in-modality on one row, cross-modality on the next,
R^2 in each panel's corner); `plot_embedding_map` projects embeddings to two
dimensions (PCA by default) and colours them by a property such as redshift or
stellar mass.  Both return a `~matplotlib.figure.Figure`.
"""

import numpy as np
from astropy import units as u
from astropy.table import Table

from .._optional import require
from ..exceptions import InputError

__all__ = ["plot_predicted_vs_true", "plot_embedding_map", "project_embeddings"]

_METHODS = ("k-NN", "MLP")
_ARROW = " \u2192 "


def _values(x, *, name):
    if isinstance(x, u.Quantity):
        x = x.value
    arr = np.asarray(np.ma.getdata(x), dtype=np.float64)
    if arr.ndim != 1:
        raise InputError(f"{name} must be one value per object; got shape {arr.shape}")
    return arr


def _pick(x, name, *, what):
    """Column ``name`` of a table/dict, or ``x`` itself."""
    if isinstance(x, (Table, dict)):
        keys = list(x.keys()) if isinstance(x, dict) else x.colnames
        if name is None:
            if len(keys) != 1:
                raise InputError(f"{what} has several columns {keys}; choose one with name=")
            name = keys[0]
        if name not in keys:
            raise InputError(f"{what} has no column {name!r} (columns: {keys})")
        return x[name]
    return x


def _panel_title(key):
    """Title and in/cross-modal flag of one prediction set."""
    if isinstance(key, tuple):
        if len(key) == 2 and key[0] in _METHODS:
            method, modality = key
            cross = "->" in modality
            return f"{modality.replace('->', _ARROW)} ({method})", cross
        if len(key) == 2:
            query, database = key
            return f"{query}{_ARROW}{database}", query != database
        key = " ".join(str(k) for k in key)
    key = str(key)
    return key.replace("->", _ARROW), "->" in key


def _r2(t, p):
    ss_tot = np.sum((t - t.mean()) ** 2)
    return np.nan if ss_tot == 0 else 1.0 - np.sum((t - p) ** 2) / ss_tot


def plot_predicted_vs_true(y_true, predictions, *, name=None, label=None, kind="auto",
                           limits=None, panel_size=3.2, cmap="viridis", max_points=None,
                           seed=0):
    """Predicted against true values, one panel per method (paper Figures 4 and 5).

    Parameters
    ----------
    y_true : array-like (N,), Quantity, dict or `~astropy.table.Table`
        True values on the test set (a table or dict needs ``name``).
    predictions : array-like (N,) or mapping
        One prediction array, or a mapping from a panel key to predictions (an
        array, or a table / dict holding column ``name``).  Keys may be
        ``(method, modality)`` tuples as returned by
        `~astroclip.evaluation.evaluate_properties` (``("k-NN", "image")``,
        ``("k-NN", "image->spectrum")``), ``(query, neighbours)`` modality pairs
        (``("image", "spectrum")``), or strings (``"image->spectrum"``).
        Panels whose key is cross-modal (``"->"`` or differing pair) go on a
        second row, under the in-modality panels, as in the paper.
    name : str, optional
        Property column to plot when tables or dicts are given.
    label : str, optional
        Axis label of the property (default: ``name``, or "value").
    kind : {"auto", "scatter", "density"}, optional
        Points, or a logarithmic hexagonal density (default: density above
        2,000 points).
    limits : (float, float), optional
        Axis range (default: the 0.5 and 99.5 percentiles of the true values,
        padded by 5 per cent).
    panel_size : float, optional
        Size of one (square) panel, inches.
    cmap : str, optional
        Colour map of the density panels.
    max_points : int, optional
        Plot a random subset of this many points (R^2 always uses all of them).
    seed : int, optional
        Seed of that subset.

    Returns
    -------
    `~matplotlib.figure.Figure`
        Axes carry the panel titles; each panel shows R^2 in its upper-left corner.

    Examples
    --------
    >>> import numpy as np
    >>> from astroclip.plotting.properties import plot_predicted_vs_true
    >>> rng = np.random.default_rng(0)
    >>> z = rng.uniform(0, 0.5, 500)
    >>> fig = plot_predicted_vs_true(z, {"spectrum": z + 0.01 * rng.normal(size=500),
    ...                                  "image->spectrum": z + 0.05 * rng.normal(size=500)},
    ...                              label="redshift")
    >>> len(fig.axes)
    2
    """
    plt = require("matplotlib.pyplot", purpose="plotting")

    if kind not in ("auto", "scatter", "density"):
        raise InputError(f"kind must be 'auto', 'scatter' or 'density'; got {kind!r}")
    truth = _values(_pick(y_true, name, what="y_true"), name="y_true")
    if not isinstance(predictions, dict):
        predictions = {"": predictions}
    if not predictions:
        raise InputError("predictions is empty: give at least one set of predictions")
    panels = []
    for key, pred in predictions.items():
        p = _values(_pick(pred, name, what=f"predictions[{key!r}]"),
                    name=f"predictions[{key!r}]")
        if p.shape != truth.shape:
            raise InputError(f"predictions[{key!r}] has {p.size} values but y_true {truth.size}; "
                             "give one prediction per true value")
        title, cross = _panel_title(key)
        panels.append((title, cross, p))
    finite = np.isfinite(truth)
    if not finite.all():
        raise InputError(f"y_true has {int((~finite).sum())} NaN or infinite values; drop "
                         "those objects first")
    label = label or name or "value"
    rows = [[p for p in panels if not p[1]], [p for p in panels if p[1]]]
    rows = [r for r in rows if r]
    ncols = max(len(r) for r in rows)
    figsize = (panel_size * ncols, panel_size * len(rows) + 0.3)
    fig, axes = plt.subplots(len(rows), ncols, figsize=figsize, squeeze=False,
                             constrained_layout=True)
    if limits is None:
        lo, hi = np.percentile(truth, [0.5, 99.5])
        pad = 0.05 * (hi - lo if hi > lo else 1.0)
        limits = (lo - pad, hi + pad)
    n = truth.size
    if max_points is not None and n > max_points:
        show = np.sort(np.random.default_rng(seed).choice(n, int(max_points), replace=False))
    else:
        show = slice(None)
    if kind == "auto":
        kind = "density" if truth[show].size > 2000 else "scatter"
    both = len(rows) == 2
    for r, row in enumerate(rows):
        for c in range(ncols):
            ax = axes[r, c]
            if c >= len(row):
                ax.set_visible(False)
                continue
            title, cross, p = row[c]
            ok = np.isfinite(p)
            if kind == "density":
                ax.hexbin(truth[show][ok[show]], p[show][ok[show]], gridsize=60, bins="log",
                          mincnt=1, cmap=cmap, extent=(*limits, *limits))
            else:
                ax.scatter(truth[show], p[show], s=4, alpha=0.5, lw=0,
                           color="C1" if cross else "C0", rasterized=True)
            ax.plot(limits, limits, color="k", lw=0.8, ls="--")
            ax.set_xlim(limits)
            ax.set_ylim(limits)
            ax.set_aspect("equal")
            r2 = _r2(truth[ok], p[ok])
            text = f"$R^2$ = {r2:.3f}" if np.isfinite(r2) else "$R^2$ undefined"
            if not ok.all():
                text += f"\n({int((~ok).sum())} not predicted)"
            ax.text(0.04, 0.96, text, transform=ax.transAxes, va="top", ha="left",
                    bbox=dict(boxstyle="round", fc="white", ec="0.7", alpha=0.9))
            if both and c == 0:
                title = f"({'ab'[r]}) {'cross' if r else 'in'}-modality\n{title}"
            ax.set_title(title)
            ax.set_xlabel(f"true {label}")
            if c == 0:
                ax.set_ylabel(f"predicted {label}")
    return fig


def project_embeddings(embeddings, *, method="pca", n_components=2, normalize=True, seed=0):
    """Project embeddings to a few dimensions for plotting.

    Parameters
    ----------
    embeddings : array-like (N, D)
        Embeddings.
    method : {"pca", "tsne", "umap"}, optional
        Principal components (default, fast and deterministic), scikit-learn's
        t-SNE, or UMAP (needs the optional ``umap-learn`` package).
    n_components : int, optional
        Output dimensions (default 2).
    normalize : bool, optional
        L2-normalise the embeddings first (default), so that distances follow
        the cosine similarity of the AstroCLIP space.
    seed : int, optional
        Random state of t-SNE / UMAP.

    Returns
    -------
    `numpy.ndarray` (N, n_components)

    Examples
    --------
    >>> import numpy as np
    >>> from astroclip.plotting.properties import project_embeddings
    >>> project_embeddings(np.random.default_rng(0).normal(size=(50, 8))).shape
    (50, 2)
    """
    from .._arrays import as_embeddings, normalize_rows

    x = as_embeddings(embeddings, name="embeddings").astype(np.float64)
    if normalize:
        x = normalize_rows(x.astype(np.float32), name="embeddings").astype(np.float64)
    if method == "pca":
        PCA = require("sklearn.decomposition", purpose="PCA embedding maps").PCA
        return PCA(n_components=n_components, svd_solver="full").fit_transform(x)
    if method == "tsne":
        TSNE = require("sklearn.manifold", purpose="t-SNE embedding maps").TSNE
        perplexity = min(30.0, max(2.0, (x.shape[0] - 1) / 3))
        return TSNE(n_components=n_components, random_state=seed, init="pca",
                    perplexity=perplexity).fit_transform(x)
    if method == "umap":
        umap = require("umap", purpose="method='umap' (or use method='pca' or 'tsne')")
        return umap.UMAP(n_components=n_components, random_state=seed).fit_transform(x)
    raise InputError(f"unknown projection method {method!r}; choose 'pca', 'tsne' or 'umap'")


def plot_embedding_map(embeddings, color, *, method="pca", label=None, normalize=True,
                       max_points=20000, seed=0, cmap="viridis", point_size=None,
                       panel_size=3.6, vmin=None, vmax=None):
    """2-D map of the embedding space coloured by a property (redshift, mass...).

    Parameters
    ----------
    embeddings : array-like (N, D) or dict of str -> array-like (N, D)
        Embeddings; a dict (e.g. ``{"image": ..., "spectrum": ...}`` from one
        aligned model) is projected jointly, one row of panels per modality,
        so both modalities share the same map.
    color : array-like (N,), dict or `~astropy.table.Table`
        Values to colour by; a dict or table gives one column of panels per
        entry (e.g. ``{"redshift": z, "log M*": m}``).
    method : {"pca", "tsne", "umap"}, optional
        Projection (see `project_embeddings`); PCA by default.
    label : str, optional
        Colour-bar label when ``color`` is a single array.
    normalize : bool, optional
        L2-normalise embeddings before projecting (default).
    max_points : int, optional
        Random subset used for the projection and the plot (default 20,000).
    seed : int, optional
        Seed of the subset and of t-SNE / UMAP.
    cmap, point_size, panel_size, vmin, vmax : optional
        Appearance.

    Returns
    -------
    `~matplotlib.figure.Figure`

    Examples
    --------
    >>> import numpy as np
    >>> from astroclip.plotting.properties import plot_embedding_map
    >>> rng = np.random.default_rng(0)
    >>> z = rng.uniform(0, 0.5, 300)
    >>> emb = np.stack([np.cos(3 * z), np.sin(3 * z), rng.normal(size=300)], axis=1)
    >>> fig = plot_embedding_map(emb, {"redshift": z, "log M*": 10 + z}, method="pca")
    >>> len(fig.axes)  # two panels and two colour bars
    4
    """
    plt = require("matplotlib.pyplot", purpose="plotting")

    emb = embeddings if isinstance(embeddings, dict) else {"": embeddings}
    if not emb:
        raise InputError("embeddings is empty")
    arrays = {}
    for m, e in emb.items():
        arrays[m] = np.asarray(e.value if isinstance(e, u.Quantity) else e)
        if arrays[m].ndim != 2:
            raise InputError(f"embeddings{'[' + repr(m) + ']' if m else ''} must be 2-D "
                             f"(n_objects, dim); got shape {arrays[m].shape}")
    sizes = {a.shape[0] for a in arrays.values()}
    dims = {a.shape[1] for a in arrays.values()}
    if len(dims) != 1:
        raise InputError(f"the modalities have embeddings of different dimensions {sorted(dims)}; "
                         "a joint map needs one shared embedding space")
    if len(sizes) != 1:
        raise InputError(f"the modalities have different numbers of objects {sorted(sizes)}; "
                         "give the same objects, in the same order, for every modality")
    n = sizes.pop()
    if isinstance(color, (Table, dict)):
        keys = list(color.keys()) if isinstance(color, dict) else color.colnames
        colours = {k: _values(color[k], name=f"color[{k!r}]") for k in keys}
    else:
        colours = {label or "value": _values(color, name="color")}
    for k, v in colours.items():
        if v.size != n:
            raise InputError(f"color {k!r} has {v.size} values for {n} embeddings; give one "
                             "value per object")
    if max_points is not None and n > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(n, int(max_points), replace=False))
    else:
        keep = np.arange(n)
    joint = np.concatenate([a[keep] for a in arrays.values()], axis=0)
    xy = project_embeddings(joint, method=method, normalize=normalize, seed=seed)
    xy = {m: xy[i * keep.size:(i + 1) * keep.size] for i, m in enumerate(arrays)}
    nrows, ncols = len(arrays), len(colours)
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel_size * ncols * 1.15,
                                                    panel_size * nrows),
                             squeeze=False, constrained_layout=True)
    size = point_size if point_size is not None else float(np.clip(3000 / keep.size, 1.0, 12))
    axis = {"pca": "PC", "tsne": "t-SNE ", "umap": "UMAP "}[method]
    order = np.random.default_rng(seed + 1).permutation(keep.size)  # no colour on top
    for r, m in enumerate(arrays):
        for c, (name, values) in enumerate(colours.items()):
            ax = axes[r, c]
            v = values[keep][order]
            finite = np.isfinite(v)
            pts = xy[m][order]
            if (~finite).any():
                ax.scatter(pts[~finite, 0], pts[~finite, 1], s=size, color="0.8", lw=0,
                           rasterized=True, label="no value")
            lo = np.nanpercentile(v, 1) if vmin is None else vmin
            hi = np.nanpercentile(v, 99) if vmax is None else vmax
            sc = ax.scatter(pts[finite, 0], pts[finite, 1], c=v[finite], s=size, cmap=cmap,
                            vmin=lo, vmax=hi, lw=0, rasterized=True)
            fig.colorbar(sc, ax=ax, label=name)
            ax.set_xlabel(f"{axis}1")
            ax.set_ylabel(f"{axis}2")
            title = f"{m} embeddings" if m else "embeddings"
            ax.set_title(title)
    return fig
