"""Scores of the evaluation: R^2 of property estimates and cross-modal retrieval accuracy.

These are plain functions of arrays (numpy or, for `retrieval_accuracy`, torch
tensors on any device), without optional dependencies, so that the training
stages score their validation sets with the same `retrieval_accuracy` as the
evaluation of a finished model.
"""

import numpy as np
from astropy.table import Table

from .._arrays import as_embeddings, normalize_rows, rows_text
from ..exceptions import InputError
from ._targets import Targets

__all__ = ["r2_score", "retrieval_accuracy", "retrieval_scores"]


def r2_score(y_true, y_pred):
    """Coefficient of determination R^2 = 1 - SS_res / SS_tot, per property.

    Parameters
    ----------
    y_true, y_pred : array-like (N,) or (N, T), dict or `~astropy.table.Table`
        True and predicted values, in the same form.

    Returns
    -------
    float, `numpy.ndarray` (T,) or dict
        One R^2 per property (a dict keyed by column name for tables and dicts).

    Raises
    ------
    InputError
        Different shapes or columns, NaN values, or constant true values (R^2
        is undefined).

    Examples
    --------
    >>> from astroclip.evaluation import r2_score
    >>> round(r2_score([1.0, 2.0, 3.0, 4.0], [1.1, 1.9, 3.2, 3.9]), 4)
    0.986
    """
    t = Targets(y_true, name="y_true")
    p = Targets(y_pred, name="y_pred")
    if t.form == "table":
        missing = [c for c in t.names if c not in p.names]
        if missing:
            raise InputError(f"y_pred lacks the columns {missing} of y_true")
        pv = p.values[:, [p.names.index(c) for c in t.names]]
    else:
        pv = p.values
    if pv.shape != t.values.shape:
        raise InputError(f"y_true has shape {t.values.shape} but y_pred {pv.shape}; give one "
                         "prediction per true value")
    ss_res = ((t.values - pv) ** 2).sum(axis=0)
    ss_tot = ((t.values - t.values.mean(axis=0)) ** 2).sum(axis=0)
    if np.any(ss_tot == 0):
        bad = [c for c, s in zip(t.names, ss_tot) if s == 0]
        raise InputError(f"R^2 is undefined for constant true values ({bad}); evaluate on a "
                         "set where the property varies")
    r2 = 1.0 - ss_res / ss_tot
    if t.form == "table":
        return {c: float(v) for c, v in zip(t.names, r2)}
    return float(r2[0]) if t.form == "1d" else r2


def _is_tensor(x):
    import sys

    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _tensor_rows(x, *, name):
    """A (N, D) float32 tensor with the numpy path's checks (2-D, finite)."""
    import torch

    if x.ndim != 2 or x.shape[1] == 0:
        raise InputError(f"{name} must be a 2-D array of shape (n_objects, dim); "
                         f"got shape {tuple(x.shape)}")
    x = x.detach().float()
    bad = ~torch.isfinite(x).all(dim=1)
    if bool(bad.any()):
        rows = torch.nonzero(bad).flatten().cpu().numpy()
        raise InputError(f"{name} has {rows.size} row(s) with NaN or infinite values "
                         f"(rows {rows_text(rows)}); drop or recompute these rows first")
    return x


def _unit_rows(x, *, name):
    """L2-normalised rows of a tensor; an all-zero row is an error (as `normalize_rows`)."""
    import torch

    norms = torch.linalg.vector_norm(x, dim=1)
    zero = norms == 0
    if bool(zero.any()):
        rows = torch.nonzero(zero).flatten().cpu().numpy()
        raise InputError(f"{name} has {rows.size} all-zero row(s) (rows {rows_text(rows)}); "
                         "the cosine similarity of a zero vector is undefined: drop them")
    return x / norms[:, None]


def _ranks(q, db, batch_size):
    """Rank (1 = nearest) of each query's own counterpart among all of ``db``."""
    n = db.shape[0]
    if _is_tensor(q):
        import torch

        out = []
        with torch.no_grad():
            for start in range(0, n, batch_size):
                sims = q[start:start + batch_size] @ db.T
                rows = torch.arange(start, start + sims.shape[0], device=sims.device)
                own = sims.gather(1, rows[:, None])
                out.append((sims > own).sum(dim=1) + 1)
        return torch.cat(out).cpu().numpy().astype(np.int64)
    ranks = np.empty(n, dtype=np.int64)
    for start in range(0, n, batch_size):
        sims = q[start:start + batch_size] @ db.T
        rows = np.arange(start, start + sims.shape[0])
        own = sims[np.arange(sims.shape[0]), rows]
        ranks[start:start + sims.shape[0]] = (sims > own[:, None]).sum(axis=1) + 1
    return ranks


def retrieval_accuracy(queries, database, *, k=(1, 5, 10), batch_size=4096):
    """How often a query's own counterpart is among its k nearest (paired data).

    Row ``i`` of ``queries`` and row ``i`` of ``database`` are the same object
    seen in two modalities (e.g. the image and the spectrum embeddings of a
    held-out split).  For each query the rank of its counterpart among all
    database entries is computed by cosine similarity (the paper's equation 2;
    1 = nearest, ties counted in the query's favour); the top-k accuracy is the
    fraction of queries whose counterpart has rank <= k, to be compared with
    the chance level k / N.

    Parameters
    ----------
    queries, database : array-like or `torch.Tensor` (N, D)
        Paired embeddings, same objects in the same order.  Tensors are scored
        with torch on their device (e.g. a validation set on the GPU).
    k : int or sequence of int, optional
        Cut-offs of the top-k accuracies (positive; a ``k >= N`` scores 1, at
        chance level 1).
    batch_size : int, optional
        Queries per block of the exact similarity computation (cost ``2 N^2 D``
        operations, memory ``batch_size x N``: meant for evaluation splits, up
        to some 10^5 objects).

    Returns
    -------
    `~astropy.table.Table`
        Columns ``k``, ``accuracy`` and ``chance``; ``meta`` holds
        ``n_objects``, ``median_rank``, ``mean_reciprocal_rank`` and the
        per-query ranks (``meta["ranks"]``, int64 numpy).

    Raises
    ------
    InputError
        Unpaired inputs, different dimensions, NaN rows or all-zero rows (named).

    See Also
    --------
    retrieval_scores : both directions as a flat dict, for logs and summaries.

    Examples
    --------
    >>> import numpy as np
    >>> from astroclip.evaluation import retrieval_accuracy
    >>> rng = np.random.default_rng(0)
    >>> spectra = rng.normal(size=(200, 16))
    >>> images = spectra + 0.3 * rng.normal(size=spectra.shape)
    >>> t = retrieval_accuracy(images, spectra, k=(1, 10))
    >>> t["k"].tolist(), bool(t["accuracy"][0] > 0.9), float(t["chance"][1])
    ([1, 10], True, 0.05)
    """
    if _is_tensor(queries) or _is_tensor(database):
        if not (_is_tensor(queries) and _is_tensor(database)):
            raise InputError("give queries and database both as torch tensors or both as "
                             "arrays")
        q = _tensor_rows(queries, name="queries")
        db = _tensor_rows(database, name="database").to(q.device)
    else:
        q = as_embeddings(queries, name="queries")
        db = as_embeddings(database, name="database")
    if q.shape[1] != db.shape[1]:
        raise InputError(f"the queries have dimension {q.shape[1]} but the database "
                         f"{db.shape[1]}; embed both with the same model")
    if q.shape[0] != db.shape[0]:
        raise InputError(f"queries ({q.shape[0]}) and database ({db.shape[0]}) must hold the "
                         "same objects in the same order (paired embeddings)")
    if _is_tensor(q):
        q, db = _unit_rows(q, name="queries"), _unit_rows(db, name="database")
    else:
        q = normalize_rows(q, name="queries", fix="drop them")
        db = normalize_rows(db, name="database", fix="drop them")
    n = int(db.shape[0])
    ks = [int(v) for v in np.atleast_1d(k)]
    if any(v < 1 for v in ks):
        raise InputError(f"every k must be a positive integer; got {ks}")
    if int(batch_size) < 1:
        raise InputError(f"batch_size must be a positive integer; got {batch_size}")
    ranks = _ranks(q, db, int(batch_size))
    table = Table({"k": np.array(ks, dtype=np.int64),
                   "accuracy": np.array([np.mean(ranks <= v) for v in ks]),
                   "chance": np.array([min(1.0, v / n) for v in ks])})
    table.meta.update({"n_objects": n, "median_rank": float(np.median(ranks)),
                       "mean_reciprocal_rank": float(np.mean(1.0 / ranks)), "ranks": ranks})
    return table


def retrieval_scores(image_embeddings, spectrum_embeddings, *, k=(1, 5), batch_size=4096):
    """Top-k retrieval accuracy in both directions, as a flat dict.

    The image -> spectrum and spectrum -> image accuracies of
    `retrieval_accuracy`, keyed ``"image_to_spectrum_top{k}"`` and
    ``"spectrum_to_image_top{k}"``: what the alignment stage logs on its
    validation set and the quickstart reports.

    Parameters
    ----------
    image_embeddings, spectrum_embeddings : array-like or `torch.Tensor` (N, D)
        Paired embeddings.
    k, batch_size
        As in `retrieval_accuracy`.

    Returns
    -------
    dict of str -> float

    Examples
    --------
    >>> import torch
    >>> from astroclip.evaluation import retrieval_scores
    >>> z = torch.randn(10, 4)
    >>> retrieval_scores(z, z + 1e-4, k=(1,))
    {'image_to_spectrum_top1': 1.0, 'spectrum_to_image_top1': 1.0}
    """
    out = {}
    for name, (q, d) in (("image_to_spectrum", (image_embeddings, spectrum_embeddings)),
                         ("spectrum_to_image", (spectrum_embeddings, image_embeddings))):
        table = retrieval_accuracy(q, d, k=k, batch_size=batch_size)
        out.update({f"{name}_top{int(v)}": float(a) for v, a in zip(table["k"], table["accuracy"])})
    return out
